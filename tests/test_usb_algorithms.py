"""Every USB algorithm trains and evaluates on CPU through rsmatch-train."""
import os

import pytest
import torch

from conftest import USB_ALGORITHMS, read_log, run_train, tiny_config


@pytest.mark.parametrize("algorithm", USB_ALGORITHMS)
def test_usb_algorithm_trains_on_cpu(tmp_path, algorithm):
    cfg = tiny_config(tmp_path, name=algorithm, algorithm=algorithm)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "2 iteration, USE_EMA" in log and "BEST_EVAL_ACC" in log
    assert "eval/top-1-acc" in log
    ckpt = torch.load(os.path.join(run_dir, "latest_model.pth"), map_location="cpu", weights_only=False)
    assert ckpt["it"] >= 2  # USB's after-run save records it + 1
    assert os.path.exists(os.path.join(run_dir, "model_best.pth"))
