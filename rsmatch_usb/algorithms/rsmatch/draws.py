"""The queue's draws: images re-read by index from the unlabeled set and re-augmented under a seed of their own.

Each detector step trains on ``batch_size`` queued images. The trainer
requests the next step's draw (indices and a seed) at the end of each step;
:class:`QueueDraws` holds it, in the checkpoint too, and reads it when it is
taken. A draw's images depend only on its indices and seed, so where and when
they are read does not change them.
"""
from typing import Any, Dict, Iterable

import torch

from ..utils import private_rng, read_image


def read_transformed(dataset: Any, indices: Iterable[int], seed: int) -> torch.Tensor:
    """``dataset.transform(image)`` for each index, stacked; augmentations drawn from a stream seeded by ``seed``."""
    with private_rng(seed):
        return torch.stack([dataset.transform(read_image(dataset, int(i))) for i in indices])


class QueueDraws:
    """One pending draw (indices, seed) at a time: :meth:`request` it, :meth:`take` its images.

    :meth:`pending` gives the request as tensors for a checkpoint;
    :meth:`restore` requests it again after a resume.
    """

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
        """The images of the draw ``(indices, seed)``, read on the training thread."""
        return read_transformed(self.dataset, indices, seed)

    def pending(self) -> Dict[str, torch.Tensor]:
        """The pending request as {"indices", "seed"} tensors (empty indices when none)."""
        if self._request is None:
            return {"indices": torch.zeros(0, dtype=torch.long), "seed": torch.tensor(-1, dtype=torch.long)}
        return {"indices": self._request[0].clone(), "seed": torch.tensor(self._request[1], dtype=torch.long)}

    def restore(self, state: Dict[str, torch.Tensor]) -> None:
        """Drop any pending draw and request the one in ``state`` (from :meth:`pending`)."""
        self._request = None
        if int(state["seed"]) >= 0:
            self.request(state["indices"], int(state["seed"]))
