"""A private RNG stream for the queue's augmentations (the image views are in ``algorithms.common``)."""
import contextlib
import random

import numpy as np
import torch


@contextlib.contextmanager
def private_rng(seed):
    """Run random augmentations on a stream seeded by ``seed``, leaving the global RNGs untouched.

    The queue's draws happen in the training process; drawing their
    augmentations from the global streams would shift the data order and
    augmentations of the rest of training.

    Only the CPU generator is seeded: ``torch.manual_seed`` would also reseed
    every CUDA generator, which ``fork_rng(devices=[])`` does not restore, so on
    a GPU dropout and drop-path masks would restart from the same seed each step.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
