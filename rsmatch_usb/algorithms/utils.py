"""Helpers on USB's datasets: untransformed image reads, a private RNG stream for extra random augmentations,
and the queue's draws (RSMatch's CSQueue images, re-read by index and re-augmented under a seed of their own)."""
import contextlib
import random
from typing import Any, Dict, Iterable, Iterator, Tuple

import numpy as np
import torch
from PIL import Image


def read_sample(dataset: Any, index: int) -> Tuple[Image.Image, Any]:
    """``(image, target)`` of sample ``index`` of a USB dataset, the image decoded (PIL) but untransformed."""
    img, target = dataset.__sample__(index)
    return (Image.fromarray(img) if isinstance(img, np.ndarray) else img), target


def read_image(dataset: Any, index: int) -> Image.Image:
    return read_sample(dataset, index)[0]


@contextlib.contextmanager
def private_rng(seed: int) -> Iterator[None]:
    """Run random augmentations on a stream seeded by ``seed``, leaving the global RNGs (data order, augmentation)
    untouched. Only the CPU generator: ``fork_rng(devices=[])`` would not restore a reseeded CUDA one."""
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


def read_transformed(dataset: Any, indices: Iterable[int], seed: int) -> torch.Tensor:
    """``dataset.transform(image)`` for each index, stacked; augmentations drawn from a stream seeded by ``seed``."""
    with private_rng(seed):
        return torch.stack([dataset.transform(read_image(dataset, int(i))) for i in indices])


class QueueDraws:
    """One pending draw (indices, seed) at a time: :meth:`request` it, :meth:`take` its images, which depend
    only on the indices and the seed; :meth:`pending` and :meth:`restore` carry it through a checkpoint."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self._request = None  # (indices tensor, seed int)

    def request(self, indices: Iterable[int], seed: int) -> None:
        if self._request is not None:
            raise RuntimeError("QueueDraws.request: the previous draw was not taken")
        self._request = (torch.as_tensor(indices).long().cpu(), int(seed))

    def has_request(self) -> bool:
        return self._request is not None

    def take(self) -> torch.Tensor:
        if self._request is None:
            raise RuntimeError("QueueDraws.take: no draw was requested")
        images = self.read(*self._request)
        self._request = None
        return images

    def read(self, indices: torch.Tensor, seed: int) -> torch.Tensor:
        return read_transformed(self.dataset, indices, seed)

    def pending(self) -> Dict[str, torch.Tensor]:
        """The pending request as {"indices", "seed"} tensors (seed -1: none)."""
        if self._request is None:
            return {"indices": torch.zeros(0, dtype=torch.long), "seed": torch.tensor(-1, dtype=torch.long)}
        return {"indices": self._request[0].clone(), "seed": torch.tensor(self._request[1], dtype=torch.long)}

    def restore(self, state: Dict[str, torch.Tensor]) -> None:
        self._request = None
        if int(state["seed"]) >= 0:
            self.request(state["indices"], int(state["seed"]))
