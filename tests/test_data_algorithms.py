"""Every USB algorithm trains, unchanged, on digits contaminated at alpha = 1 with the bundled set."""
import pytest

from conftest import USB_ALGORITHMS, read_log, run_train, tiny_config


@pytest.mark.parametrize("algorithm", USB_ALGORITHMS)
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
