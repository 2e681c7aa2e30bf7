"""rsmatch-train: resume, distributed CPU training, and bad input."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, read_log, run_train, tiny_config, write_config
from rsmatch_usb.fingerprints import logged_fingerprints


def _checkpoint(run_dir, name="latest_model.pth"):
    return torch.load(os.path.join(run_dir, name), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("algorithm", ["fixmatch", "flexmatch"])
def test_resume_continues_from_saved_iteration(tmp_path, algorithm):
    # FlexMatch's load_model calls .cuda() on its masking state in semilearn 0.3.2.
    cfg = tiny_config(tmp_path, name=algorithm, algorithm=algorithm, num_train_iter=3, num_eval_iter=3)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    assert _checkpoint(run_dir)["it"] == 3

    resumed = dict(cfg, num_train_iter=6, resume=True, load_path=os.path.join(run_dir, "latest_model.pth"))
    code, _ = run_train(tmp_path, resumed)
    assert code == 0
    log = read_log(run_dir)
    assert "at iteration 3" in log
    logged_iterations = [int(m) for m in re.findall(r"^\[.*\] (\d+) iteration", log, flags=re.M)]
    assert logged_iterations[-3:] == [4, 5, 6]
    assert _checkpoint(run_dir)["it"] == 6


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    cfg = tiny_config(tmp_path, resume=True, load_path=str(tmp_path / "missing.pth"))
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    assert "does not exist; training from scratch" in read_log(run_dir)
    assert _checkpoint(run_dir)["it"] == 2


def test_corrupt_checkpoint_is_an_error(tmp_path, capsys):
    bad = tmp_path / "latest_model.pth"
    bad.write_bytes(b"not a checkpoint")
    cfg = tiny_config(tmp_path, resume=True, load_path=str(bad))
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot use checkpoint" in err[0] and "unreadable" in err[0]
    assert not os.path.exists(run_dir)


def test_incompatible_checkpoint_is_an_error(tmp_path, capsys):
    cfg = tiny_config(tmp_path, name="small", net="resnet_micro")
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    other = tiny_config(tmp_path, name="other", net="resnet_tiny", resume=True,
                        load_path=os.path.join(run_dir, "latest_model.pth"))
    code, other_dir = run_train(tmp_path, other)
    assert code == 2
    assert "does not fit this config" in capsys.readouterr().err
    assert not os.path.exists(other_dir)  # checked before the run folder or its log.txt is made


BAD_INPUTS = [
    (dict(algorithm="nomatch"), "unknown algorithm 'nomatch'"),
    (dict(net="resnet_9000"), "unknown net 'resnet_9000'"),
    (dict(dataset="mnist_typo"), "unknown dataset 'mnist_typo'"),
    (dict(device="tpu"), "device"),
    (dict(num_labels=45), "not divisible by num_classes"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append((dict(device="cuda"), "no CUDA GPU"))


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
@pytest.mark.multiprocess
def test_bad_input_is_one_error_line(tmp_path, overrides, message):
    cfg = tiny_config(tmp_path, **overrides)
    path = write_config(tmp_path, cfg)
    proc = subprocess.run([sys.executable, "-m", "rsmatch_usb.train", "--c", path],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  ")]
    assert lines == [lines[0]] and lines[0].startswith("rsmatch-train: error:"), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(cfg["save_dir"], cfg["save_name"]))


def test_missing_config_file(capsys):
    from rsmatch_usb.train import cli

    assert cli(["--c", "/nonexistent/config.yaml"]) == 2
    err = capsys.readouterr().err
    assert "config file /nonexistent/config.yaml does not exist" in err


def test_cli_flag_overrides_config(tmp_path):
    from rsmatch_usb.config import get_config

    path = write_config(tmp_path, tiny_config(tmp_path, algorithm="flexmatch"))
    args = get_config(["--c", path, "--num_train_iter", "7"])
    assert args.num_train_iter == 7          # flag beats the file
    assert args.algorithm == "flexmatch"     # file beats the default
    assert args.thresh_warmup is True        # the algorithm's own get_argument() defaults are there


@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_two_process_gloo_ddp_keeps_ranks_in_sync(tmp_path):
    cfg = tiny_config(tmp_path, name="ddp", world_size=2, multiprocessing_distributed=True,
                      dist_backend="nccl", batch_size=8, num_train_iter=3, num_eval_iter=3)
    path = write_config(tmp_path, cfg)
    proc = subprocess.run([sys.executable, "-m", "rsmatch_usb.train", "--c", path],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One INFO line on rank 0 with every rank's fingerprint (not a WARNING per rank, as USB's train.py).
    line = re.search(r"\[.* (\w+)\] training is FINISHED; parameter fingerprint (.*)", proc.stderr)
    assert line and line.group(1) == "INFO" and line.group(2).endswith("(ranks in sync)"), proc.stderr[-3000:]
    prints = logged_fingerprints(proc.stderr, "training is FINISHED; parameter fingerprint")
    assert set(prints) == {"0", "1"}
    assert prints["0"] == prints["1"]
    run_dir = os.path.join(cfg["save_dir"], cfg["save_name"])
    ckpt = _checkpoint(run_dir)
    assert ckpt["it"] == 3
    assert all(k.startswith("module.") for k in ckpt["model"])  # saved from the DDP wrapper, as USB does
    # Rank 0 alone writes the structured metrics: one record per step, as it alone logs.
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [(r["kind"], r["it"]) for r in records] == [("event", 0), ("log", 1), ("log", 2), ("eval", 3), ("result", 3)]
