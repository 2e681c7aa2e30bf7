"""Failures around a run: an unwritable save_dir or full disk is one error line; a run stopped midway
says why in its log.txt; a normal end is logged at INFO."""
import errno
import os

import numpy as np
import pytest
from PIL import Image

from conftest import read_log, run_train, tiny_config
from rsmatch_usb.fingerprints import logged_fingerprints


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("rsmatch-train: error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


def test_read_only_save_dir_is_an_error_before_anything_is_written(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    if os.geteuid() == 0:  # root writes anywhere: let os.access answer as for a normal user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.path.abspath(p) == str(locked)
                            else real_access(p, mode, **kw))
    code, run_dir = run_train(tmp_path, tiny_config(tmp_path, save_dir=str(locked / "runs")))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"save_dir: {locked} is not writable" in err[0], err
    os.chmod(locked, 0o755)
    assert os.listdir(locked) == []


def test_save_dir_under_a_file_is_an_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _ = run_train(tmp_path, tiny_config(tmp_path, save_dir=str(tmp_path / "afile" / "runs")))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, so the run folder" in err[0], err


@pytest.mark.parametrize("writer", ["checkpoint", "log file"])
def test_full_disk_is_one_error_line(tmp_path, capsys, monkeypatch, writer):
    import logging

    import torch

    def no_space(self_or_obj, f=None, *args, **kwargs):
        name = getattr(self_or_obj, "baseFilename", None) or getattr(f, "name", f)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    # Every checkpoint write, or the opening of the run's log.txt, meets a full disk.
    if writer == "checkpoint":
        monkeypatch.setattr(torch, "save", no_space)
    else:
        monkeypatch.setattr(logging.FileHandler, "_open", no_space)
    code, _ = run_train(tmp_path, tiny_config(tmp_path))
    assert code == 2
    line = _one_error_line(capsys)
    # Both name the file and how to go on (the checkpoint writer's message, or the train command's).
    assert "No space left on device" in line and "resume" in line


@pytest.mark.parametrize("num_workers", [0, 2])
def test_error_midway_is_written_to_the_run_log(tmp_path, capsys, num_workers):
    root = tmp_path / "real"
    for split, count in (("train", 6), ("val", 2)):
        for c, name in enumerate(("cat", "dog")):
            os.makedirs(root / split / name)
            for i in range(count):
                Image.fromarray(np.full((8, 8, 3), 40 * c + i, dtype=np.uint8)).save(root / split / name / f"{i}.png")
    # Real images are read when used: this one fails at the first evaluation, after training started.
    (root / "val" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated" * 3)
    cfg = tiny_config(tmp_path, dataset="imagefolder", image_folder_root=str(root), num_classes=2, num_labels=2,
                      num_workers=num_workers, eval_batch_size=4)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 2
    line = _one_error_line(capsys)
    assert "cannot read image" in line and "1.png" in line and "Original Traceback" not in line
    log = read_log(run_dir)
    assert "Model training" in log
    assert "ERROR] training stopped: cannot read image" in log.splitlines()[-1]


def test_finished_line_is_info_and_in_the_run_log(tmp_path, capsys):
    code, run_dir = run_train(tmp_path, tiny_config(tmp_path))
    assert code == 0
    assert "WARNING" not in capsys.readouterr().err
    log = read_log(run_dir)
    assert "INFO] training is FINISHED; parameter fingerprint " in log
    assert list(logged_fingerprints(log, "training is FINISHED; parameter fingerprint")) == ["0"]
