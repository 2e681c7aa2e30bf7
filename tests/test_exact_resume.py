"""Exact resume: a run killed after a checkpoint and resumed ends bit-for-bit where an uninterrupted run ends."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, run_train, tiny_config, write_config

# Two epochs of 6 iterations and a checkpoint every 4: the first checkpoint is mid-epoch.
SCHEDULE = dict(num_train_iter=12, epoch=2, num_eval_iter=4, num_log_iter=4)
ALGORITHMS = {
    "fixmatch": dict(algorithm="fixmatch"),
    # The queue fills from the first step, so the resumed part draws from it and its generator.
    "rsmatch": dict(algorithm="rsmatch", detector_width=4, synthetic_source="bundled", synthetic_ratio=1.0,
                    queue_size=4, queue_min_fill=0, queue_min_score=0.0, detector_calib_per_class=0),
}


def assert_identical(a, b, where="checkpoint"):
    """Every tensor (and every other value) of ``a`` equals ``b``'s bit for bit; returns the tensor count."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
        return 1
    if isinstance(a, dict):
        assert list(a) == list(b), where
        return sum(assert_identical(a[k], b[k], f"{where}/{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        return sum(assert_identical(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    assert a == b, where
    return 0


def _final(run_dir):
    return torch.load(os.path.join(run_dir, "latest_model.pth"), map_location="cpu", weights_only=True)


def _kill_after_first_checkpoint(tmp_path, cfg):
    """Start rsmatch-train in a subprocess and SIGKILL it as soon as its first checkpoint exists."""
    run_dir = os.path.join(cfg["save_dir"], cfg["save_name"])
    latest = os.path.join(run_dir, "latest_model.pth")
    proc = subprocess.Popen([sys.executable, "-m", "rsmatch_usb.train", "--c", write_config(tmp_path, cfg)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not os.path.exists(latest) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the training process and its data-loader workers
    finally:
        stderr = proc.communicate()[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    killed_at = _final(run_dir)["it"]
    assert 0 < killed_at < cfg["num_train_iter"], killed_at
    return run_dir, latest


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_killed_and_resumed_run_ends_identical_to_an_uninterrupted_one(tmp_path, algorithm, num_workers):
    common = dict(num_workers=num_workers, **SCHEDULE, **ALGORITHMS[algorithm])
    code, straight_dir = run_train(tmp_path, tiny_config(tmp_path, name="straight", **common))
    assert code == 0

    cfg = tiny_config(tmp_path, name="killed", **common)
    run_dir, latest = _kill_after_first_checkpoint(tmp_path, cfg)
    code, _ = run_train(tmp_path, dict(cfg, resume=True, load_path=latest))
    assert code == 0

    straight, resumed = _final(straight_dir), _final(run_dir)
    assert resumed["it"] == straight["it"] == SCHEDULE["num_train_iter"]
    assert assert_identical(straight, resumed) > 50


@pytest.mark.slow
def test_augmentations_do_not_depend_on_num_workers(tmp_path):
    final = {}
    for num_workers in (0, 2):
        cfg = tiny_config(tmp_path, name=f"workers{num_workers}", num_workers=num_workers, num_train_iter=4,
                          num_eval_iter=4)
        code, run_dir = run_train(tmp_path, cfg)
        assert code == 0
        final[num_workers] = _final(run_dir)
    assert assert_identical(final[0], final[2]) > 50


def _live_children(pid):
    """Pids of the processes whose parent is ``pid`` and that have not exited (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_sigkill_of_the_training_alone_leaves_no_orphan_and_resumes_at_once(tmp_path, num_workers):
    """``kill -9`` of the training process only (the OOM killer), not its group: its forked workers (the
    queue-draw worker, data-loader workers) die with it and hold no lock, so the resume works at once."""
    cfg = tiny_config(tmp_path, name="orphan", num_workers=num_workers, **SCHEDULE, **ALGORITHMS["rsmatch"])
    run_dir = os.path.join(cfg["save_dir"], cfg["save_name"])
    latest = os.path.join(run_dir, "latest_model.pth")
    proc = subprocess.Popen([sys.executable, "-m", "rsmatch_usb.train", "--c", write_config(tmp_path, cfg)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 500
        # The queue-draw worker exists from the first trusted step (queue_min_fill: 0), before the first checkpoint.
        while not (os.path.exists(latest) and _live_children(proc.pid)) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = _live_children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the training process alone
    finally:
        stderr = proc.communicate()[1].decode(errors="replace")
    try:
        assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
        assert workers
        deadline = time.monotonic() + 2  # torch's own watchdog would take 5 s; the orphan lived for ever
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [w for w in workers if _alive(w)]
        code, _ = run_train(tmp_path, dict(cfg, resume=True, load_path=latest))
        assert code == 0  # was: "in use by another run (pid <the dead parent>)"
        assert _final(run_dir)["it"] == SCHEDULE["num_train_iter"]
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
