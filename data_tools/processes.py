"""Processes the tools start end with their parent: no orphan outlives a killed run.

A ``kill -9`` (the OOM killer, a preempted job) gives a process's children no
chance to clean up. RSMatch's queue-draw worker used to live on with parent 1
(and, holding a copy of the run folder's lock fd, blocked the resume;
:mod:`data_tools.run_folder` now closes those copies at every fork). Every
process the tools start calls :func:`die_with_parent` first (the queue-draw
worker, data-loader workers, spawned DDP ranks, the grid runner's trainings
through :data:`PARENT_ENV`): on Linux the kernel sends it SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent's pid.
Like :mod:`data_tools.errors` it imports nothing of the project.
"""
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_SECONDS = 1.0
# Set by a parent for a child it starts with exec (the grid runner's trainings): the parent's pid.
PARENT_ENV = "RSMATCH_USB_DIE_WITH_PARENT"


def _set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Make this (forked) process end as soon as ``parent_pid``, the process that started it, is gone.

    Call it first thing in a worker. ``PR_SET_PDEATHSIG`` fires when the
    parent *thread* that forked exits, so fork from the thread that lives as
    long as the workers (the training loop's).
    """
    watched = _set_parent_death_signal(signal.SIGKILL)
    # The parent may have died before prctl took effect: then this process was re-parented already.
    if os.getppid() != parent_pid:
        os._exit(1)
    if not watched:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                         name="die-with-parent").start()


def child_dies_with_me_env() -> dict:
    """The environment entry by which a child started with exec dies with this process.

    The child calls :func:`die_with_parent_from_env`.
    """
    return {PARENT_ENV: str(os.getpid())}


def die_with_parent_from_env() -> None:
    """:func:`die_with_parent` for the parent :data:`PARENT_ENV` names, if any; its own children do not inherit it."""
    value = os.environ.pop(PARENT_ENV, "")
    if value.isdigit():
        die_with_parent(int(value))


class DieWithParent:
    """A DataLoader ``worker_init_fn`` that calls :func:`die_with_parent`, then the loader's own one (if any).

    A class rather than a closure so that it pickles under the spawn start method.
    """

    def __init__(self, parent_pid: int, then=None):
        self.parent_pid, self.then = parent_pid, then

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.parent_pid)
        if self.then is not None:
            self.then(worker_id)
