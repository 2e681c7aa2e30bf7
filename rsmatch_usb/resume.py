"""Exact resume: what a checkpoint must hold so that a resumed run equals an uninterrupted one.

USB's loop draws on three sources of randomness, and its checkpoints keep
none of them: the order of the data (semilearn's samplers, a permutation per
epoch), the random augmentations (applied by the data-loader workers, or the
main process with ``num_workers: 0``, from RNGs seeded when an iterator is
created), and the global RNGs the train step itself may use. A resumed run
also restarted the epoch's data order from its first batch.

Installed by :func:`rsmatch_usb.runtime.activate` for every algorithm:

- The train loaders' samplers are :class:`ResumableRandomSampler` (or the
  weighted variant): the same per-epoch order as semilearn's, but each index
  carries the seed of its batch (:class:`SeededIndex`, derived from a base
  seed, the epoch, the batch number and the rank), and a resumed epoch skips
  the batches already trained on.
- The datasets fetch each batch under that seed (:class:`SeededFetch`, torch's
  ``__getitems__`` hook), so a batch's augmentations depend on the batch alone,
  not on which worker loads it or what it loaded before: the same for any
  ``num_workers``, and reproducible mid-epoch. The loaders draw their own
  iterator seeds from a private generator, leaving the global RNGs to the loop.
- :func:`state` (saved under ``resume_state`` by ``get_save_dict``) holds the
  global RNG states (torch CPU and CUDA, numpy, python ``random``) and the
  loaders' base seeds, as tensors, ints and tuples so that checkpoints load
  with ``weights_only=True``; :func:`restore` (run by ``load_model``) puts
  them back and positions the samplers.
"""
from __future__ import annotations

import os
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from data_tools.processes import DieWithParent
from semilearn.datasets.samplers.sampler import DistributedSampler, WeightedDistributedSampler

from .algorithms.utils import private_rng


class SeededIndex(int):
    """A dataset index that carries the seed of its batch's random augmentations."""

    def __new__(cls, value, seed):
        index = super().__new__(cls, value)
        index.seed = seed
        return index

    def __reduce__(self):  # sent to data-loader workers by pickling
        return SeededIndex, (int(self), self.seed)


class SeededFetch:
    """A dataset's ``__getitems__``: fetch a batch with every RNG seeded by its indices' batch seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, indices):
        seed = getattr(indices[0], "seed", None) if len(indices) else None
        if seed is None:
            return [self.dataset[i] for i in indices]
        with private_rng(seed):
            return [self.dataset[int(i)] for i in indices]


class _Resumable:
    """Sampler mix-in: seeds per batch and a one-shot skip of the batches a resumed epoch has done."""

    batch_size = None   # set by prepare(); until then the sampler behaves as semilearn's
    seed_base = 0
    skip_batches = 0

    def prepare(self, batch_size, seed_base):
        self.batch_size, self.seed_base = batch_size, seed_base

    def batch_seed(self, batch):
        words = [self.seed_base % 2 ** 32, self.seed_base >> 32, self.epoch, batch, self.rank]
        return int(np.random.SeedSequence(words).generate_state(1)[0])

    def __iter__(self):
        indices = list(super().__iter__())
        if self.batch_size is None:
            return iter(indices)
        skip, self.skip_batches = self.skip_batches, 0
        start = skip * self.batch_size
        seeds = {}
        out = []
        for pos in range(start, len(indices)):
            batch = pos // self.batch_size
            if batch not in seeds:
                seeds[batch] = self.batch_seed(batch)
            out.append(SeededIndex(indices[pos], seeds[batch]))
        return iter(out)


class ResumableRandomSampler(_Resumable, DistributedSampler):
    """semilearn's ``RandomSampler`` (its DistributedSampler), resumable mid-epoch."""


class ResumableWeightedSampler(_Resumable, WeightedDistributedSampler):
    """semilearn's ``WeightedRandomSampler``, resumable mid-epoch."""


SAMPLERS = {"RandomSampler": ResumableRandomSampler, "WeightedRandomSampler": ResumableWeightedSampler}


def prepare_loaders(loader_dict: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Seed the resumable train loaders per batch; make every loader draw its iterator seed privately."""
    for loader in (loader_dict or {}).values():
        if not isinstance(loader, torch.utils.data.DataLoader):
            continue
        if isinstance(loader.sampler, _Resumable):
            loader.sampler.prepare(loader.batch_size, int(torch.randint(2 ** 62, (1,)).item()))
            loader.dataset.__getitems__ = SeededFetch(loader.dataset)
        # Creating an iterator draws a seed from this generator, not from the global torch RNG.
        loader.generator = torch.Generator()
        # Its forked workers end with this process, not up to 5 s later when torch's watchdog notices.
        if not isinstance(loader.worker_init_fn, DieWithParent):
            loader.worker_init_fn = DieWithParent(os.getpid(), loader.worker_init_fn)
    return loader_dict


def _resumable(algorithm):
    return {name: loader.sampler for name, loader in (algorithm.loader_dict or {}).items()
            if isinstance(getattr(loader, "sampler", None), _Resumable) and loader.sampler.batch_size}


def _rng_state():
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def state(algorithm: Any) -> Dict[str, Any]:
    """The ``resume_state`` entry of a checkpoint: RNG states and the train loaders' base seeds."""
    return {"rng": _rng_state(), "data_seeds": {name: s.seed_base for name, s in _resumable(algorithm).items()}}


def restore(algorithm: Any, checkpoint: Dict[str, Any]) -> None:
    """Continue where ``checkpoint`` left off: epoch, position in it, data seeds and RNG states.

    USB stores ``epoch + 1`` even for a mid-epoch checkpoint, so with USB's
    usual ``epoch: 1`` the resumed loop would not run at all; the run restarts
    in the epoch the checkpoint was taken in, past the batches already done.
    """
    per_epoch = max(algorithm.num_iter_per_epoch, 1)
    algorithm.start_epoch = min(algorithm.it // per_epoch, algorithm.epochs - 1)
    algorithm.epoch = algorithm.start_epoch
    skip = algorithm.it - algorithm.start_epoch * per_epoch
    saved = checkpoint.get("resume_state")
    for name, sampler in _resumable(algorithm).items():
        sampler.skip_batches = skip
        if saved and name in saved["data_seeds"]:
            sampler.seed_base = int(saved["data_seeds"][name])
    if saved:
        _set_rng_state(saved["rng"])
