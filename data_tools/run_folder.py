"""A run folder (``save_dir/save_name``): its name, what makes it finished, the lock a writing run holds.

The one place where run folders are named, created, locked and cleared:
``save_name`` names a plain subfolder (:func:`check_save_name`); overwrite
clears only a run folder (:func:`check_clearable`, :data:`MARKER`); one
process writes a folder at a time (:func:`locked`), a lock the grid runner can
hand to the training it starts. Used by the train command (one writer per
folder, no silent retraining over a finished run) and by the grid runner
(which runs are finished, decided under the lock). Like
:mod:`data_tools.config_files` it imports nothing of the project but the
errors, so the runner reads run folders without loading semilearn.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from typing import Any, Dict, Iterator, List, Optional

from .errors import UserError, shown
from .run_metrics import FILE_NAME as METRICS_FILE

# USB's final log line; a log that has it belongs to a finished run.
RESULT_LINE = "Model result - eval/best_acc"
# A run folder's checkpoints, newest first: USB saves model_best.pth at or before latest_model.pth.
CHECKPOINTS = ("latest_model.pth", "model_best.pth")
LOCK_FILE = ".lock"
# Written into every run folder a run of this plugin creates (or finds empty): overwrite clears only such folders.
MARKER = ".rsmatch_usb_run"
# What USB and this plugin write into a run folder: a folder holding nothing else is a run folder from
# before the marker existed, which overwrite may clear too.
_RUN_OUTPUT = re.compile("^(" + "|".join(map(re.escape, ("log.txt", METRICS_FILE, "tensorboard", LOCK_FILE, MARKER,
                                                      *CHECKPOINTS)))
                         + r")$|^(" + "|".join(map(re.escape, CHECKPOINTS)) + r")\.tmp$")
# The environment variable naming a lock a parent process (the grid runner) took and hands to this process:
# "<fd>:<folder>"; the fd is passed to the child open (subprocess pass_fds).
HANDED_LOCK_ENV = "RSMATCH_USB_RUN_LOCK"

# Lock fds this process holds, by fd: the pid that opened it. A forked child closes its copies at once
# (see _close_locks_in_child), so a worker never holds a run's lock after its parent died.
_HELD = {}


def check_save_name(save_name: Any) -> str:
    """``save_name`` as text, or a UserError unless it names a plain folder inside ``save_dir``.

    Not '', '.', '..', an absolute path or one holding a path separator, nor
    null: each of these named ``save_dir`` itself, a folder above it or one
    elsewhere, which ``overwrite`` would have emptied.
    """
    if isinstance(save_name, int) and not isinstance(save_name, bool):
        save_name = str(save_name)  # YAML reads save_name: 2024 as a number
    separators = {"/", os.sep, os.altsep} - {None}
    if (not isinstance(save_name, str) or save_name.strip() in ("", ".", "..")
            or any(sep in save_name for sep in separators) or "\0" in save_name or os.path.isabs(save_name)):
        raise UserError(f"save_name: {shown(save_name)} must name a plain folder inside save_dir (not empty, "
                        "'.', '..', null, nor a path with a separator); give a name such as fixmatch_cifar10_40_0 and "
                        "set save_dir for where it goes")
    return save_name


def run_path(save_dir: Any, save_name: Any) -> str:
    """The run folder ``save_dir/save_name``, after :func:`check_save_name`; a UserError for a bad either."""
    if not isinstance(save_dir, str) or not save_dir.strip():
        raise UserError(f"save_dir: {shown(save_dir)} must name a folder (text); give a path such as ./saved_models")
    return os.path.join(save_dir, check_save_name(save_name))


def log_has_result(folder: str) -> bool:
    """Whether ``folder/log.txt`` has USB's final result line, complete (a line cut by a kill does not count)."""
    try:
        with open(os.path.join(folder, "log.txt"), encoding="utf-8", errors="replace") as f:
            return any(RESULT_LINE in line and line.endswith("\n") for line in f)
    except OSError:
        return False


def finished_marker(folder: str) -> Optional[str]:
    """What in ``folder`` shows a run trained there (a checkpoint, or a log with the result line), or None."""
    for name in CHECKPOINTS:
        if os.path.isfile(os.path.join(folder, name)):
            return name
    if log_has_result(folder):
        return "log.txt with its final result line"
    return None


def foreign_entries(folder: str) -> List[str]:
    """The entries of ``folder`` that no run wrote, sorted; [] for a folder carrying :data:`MARKER` or missing.

    A folder with the marker was made (or found empty) by a run of this
    plugin, so everything in it is the run's; one without it counts as a run
    folder only when it holds nothing but what a run writes (a run folder of
    an older version, or USB's).
    """
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    if MARKER in entries:
        return []
    return sorted(e for e in entries if not _RUN_OUTPUT.match(e))


def is_unused(folder: str) -> bool:
    """Whether ``folder`` is missing or holds nothing but a lock and the marker (a run that wrote nothing yet)."""
    try:
        return set(os.listdir(folder)) <= {LOCK_FILE, MARKER}
    except (FileNotFoundError, NotADirectoryError):
        return True


def check_clearable(folder: str) -> None:
    """A UserError when ``folder`` holds files no run wrote, which overwrite must not delete; writes nothing."""
    foreign = foreign_entries(folder)
    if foreign:
        names = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise UserError(f"overwrite: {folder} holds files that no run wrote ({names}); overwrite clears only "
                        "run folders, so give this run another save_name or save_dir (or move those files)")


def _close_locks_in_child():
    """After a fork, in the child: close the copies of this process's lock fds.

    flock belongs to the open file; a forked worker that kept its copy would
    hold the run's lock after its parent died (the resume was refused until
    the orphan was found and killed).
    """
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_locks_in_child)


def _handed_lock(folder):
    """The lock fd a parent handed this process for ``folder`` (see :data:`HANDED_LOCK_ENV`), or None."""
    value = os.environ.get(HANDED_LOCK_ENV, "")
    fd_text, _, path = value.partition(":")
    if not fd_text.isdigit() or not path:
        return None
    try:
        held, wanted = os.fstat(int(fd_text)), os.stat(os.path.join(folder, LOCK_FILE))
    except OSError:
        return None
    if (held.st_dev, held.st_ino) != (wanted.st_dev, wanted.st_ino):
        return None
    del os.environ[HANDED_LOCK_ENV]  # this process's own children do not take it again
    return int(fd_text)


def hand_lock_env(fd: int, folder: str) -> Dict[str, str]:
    """The environment entry that hands the lock ``fd`` of ``folder`` to a child started with ``pass_fds=(fd,)``."""
    return {HANDED_LOCK_ENV: f"{fd}:{os.path.abspath(folder)}"}


@contextlib.contextmanager
def locked(folder: str, clear: bool = False) -> Iterator[int]:
    """Hold an exclusive lock on ``folder`` (created if missing) while inside; yields the lock's fd.

    ``flock`` on ``folder/.lock``: the kernel releases it when the holder
    exits, however it exits, so a killed run leaves no stale lock (forked
    workers close their copy, :func:`_close_locks_in_child`). A second run
    into a locked folder is a UserError naming the holder's pid. A lock the
    grid runner took and handed over (:func:`hand_lock_env`) is used as held.

    ``clear`` (overwrite) empties the folder first, but only a run folder:
    one holding files no run wrote is a UserError (:func:`check_clearable`).
    A folder this call creates or finds empty gets :data:`MARKER`.
    """
    fresh = is_unused(folder)
    if clear:
        check_clearable(folder)
    os.makedirs(folder, exist_ok=True)
    fd = _handed_lock(folder)
    if fd is None:
        fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    _HELD[fd] = os.getpid()
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
            check_clearable(folder)  # again, now that no other run can write it
            for entry in os.listdir(folder):
                path = os.path.join(folder, entry)
                if entry == LOCK_FILE:
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        if clear or fresh:
            with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as f:
                f.write("a run folder of rsmatch-usb: overwrite may clear it\n")
        yield fd
    finally:
        if _HELD.pop(fd, None) == os.getpid():
            os.close(fd)
