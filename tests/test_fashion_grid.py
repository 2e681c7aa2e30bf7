"""Every algorithm of the fashion grid trains 2 iterations on contaminated Fashion-MNIST, from its grid config.

Each run is the grid's own config (alpha 1, seed 0) with a tiny net, image
size, batch and unlabeled set; the synthetic sources are the bundled fashion sets when present,
else three small .npz sets written here. Needs the real Fashion-MNIST files
(CI installs the Debian package ``dataset-fashion-mnist``).
"""
import os

import numpy as np
import pytest

from benchmark_configs import generate
from conftest import read_log, run_train
from data_tools import synthetic

AUROC_KEY = {"rsmatch": "eval/detector_auroc", "rsmatch_filter": "eval/detector_auroc",
             "openmatch": "eval/synthetic_auroc", "iomatch": "eval/synthetic_auroc"}


@pytest.fixture(scope="module")
def fashion_sources(tmp_path_factory):
    """The grid's source list if the bundled fashion sets exist, else three small look-alike .npz files."""
    grid = [s for s in generate.FASHION_SOURCES]
    if all((synthetic.BUNDLED_DIR / f"{s.split(':', 1)[1]}.npz").is_file() for s in grid):
        return grid, [s.split(":", 1)[1] for s in grid]
    root = tmp_path_factory.mktemp("fashion_sources")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("ddim", "fewstep", "cgan"):
        images = rng.integers(0, 256, size=(10 * 12, 28, 28), dtype=np.uint8)
        np.savez_compressed(root / f"{name}.npz", images=images, labels=np.repeat(np.arange(10), 12))
        paths.append(str(root / f"{name}.npz"))
    return paths, ["ddim", "fewstep", "cgan"]


# Each run evaluates the 10,000 test images (over a minute on a busy 2-core machine): RSMatch, the
# plugin's own algorithm, stays in the quick tier; the other algorithms are slow (CI runs them all). The
# oracle rows are RSMatch with one key, whose routing tests/test_rsmatch.py checks.
LABEL_PARAMS = [label if label == "rsmatch" else pytest.param(label, marks=pytest.mark.slow)
                for label in generate.FASHION_LABELS if not label.endswith("_oracle")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("label", LABEL_PARAMS)
def test_grid_algorithm_trains_on_contaminated_fashion(tmp_path, fashion_sources, label):
    sources, names = fashion_sources
    spec = next(s for s in generate.family_specs("fashion") if s.label == label and s.alpha == 1.0 and s.seed == 0)
    cfg = dict(spec.config)
    # The grid's 16x16 images; a micro net and 2 iterations keep each algorithm's run short.
    cfg.update(net="resnet_micro", img_size=16, num_train_iter=2, num_eval_iter=2, num_log_iter=1, batch_size=4,
               uratio=min(cfg["uratio"], 2), ulb_num_labels=100, eval_batch_size=1000, save_dir=str(tmp_path / "runs"),
               resume=False, load_path=None, device="cpu", synthetic_source=sources)
    if label == "openmatch":
        cfg.update(start_fix=0, select_interval=1)  # reach the inlier selection within 2 iterations
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "Model result - eval/best_acc" in log and "2 iteration, USE_EMA" in log
    assert "ulb_dest_len=280" in log  # 140 real unlabeled (100 + the 40 labeled) and as many synthetic
    if label in AUROC_KEY:
        for name in names:
            assert f"{AUROC_KEY[label]}/{name}: " in log
