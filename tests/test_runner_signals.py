"""The grid runner as a real process: SIGTERM/SIGINT to the runner alone stop its trainings too."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_config, write_config


def _children(pid):
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # Fields after the command name, which is in parentheses and may hold spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _wait(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the training child through /proc")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.multiprocess
def test_signal_to_runner_stops_its_training(tmp_path, signum):
    # A run that would train for hours: only the signal can end it.
    cfg = tiny_config(tmp_path, name="long", num_train_iter=10 ** 6, num_eval_iter=10 ** 6)
    config = write_config(tmp_path, cfg)
    # Started with SIGINT ignored, as a script's `runner &` starts it: `kill -INT` must still stop it.
    runner = subprocess.Popen([sys.executable, "-m", "benchmark_configs.run", config], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    child = None
    try:
        # The runner imports torch before its first run: minutes on a loaded machine.
        assert _wait(lambda: _children(runner.pid), 240), "the runner started no training"
        child = _children(runner.pid)[0]
        time.sleep(1.0)  # let the child get going (imports), as a real interruption would find it
        os.kill(runner.pid, signum)  # the runner only, as kill/timeout/schedulers do
        out, _ = runner.communicate(timeout=60)
        assert _wait(lambda: not _alive(child), 10), "the training outlived the runner"
        assert runner.returncode == 128 + signum, out
        assert f"interrupted by {signal.Signals(signum).name}" in out
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)  # an orphan left by a failing runner


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the training child through /proc")
@pytest.mark.timeout(600)
@pytest.mark.multiprocess
def test_sigkill_of_the_runner_takes_its_training_along(tmp_path):
    """SIGKILL leaves the runner no chance to forward it: the training ends by itself (PR_SET_PDEATHSIG)."""
    cfg = tiny_config(tmp_path, name="long", num_train_iter=10 ** 6, num_eval_iter=10 ** 6)
    runner = subprocess.Popen([sys.executable, "-m", "benchmark_configs.run", write_config(tmp_path, cfg)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    child = None
    try:
        assert _wait(lambda: _children(runner.pid), 240), "the runner started no training"
        child = _children(runner.pid)[0]
        # The training sets its death signal first thing; wait until it is past its imports.
        assert _wait(lambda: os.path.exists(os.path.join(cfg["save_dir"], "long", "log.txt")), 240)
        runner.kill()
        runner.wait()
        assert _wait(lambda: not _alive(child), 10), "the training outlived the runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
