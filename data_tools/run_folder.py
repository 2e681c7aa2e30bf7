"""A run folder (``save_dir/save_name``): what makes it finished, and the lock a writing run holds.

Used by the train command (one writer per folder, no silent retraining over a
finished run) and by the grid runner (which runs are finished). Like
:mod:`data_tools.config_files` it imports nothing of the project but the
errors, so the runner reads run folders without loading semilearn.
"""
import contextlib
import fcntl
import os
import shutil

from .errors import UserError

# USB's final log line; a log that has it belongs to a finished run.
RESULT_LINE = "Model result - eval/best_acc"
# A run folder's checkpoints, newest first: USB saves model_best.pth at or before latest_model.pth.
CHECKPOINTS = ("latest_model.pth", "model_best.pth")
LOCK_FILE = ".lock"


def log_has_result(folder):
    """Whether ``folder/log.txt`` has USB's final result line."""
    try:
        with open(os.path.join(folder, "log.txt"), encoding="utf-8", errors="replace") as f:
            return any(RESULT_LINE in line for line in f)
    except OSError:
        return False


def finished_marker(folder):
    """What in ``folder`` shows a run trained there (a checkpoint, or a log with the result line), or None."""
    for name in CHECKPOINTS:
        if os.path.isfile(os.path.join(folder, name)):
            return name
    if log_has_result(folder):
        return "log.txt with its final result line"
    return None


@contextlib.contextmanager
def locked(folder, clear=False):
    """Hold an exclusive lock on ``folder`` (created if missing) while inside; ``clear`` empties it first.

    ``flock`` on ``folder/.lock``: the kernel releases it when the holder
    exits, however it exits, so a killed run leaves no stale lock. A second
    run into a locked folder is a UserError naming the holder's pid.
    """
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise UserError(f"{folder} is in use by another run{f' (pid {holder})' if holder else ''}; wait for "
                            "it to end, or give this run another save_name or save_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        if clear:  # overwrite: the previous run's files go, the lock stays held
            for entry in os.listdir(folder):
                path = os.path.join(folder, entry)
                if entry == LOCK_FILE:
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        yield
    finally:
        os.close(fd)
