"""Helpers on USB's datasets and ``AlgorithmBase``: untransformed image reads, a private RNG stream for extra
random augmentations, extra checkpoint state, train-step inputs kept on the CPU."""
import contextlib
import random
from inspect import signature
from typing import Any, Iterator, Tuple

import numpy as np
import torch
from PIL import Image


def read_sample(dataset: Any, index: int) -> Tuple[Image.Image, Any]:
    """``(image, target)`` of sample ``index`` of a USB dataset, the image decoded (PIL) but untransformed."""
    img, target = dataset.__sample__(index)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    return img, target


def read_image(dataset: Any, index: int) -> Image.Image:
    """Image ``index`` of a USB dataset, untransformed (as its ``__getitem__`` hands it to its transforms)."""
    return read_sample(dataset, index)[0]


@contextlib.contextmanager
def private_rng(seed: int) -> Iterator[None]:
    """Run random augmentations on a stream seeded by ``seed``, leaving the global RNGs untouched.

    Extra reads in the training process (RSMatch's queue draws) would otherwise
    shift the data order and augmentations of the rest of training. Only the
    CPU generator is seeded: ``torch.manual_seed`` would also reseed every CUDA
    generator, which ``fork_rng(devices=[])`` does not restore, so on a GPU
    dropout masks would restart from the same seed each step.
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


class ExtraStateMixin:
    """Saves ``extra_state()`` (``{checkpoint key: value}``) beside USB's checkpoint; ``load_extra_state`` restores it.

    A missing key or a mismatch raises KeyError/ValueError.
    """

    def extra_state(self):
        return {}

    def load_extra_state(self, checkpoint):
        pass

    def get_save_dict(self):
        save_dict = super().get_save_dict()
        save_dict.update(self.extra_state())
        return save_dict

    def load_model(self, load_path):
        checkpoint = super().load_model(load_path)
        self.load_extra_state(checkpoint)
        return checkpoint


class CPUInputsMixin:
    """Keeps the train-step inputs named in ``cpu_inputs`` on the CPU (USB's ``process_batch`` moves all to the GPU).

    Sample indices that only index CPU bookkeeping would otherwise need a
    device-to-host copy each step, which waits for the GPU's queued work.
    """

    cpu_inputs = ()

    def process_batch(self, input_args=None, **kwargs):
        kept = {name: kwargs.pop(name) for name in self.cpu_inputs if kwargs.get(name) is not None}
        batch = super().process_batch(input_args, **kwargs)
        if input_args is None:
            input_args = signature(self.train_step).parameters
        batch.update({name: value for name, value in kept.items() if name in input_args})
        return batch
