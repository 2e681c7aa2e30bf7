"""The queue's draws read and transformed off the training thread, one step ahead.

Each detector step trains on ``batch_size`` queued images, re-read by index
from the unlabeled dataset and passed through its weak transform. Doing that
one image at a time on the training thread cost about 16 ms per step at 32 px
and 250 ms at 224 px on a 2-core CPU (and idles a GPU meanwhile). RSMatch
therefore requests the next step's draw at the end of each step; a worker
process reads and transforms it while the next step's forward and backward
passes run.

A worker process, not a thread: the transforms draw from the global RNGs
(torch, ``random``, NumPy), which a thread would share with the training
loop. The worker dies with the training process (:mod:`data_tools.processes`)
and holds no copy of the run folder's lock. Each draw carries its own seed, so a draw's images depend only on its
indices and seed, wherever they are made: prefetched draws equal synchronous
ones (``num_workers: 0``).
"""
import concurrent.futures
import multiprocessing
import os

import torch

from data_tools.processes import die_with_parent
from ..common import read_image
from .images import private_rng

# The dataset a worker process reads from (inherited at fork, set by _init_worker).
_worker_dataset = None


def read_transformed(dataset, indices, seed):
    """``dataset.transform(image)`` for each index, stacked; augmentations drawn from a stream seeded by ``seed``."""
    with private_rng(seed):
        return torch.stack([dataset.transform(read_image(dataset, int(i))) for i in indices])


def _init_worker(dataset, parent_pid):
    global _worker_dataset
    # A training killed with SIGKILL takes its worker along (it lived on with parent 1).
    die_with_parent(parent_pid)
    _worker_dataset = dataset
    # The training process owns the cores; one intra-op thread per worker is enough for a transform.
    torch.set_num_threads(1)


def _read_in_worker(indices, seed):
    return read_transformed(_worker_dataset, indices, seed)


class QueueDraws:
    """One pending draw (indices, seed) at a time, read in a worker process (or inline with ``num_workers=0``).

    :meth:`request` submits a draw; :meth:`take` returns its images (waiting if
    they are not ready) and clears it. :meth:`pending` gives the request as
    tensors for a checkpoint; :meth:`restore` resubmits it after a resume.
    """

    def __init__(self, dataset, num_workers=1):
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self._pool = None
        self._request = None  # (indices tensor, seed int)
        self._future = None

    def request(self, indices, seed):
        if self._request is not None:
            raise RuntimeError("QueueDraws.request: the previous draw was not taken")
        self._request = (torch.as_tensor(indices).long().cpu(), int(seed))
        if self.num_workers > 0:
            if self._pool is None:
                # fork: the worker inherits the dataset instead of unpickling it.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.num_workers, mp_context=multiprocessing.get_context("fork"),
                    initializer=_init_worker, initargs=(self.dataset, os.getpid()))
            self._future = self._pool.submit(_read_in_worker, self._request[0].tolist(), self._request[1])

    def has_request(self):
        return self._request is not None

    def take(self):
        if self._request is None:
            raise RuntimeError("QueueDraws.take: no draw was requested")
        indices, seed = self._request
        images = self._future.result() if self._future is not None else read_transformed(self.dataset, indices, seed)
        self._request, self._future = None, None
        return images

    def pending(self):
        """The pending request as {"indices", "seed"} tensors (empty indices when none)."""
        if self._request is None:
            return {"indices": torch.zeros(0, dtype=torch.long), "seed": torch.tensor(-1, dtype=torch.long)}
        return {"indices": self._request[0].clone(), "seed": torch.tensor(self._request[1], dtype=torch.long)}

    def restore(self, state):
        """Drop any pending draw and resubmit the one in ``state`` (from :meth:`pending`)."""
        if self._future is not None:
            self._future.cancel()
        self._request, self._future = None, None
        if int(state["seed"]) >= 0:
            self.request(state["indices"], int(state["seed"]))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._future = None
