"""IOMatch: open-set targets by hand, and a CPU run with resume."""
import math
import os

import torch

from conftest import read_log, run_train, tiny_config

from rsmatch_usb.algorithms.iomatch import IOMatch
from rsmatch_usb.algorithms.iomatch.utils import open_set_targets, soft_ce
from rsmatch_usb.heads import unwrap

# The RS-SSL setting: as many synthetic images as real ones in the unlabeled set.
DATA = dict(synthetic_source="bundled", synthetic_ratio=1.0)


def test_open_set_targets_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]])
    inlier = torch.tensor([[0.8, 0.5, 0.1], [0.0, 1.0, 1.0]])
    q = open_set_targets(probs, inlier)
    # Row 0: .5*.8, .3*.5, .2*.1, and the outlier class .5*.2 + .3*.5 + .2*.9.
    # Row 1: the closed-set class's own binary classifier rejects it: all outlier.
    expected = torch.tensor([[0.40, 0.15, 0.02, 0.43], [0.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(q, expected)
    assert torch.allclose(q.sum(dim=1), torch.ones(2))


def test_soft_cross_entropy_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    targets = torch.tensor([[0.5, 0.5, 0.0]])
    expected = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))
    assert math.isclose(soft_ce(logits, targets).item(), expected, rel_tol=1e-6)


def test_iomatch_trains_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, name="iomatch", algorithm="iomatch", num_train_iter=2, num_eval_iter=2, **DATA)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "train/open_loss" in log and "eval/top-1-acc" in log
    assert "eval/synthetic_auroc" in log

    path = os.path.join(run_dir, "latest_model.pth")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["it"] == 2
    heads = {"heads.open_set.proj.0.weight", "heads.open_set.mb.weight", "heads.open_set.open.bias"}
    assert heads <= set(ckpt["extra_heads"])

    restored = {}
    load_model = IOMatch.load_model

    def spy(self, load_path):
        checkpoint = load_model(self, load_path)
        restored["heads"] = {k: v.clone() for k, v in unwrap(self.extra_heads).state_dict().items()}
        return checkpoint

    monkeypatch.setattr(IOMatch, "load_model", spy)
    code, _ = run_train(tmp_path, dict(cfg, num_train_iter=3, num_eval_iter=3, resume=True, load_path=path))
    assert code == 0
    assert "at iteration 2" in read_log(run_dir)
    assert restored["heads"].keys() == ckpt["extra_heads"].keys()
    assert all(torch.equal(restored["heads"][k], v) for k, v in ckpt["extra_heads"].items())
