"""rsmatch-usb-train: a stand-in for USB's train.py (tests/stand_in_train.py) run with the plugin installed."""
import configparser
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_config, write_config
from usb_trees import usb_tree

from data_tools import run_metrics
from rsmatch_usb import usb_train

STAND_IN = Path(REPO, "tests", "stand_in_train.py")


def _script(folder):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(STAND_IN, folder / "train.py")
    return folder / "train.py"


def _rsmatch_config(tmp_path, **overrides):
    """2 iterations of RSMatch on the embedded digits, contaminated with as many bundled synthetic digits."""
    values = dict(algorithm="rsmatch", synthetic_source="bundled", synthetic_ratio=1.0, queue_min_fill=1,
                  queue_workers=0)
    values.update(overrides)
    return tiny_config(tmp_path, name="rs", **values)


def _checkpoint(run_dir):
    return torch.load(run_dir / "latest_model.pth", map_location="cpu", weights_only=True)


def test_runs_usbs_train_py_with_rsmatch_on_the_contaminated_digits(tmp_path, caplog):
    # USB's get_logger sets INFO through logging.basicConfig, a no-op under pytest's own logging.
    caplog.set_level(logging.INFO)
    script = _script(tmp_path / "usb")
    cfg = _rsmatch_config(tmp_path)
    assert usb_train.cli([str(script), "--c", write_config(tmp_path, cfg)]) == 0
    run_dir = Path(cfg["save_dir"], cfg["save_name"])
    log = (run_dir / "log.txt").read_text()
    # The plugin's dataset: 1,347 real unlabeled digits (40 labeled among them) and as many synthetic ones.
    assert "unlabeled data number: 2694, labeled data number 40" in log
    assert "RSMatch detector:" in log
    assert re.search(r"^\[.*\] 2 iteration.*BEST_EVAL_ACC", log, re.M)
    checkpoint = _checkpoint(run_dir)
    assert checkpoint["it"] == 2
    assert {"detector", "csqueue", "extra_heads", "rsmatch_state"} <= set(checkpoint)
    # USB's script gets the plugin's structured metrics too.
    records = run_metrics.read_records(run_metrics.path_in(str(run_dir)))
    assert [r["kind"] for r in records][-2:] == ["eval", "result"] and "eval/detector_auroc" in records[-2]
    # The launcher's hooks are gone again, as after any run (the test fixture undoes them).
    assert sys.argv[0] != str(script) and str(script.parent) not in sys.path


def _fails_cleanly(capsys, argv, save_dir, *words):
    assert usb_train.cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rsmatch-usb-train: error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert not Path(save_dir).exists()


@pytest.mark.parametrize("key, value, words", [
    ("synthetic_ration", 1.0, ["unknown key synthetic_ration", "did you mean synthetic_ratio?"]),
    ("algorithm", "rsmatchh", ["algorithm: unknown algorithm 'rsmatchh'"]),
    ("dataset", "digitz", ["dataset: unknown dataset 'digitz'"]),
    ("net", "resnet_nano", ["resnet_nano"]),
    ("synthetic_source", "no/such/folder", ["no/such/folder"]),
])
def test_bad_config_is_one_error_line_before_the_script_writes(tmp_path, capsys, key, value, words):
    script = _script(tmp_path / "usb")
    cfg = _rsmatch_config(tmp_path, **{key: value})
    _fails_cleanly(capsys, [str(script), "--c", write_config(tmp_path, cfg)], cfg["save_dir"], *words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's answer to a GPU config")
def test_a_usb_gpu_config_on_a_cpu_machine_asks_for_device_cpu(tmp_path, capsys):
    script = _script(tmp_path / "usb")
    cfg = _rsmatch_config(tmp_path, device="auto", dist_backend="nccl", gpu=0)
    _fails_cleanly(capsys, [str(script), "--c", write_config(tmp_path, cfg)], cfg["save_dir"],
                   "gpu: 0, dist_backend: nccl", "device: cpu")


def test_usage_errors_are_one_line(tmp_path, capsys):
    _fails_cleanly(capsys, [], tmp_path / "none", "give the path of USB's train.py first")
    _fails_cleanly(capsys, ["--c", "x.yaml"], tmp_path / "none", "give the path of USB's train.py first")
    _fails_cleanly(capsys, [str(tmp_path / "train.py")], tmp_path / "none", "is not a file")


def test_console_script_is_declared():
    setup = configparser.ConfigParser()
    setup.read(Path(REPO, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts["rsmatch-usb-train"] == "rsmatch_usb.usb_train:cli"


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_module_form_in_a_main_shaped_checkout_uses_the_checkouts_semilearn(tmp_path):
    """As from a clone of USB main: its semilearn (medium_transform, more algorithms) beside train.py."""
    root = usb_tree(tmp_path / "usb")
    script = _script(root)
    cfg = _rsmatch_config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "rsmatch_usb.usb_train", str(script), "--c",
                           write_config(tmp_path, cfg)], cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = Path(cfg["save_dir"], cfg["save_name"], "log.txt").read_text()
    assert f"semilearn imported from {root / 'semilearn'}" in log
    assert "unlabeled data number: 2694, labeled data number 40" in log
    assert _checkpoint(Path(cfg["save_dir"], cfg["save_name"]))["it"] == 2


def test_restart_is_refused_when_the_checkouts_semilearn_cannot_come_first(tmp_path, monkeypatch, capsys):
    root = usb_tree(tmp_path / "usb", main_shaped=False)
    script = _script(root)
    # As in a process the launcher already restarted for that semilearn: no second restart.
    monkeypatch.setenv("RSMATCH_USB_TRAIN_SEMILEARN", str((root / "semilearn").resolve()))
    _fails_cleanly(capsys, [str(script)], tmp_path / "none", "is not the semilearn Python imports")
    assert os.environ["RSMATCH_USB_TRAIN_SEMILEARN"] == str((root / "semilearn").resolve())


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_multiprocessing_distributed_workers_install_the_plugin(tmp_path):
    """train.py's mp.spawn workers are fresh processes: they get rsmatch and the CPU runtime too (gloo on CPU)."""
    script = _script(tmp_path / "usb")
    cfg = _rsmatch_config(tmp_path, multiprocessing_distributed=True)
    done = subprocess.run([sys.executable, "-m", "rsmatch_usb.usb_train", str(script), "--c",
                           write_config(tmp_path, cfg)], cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = Path(cfg["save_dir"], cfg["save_name"], "log.txt").read_text()
    assert "distributed=True" in log and "dist_backend='gloo'" in log and "multiprocessing_distributed=True" in log
    assert "RSMatch detector:" in log
    assert _checkpoint(Path(cfg["save_dir"], cfg["save_name"]))["it"] == 2
    records = run_metrics.read_records(run_metrics.path_in(os.path.join(cfg["save_dir"], cfg["save_name"])))
    assert [r.get("event") for r in records].count("run_start") == 1  # the main rank's records only
    assert [r["kind"] for r in records][-1] == "result"
