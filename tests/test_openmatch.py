"""OpenMatch: its one-vs-all losses by hand, and a CPU run with inlier selection and resume."""
import math
import os
import random

import numpy as np
import pytest
import torch

from conftest import read_log, run_train, tiny_config

from rsmatch_usb.algorithms.utils import read_image
from rsmatch_usb.algorithms.openmatch import OpenMatch
from rsmatch_usb.algorithms.openmatch.openmatch import TwoWeakViews
from rsmatch_usb.algorithms.openmatch.utils import (ova_entropy_loss, ova_inlier_probs, ova_loss,
                                                    ova_outlier_score, socr_loss)
from rsmatch_usb.heads import unwrap

# The RS-SSL setting: as many synthetic images as real ones in the unlabeled set.
DATA = dict(synthetic_source="bundled", synthetic_ratio=1.0)

L3 = math.log(3.0)  # an inlier-minus-outlier logit of log 3 gives p(inlier) = 0.75


def ova_logits(inlier_minus_outlier):
    """OVA logits (B, 2C) with outlier logits 0 and the given inlier logits."""
    inlier = torch.tensor(inlier_minus_outlier, dtype=torch.float64)
    return torch.cat([torch.zeros_like(inlier), inlier], dim=1)


def test_ova_probabilities_follow_the_layout():
    probs = ova_inlier_probs(ova_logits([[L3, 0.0, -L3]]))
    assert torch.allclose(probs, torch.tensor([[0.75, 0.5, 0.25]], dtype=torch.float64))


def test_ova_loss_uses_own_class_and_hardest_negative():
    # Sample 0 (class 0): p_in = .75/.5/.25 -> -log .75 and, of the negatives, the
    # hardest is class 1 (p_out .5, not class 2's .75). Sample 1 (class 2):
    # p_in = .25/.75/.5 -> -log .5 and the hardest negative is class 1 (p_out .25).
    logits = ova_logits([[L3, 0.0, -L3], [-L3, L3, 0.0]])
    expected = ((-math.log(0.75) - math.log(0.5)) + (-math.log(0.5) - math.log(0.25))) / 2
    assert math.isclose(ova_loss(logits, torch.tensor([0, 2])).item(), expected, rel_tol=1e-9)


def test_ova_entropy_is_mean_binary_entropy():
    h75 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (math.log(2) + h75) / 2
    assert math.isclose(ova_entropy_loss(ova_logits([[0.0, L3]])).item(), expected, rel_tol=1e-9)


def test_socr_is_squared_difference_of_both_probabilities_summed_over_classes():
    # Sample 0: class 0 goes .75 -> .25 (inlier and outlier both move by .5:
    # .25 + .25), class 1 stays at .5. Sample 1: identical views. Mean: .25.
    view1 = ova_logits([[L3, 0.0], [L3, -L3]]).requires_grad_()
    view2 = ova_logits([[-L3, 0.0], [L3, -L3]]).requires_grad_()
    loss = socr_loss(view1, view2)
    assert math.isclose(loss.item(), 0.25, rel_tol=1e-9)
    loss.backward()
    # Soft consistency: no stop-gradient, both views are pulled together.
    assert view1.grad.abs().sum() > 0 and view2.grad.abs().sum() > 0


def test_outlier_score_reads_the_predicted_class():
    closed_logits = torch.tensor([[0.0, 5.0, 1.0]])
    score = ova_outlier_score(closed_logits, ova_logits([[L3, -L3, 0.0]]))
    assert torch.allclose(score, torch.tensor([0.75], dtype=torch.float64))


def test_two_weak_views_decode_each_image_once_and_draw_as_before():
    from data_tools.imageset import ImageSet
    from data_tools.usb import RSSLDataset, build_transforms

    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    images = ImageSet(pixels, np.arange(4) % 2, ["a", "b"], np.array([0, 1, 0, 1], dtype=bool))
    weak, strong, _ = build_transforms(16, 0.875, (0.5,) * 3, (0.5,) * 3)
    dataset = RSSLDataset("openmatch", images, 2, weak, True, strong)
    decodes = []
    load = images.load
    images.load = lambda i: (decodes.append(i), load(i))[1]

    def seeded(fn):  # the RNGs USB's transforms draw from (RandAugment's cutout uses numpy's)
        random.seed(5)
        np.random.seed(5)
        torch.manual_seed(5)
        return fn()

    item = seeded(lambda: TwoWeakViews(dataset)[3])
    assert decodes == [3]
    # The same draws as reading the image twice (the former views): dataset item first, then a weak view.
    expected = seeded(lambda: dict(dataset[3], x_ulb_w_2=dataset.transform(read_image(dataset, 3))))
    assert item.keys() == expected.keys() and item["idx_ulb"] == 3 and item["is_synthetic_ulb"]
    for key in ("x_ulb_w", "x_ulb_s", "x_ulb_w_2"):
        assert torch.equal(item[key], expected[key]), key
    assert not torch.equal(item["x_ulb_w"], item["x_ulb_w_2"])  # two independent weak draws
    assert "__sample__" not in vars(dataset)  # the wrapped dataset is left as it was


@pytest.mark.slow
def test_openmatch_trains_selects_inliers_and_resumes_exactly(tmp_path, monkeypatch):
    # FixMatch starts at iteration 1, after one selection over the whole unlabeled set.
    cfg = tiny_config(tmp_path, name="openmatch", algorithm="openmatch", num_train_iter=3, num_eval_iter=3,
                      start_fix=1, select_interval=100, **DATA)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "unlabeled samples selected as inliers" in log
    assert "train/socr_loss" in log and "eval/top-1-acc" in log
    assert "eval/synthetic_auroc" in log and "synthetic: " in log  # share of synthetic among the selected

    path = os.path.join(run_dir, "latest_model.pth")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["it"] == 3 and ckpt["inlier_mask"].dtype == torch.bool
    # A selection that a fresh run could not produce by chance, to see it restored.
    ckpt["inlier_mask"] = torch.arange(len(ckpt["inlier_mask"])) % 3 == 0
    torch.save(ckpt, path)

    restored = {}
    load_model = OpenMatch.load_model

    def spy(self, load_path):
        checkpoint = load_model(self, load_path)
        restored["heads"] = {k: v.clone() for k, v in unwrap(self.extra_heads).state_dict().items()}
        restored["mask"] = self.inlier_mask.clone()
        return checkpoint

    monkeypatch.setattr(OpenMatch, "load_model", spy)
    code, _ = run_train(tmp_path, dict(cfg, num_train_iter=4, num_eval_iter=4, resume=True, load_path=path))
    assert code == 0
    assert "at iteration 3" in read_log(run_dir)
    assert torch.equal(restored["mask"], ckpt["inlier_mask"])
    assert restored["heads"].keys() == ckpt["extra_heads"].keys()
    assert all(torch.equal(restored["heads"][k], v) for k, v in ckpt["extra_heads"].items())
    assert torch.load(path, map_location="cpu", weights_only=True)["it"] == 4
