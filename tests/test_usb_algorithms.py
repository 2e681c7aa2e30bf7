"""Every USB algorithm trains, unchanged, on CPU through rsmatch-train on digits contaminated at alpha = 1."""
import os

import pytest
import torch

from conftest import USB_ALGORITHMS, read_log, run_train, tiny_config

# FixMatch stays in the quick tier; the other eighteen runs are the slow tier's.
ALGORITHM_PARAMS = [a if a == "fixmatch" else pytest.param(a, marks=pytest.mark.slow) for a in USB_ALGORITHMS]


@pytest.mark.parametrize("algorithm", ALGORITHM_PARAMS)
def test_usb_algorithm_trains_on_contaminated_digits(tmp_path, bundled_digits, algorithm):
    cfg = tiny_config(tmp_path, name=algorithm, algorithm=algorithm, synthetic_source="bundled",
                      synthetic_ratio=1.0)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    # 1347 real unlabeled digits (the labeled ones included, USB's default) + as many synthetic.
    labeled = 1347 if algorithm == "fullysupervised" else 40
    assert f"unlabeled data number: 2694, labeled data number {labeled}" in log
    assert "2 iteration, USE_EMA" in log and "BEST_EVAL_ACC" in log
    assert "eval/top-1-acc" in log
    ckpt = torch.load(os.path.join(run_dir, "latest_model.pth"), map_location="cpu", weights_only=True)
    assert ckpt["it"] >= 2  # USB's after-run save records it + 1
    torch.load(os.path.join(run_dir, "model_best.pth"), map_location="cpu", weights_only=True)
