"""The queue's draws read and transformed in worker processes, one step ahead (plugin-only: ``queue_workers``).

Reading a draw one image at a time on the training thread cost about 16 ms
per step at 32 px and 250 ms at 224 px on a 2-core CPU (and idles a GPU
meanwhile). :class:`WorkerDraws` therefore submits each request to a worker
process, which reads and transforms it while the next step's forward and
backward passes run.

A worker process, not a thread: the transforms draw from the global RNGs
(torch, ``random``, NumPy), which a thread would share with the training
loop. The worker dies with the training process (:mod:`data_tools.processes`)
and holds no copy of the run folder's lock. Each draw carries its own seed,
so prefetched draws equal synchronous ones (``queue_workers: 0``).
"""
import concurrent.futures
import multiprocessing
import os
from typing import Any, Dict, Iterable

import torch

from data_tools.processes import die_with_parent

from ..utils import QueueDraws, read_transformed

# The dataset a worker process reads from (inherited at fork, set by _init_worker).
_worker_dataset = None


def _init_worker(dataset, parent_pid):
    global _worker_dataset
    # A training killed with SIGKILL takes its worker along (it lived on with parent 1).
    die_with_parent(parent_pid)
    _worker_dataset = dataset
    # The training process owns the cores; one intra-op thread per worker is enough for a transform.
    torch.set_num_threads(1)


def _read_in_worker(indices, seed):
    return read_transformed(_worker_dataset, indices, seed)


class WorkerDraws(QueueDraws):
    """:class:`~.draws.QueueDraws` whose requests are read in ``num_workers`` processes (0: on the training thread).

    :meth:`close` stops the workers.
    """

    def __init__(self, dataset: Any, num_workers: int = 1):
        super().__init__(dataset)
        self.num_workers = int(num_workers)
        self._pool = None
        self._future = None

    def request(self, indices: Iterable[int], seed: int) -> None:
        super().request(indices, seed)
        if self.num_workers > 0:
            if self._pool is None:
                # fork: the worker inherits the dataset instead of unpickling it.
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.num_workers, mp_context=multiprocessing.get_context("fork"),
                    initializer=_init_worker, initargs=(self.dataset, os.getpid()))
            self._future = self._pool.submit(_read_in_worker, self._request[0].tolist(), self._request[1])

    def read(self, indices: torch.Tensor, seed: int) -> torch.Tensor:
        if self._future is None:
            return super().read(indices, seed)
        images = self._future.result()
        self._future = None
        return images

    def restore(self, state: Dict[str, torch.Tensor]) -> None:
        if self._future is not None:
            self._future.cancel()
        self._future = None
        super().restore(state)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._future = None
