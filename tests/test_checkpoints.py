"""Checkpoint files: safe loading, atomic writes, the runner's fallback, run-folder locks."""
import errno
import io
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_train, tiny_config, write_config


class _WritesMarker:
    """Unpickling this object opens (creates) ``path``: what a crafted checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted_checkpoint(path, marker):
    torch.save({"model": {"w": torch.zeros(1)}, "it": 1, "payload": _WritesMarker(str(marker))}, path)
    # The file really would run code when loaded unsafely.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
            and not line.startswith("  ")]


# ---------------------------------------------------------------- safe loading
@pytest.mark.multiprocess
def test_train_refuses_a_checkpoint_that_would_run_code(tmp_path):
    marker = tmp_path / "marker"
    crafted = tmp_path / "latest_model.pth"
    _crafted_checkpoint(crafted, marker)
    cfg = tiny_config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "rsmatch_usb.train", "--c", write_config(tmp_path, cfg),
                           "--resume", "True", "--load_path", str(crafted)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("rsmatch-train: error: load_path:"), proc.stderr
    assert "refused" in lines[0] and "io.open" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not os.path.exists(os.path.join(cfg["save_dir"], cfg["save_name"]))


def test_runner_dry_run_refuses_a_checkpoint_that_would_run_code(tmp_path):
    from benchmark_configs import run

    marker = tmp_path / "marker"
    save_dir = tmp_path / "saved"
    (save_dir / "evil").mkdir(parents=True)
    _crafted_checkpoint(save_dir / "evil" / "latest_model.pth", marker)
    config = write_config(tmp_path, tiny_config(tmp_path, name="evil", save_dir=str(save_dir)), "evil.yaml")
    out = io.StringIO()
    assert run.main([config, "--dry-run"], out=out) == 0
    errors = [line for line in out.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "latest_model.pth refused" in errors[0] and "io.open" in errors[0]
    assert "unreadable  evil" in out.getvalue()
    assert not marker.exists()
    # A real run does not start it either: reported and counted as failed.
    out = io.StringIO()
    assert run.main([config], out=out) == 1
    assert not marker.exists() and "not run: no readable checkpoint" in out.getvalue()


# ---------------------------------------------------------------- atomic writes
CHECKPOINTS = ("latest_model.pth", "model_best.pth")


def _half_written(real_save):
    """A torch.save that writes half of its bytes to the target, then fails as a full disk does."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as out:
                out.write(data)
        else:
            f.write(data)
            f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def _files(run_dir):
    return {name: open(os.path.join(run_dir, name), "rb").read() for name in CHECKPOINTS}


def test_a_failing_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path, num_train_iter=2, num_eval_iter=2)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    before = _files(run_dir)
    monkeypatch.setattr(torch, "save", _half_written(torch.save))
    latest = os.path.join(run_dir, "latest_model.pth")
    code, _ = run_train(tmp_path, dict(cfg, num_train_iter=4, resume=True, load_path=latest))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "resume: True" in err[0]
    assert _files(run_dir) == before
    assert all(torch.load(os.path.join(run_dir, n), weights_only=True)["it"] == 2 for n in CHECKPOINTS)
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]


KILLED_MID_SAVE = """
import io, os, signal, sys
import torch
real_save, calls = torch.save, []

def save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) < {kill_at}:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()[: len(buf.getvalue()) // 2]
    out = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
    out.write(data)
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save
from rsmatch_usb.train import cli
sys.exit(cli(sys.argv[1:]))
"""


@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, name="killed", num_train_iter=4, num_eval_iter=1)
    script = tmp_path / "killed_mid_save.py"
    # Saves: latest@1, best@1, latest@2, ...: the third is killed half-written.
    script.write_text(KILLED_MID_SAVE.format(kill_at=3))
    proc = subprocess.run([sys.executable, str(script), "--c", write_config(tmp_path, cfg)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run_dir = os.path.join(cfg["save_dir"], cfg["save_name"])
    for name in CHECKPOINTS:
        assert torch.load(os.path.join(run_dir, name), weights_only=True)["it"] == 1, name


def test_runner_falls_back_to_model_best_when_latest_is_unreadable(tmp_path):
    from benchmark_configs import run

    save_dir = tmp_path / "saved"
    folder = save_dir / "torn"
    folder.mkdir(parents=True)
    (folder / "latest_model.pth").write_bytes(b"")  # what an in-place write left after a kill
    torch.save({"model": {}, "it": 150}, folder / "model_best.pth")
    config = write_config(tmp_path, tiny_config(tmp_path, name="torn", save_dir=str(save_dir),
                                                num_train_iter=300), "torn.yaml")
    out = io.StringIO()
    assert run.main([config, "--dry-run"], out=out) == 0
    text = out.getvalue()
    assert text.startswith("1 run(s): 0 finished (skipped), 1 to resume, 0 to start\n")
    assert "resume@150  torn" in text
    assert "latest_model.pth unreadable" in text and "resuming from model_best.pth" in text
    assert f"--resume True --load_path {folder / 'model_best.pth'}" in text


# ---------------------------------------------------------------- run folders
HOLD_LOCK = """
import sys, time
from data_tools.run_folder import locked
with locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _contents(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def test_a_locked_run_folder_refuses_a_second_run_and_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    cfg = tiny_config(tmp_path)  # overwrite: True, resume: False: it would clear the folder
    folder = os.path.join(cfg["save_dir"], cfg["save_name"])
    os.makedirs(folder)
    with open(os.path.join(folder, "log.txt"), "w") as f:
        f.write("another run's log")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, folder], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _contents(folder)
        code, _ = run_train(tmp_path, cfg)
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by another run (pid {holder.pid})" in err[0], err
        assert _contents(folder) == before
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    code, _ = run_train(tmp_path, cfg)
    assert code == 0
    with open(os.path.join(folder, "log.txt")) as f:
        assert "another run's log" not in f.read()  # overwrite: True cleared it
    assert torch.load(os.path.join(folder, "latest_model.pth"), weights_only=True)["it"] == 2


def test_resume_with_a_missing_load_path_does_not_retrain_over_a_finished_run(tmp_path, capsys):
    cfg = tiny_config(tmp_path, overwrite=False)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    before = _contents(run_dir)
    typo = dict(cfg, resume=True, load_path=os.path.join(run_dir, "latest_modle.pth"))
    code, _ = run_train(tmp_path, typo)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "overwrite: True" in err[0], err
    assert _contents(run_dir) == before
    code, _ = run_train(tmp_path, dict(typo, overwrite=True))  # what the message offers
    assert code == 0
    assert "does not exist; training from scratch" in open(os.path.join(run_dir, "log.txt")).read()
