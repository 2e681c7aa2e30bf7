"""Shared helpers: tiny configs on the embedded digits and an in-process train command."""
import argparse
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Every USB algorithm name in semilearn 0.3.2's registry ('supervised' is an alias).
USB_ALGORITHMS = ["adamatch", "comatch", "crmatch", "dash", "defixmatch", "fixmatch", "flexmatch", "freematch",
                  "fullysupervised", "meanteacher", "mixmatch", "pimodel", "pseudolabel", "remixmatch",
                  "simmatch", "softmatch", "supervised", "uda", "vat"]


def tiny_config(tmp_path, name="run", **overrides):
    """A config that trains a few iterations of a ~20k-parameter net on digits."""
    cfg = dict(algorithm="fixmatch", net="resnet_micro", dataset="digits", num_classes=10, num_labels=40,
               img_size=16, crop_ratio=0.875, batch_size=8, uratio=2, eval_batch_size=512,
               num_train_iter=2, num_eval_iter=2, num_log_iter=1, epoch=1, ema_m=0.0, lr=0.03,
               save_dir=str(tmp_path / "runs"), save_name=name, num_workers=0, seed=0, device="cpu")
    cfg.update(overrides)
    if cfg["algorithm"] == "dash":
        # Dash first trains on labeled data alone for num_wu_iter (2,048) iterations.
        cfg.setdefault("num_wu_iter", 2)
    return cfg


def write_config(tmp_path, cfg, filename="config.yaml"):
    from ruamel.yaml import YAML

    path = tmp_path / filename
    with open(path, "w") as f:
        YAML(typ="safe", pure=True).dump(cfg, f)
    return str(path)


def run_train(tmp_path, cfg, *extra_argv):
    """Run ``rsmatch-train --c <cfg>`` in this process; returns (exit code, run folder)."""
    from rsmatch_usb.train import cli

    path = write_config(tmp_path, cfg, f"{cfg['save_name']}.yaml")
    code = cli(["--c", path, *extra_argv])
    return code, os.path.join(cfg["save_dir"], cfg["save_name"])


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.txt")) as f:
        return f.read()


@pytest.fixture
def bundled_digits():
    """Path of the synthetic digits shipped with the package (the RS-SSL tests' contamination)."""
    from data_tools import synthetic

    path = synthetic.BUNDLED["digits"]
    assert path.is_file(), f"{path} is missing; regenerate it with python -m data_tools.make_synthetic_digits"
    return path


@pytest.fixture(autouse=True)
def _restore_runtime():
    """Each test starts from unpatched semilearn/torch, as a fresh process would."""
    yield
    from rsmatch_usb import runtime

    runtime.deactivate()


def digits_args(**overrides):
    """The data arguments ``data_tools.usb.build_datasets`` reads, for 40-label digits (no synthetic images)."""
    values = dict(dataset="digits", num_labels=40, num_classes=10, seed=0, img_size=16, crop_ratio=0.875,
                  include_lb_to_ulb=True, ulb_num_labels=None, lb_imb_ratio=1, ulb_imb_ratio=1,
                  synthetic_source="bundled", synthetic_ratio=0.0, synthetic_seed=None, data_dir="./data")
    values.update(overrides)
    return argparse.Namespace(**values)


def build_datasets(args, algorithm="fixmatch"):
    """(labeled, unlabeled, eval) datasets as rsmatch-train builds them, seeded as it seeds."""
    from data_tools import usb

    np.random.seed(args.seed)
    return usb.build_datasets(args, algorithm, args.dataset, args.num_labels, args.num_classes,
                              args.data_dir, args.include_lb_to_ulb)
