"""RSMatch's queue draws, read on the training thread (the export's QueueDraws) or in a worker process one step
ahead (the plugin's WorkerDraws): the same images either way."""
import numpy as np
import pytest
import torch
from torchvision import transforms

from rsmatch_usb.algorithms.rsmatch.draw_workers import WorkerDraws
from rsmatch_usb.algorithms.utils import QueueDraws, read_transformed


class _Images:
    """The two things the draws need of a USB dataset: ``__sample__`` and a random ``transform``."""

    def __init__(self, n=12):
        self.data = np.random.RandomState(0).randint(0, 255, (n, 10, 10, 3), dtype=np.uint8)
        self.transform = transforms.Compose([transforms.RandomCrop(8, padding=2, padding_mode="reflect"),
                                             transforms.RandomHorizontalFlip(), transforms.ToTensor()])

    def __sample__(self, index):
        return self.data[index], 0


@pytest.mark.parametrize("num_workers", [None, 0, 1])
def test_prefetched_draws_equal_synchronous_ones_and_leave_the_global_rng_alone(num_workers):
    images = _Images()
    draws = QueueDraws(images) if num_workers is None else WorkerDraws(images, num_workers)
    state = torch.random.get_rng_state()
    try:
        for seed, index in [(11, [3, 1, 3, 7]), (12, [0, 5, 9, 2])]:
            draws.request(torch.tensor(index), seed)
            assert draws.has_request()
            got = draws.take()
            assert torch.equal(got, read_transformed(images, index, seed))
            assert not draws.has_request()
        # The augmentations depend on the seed: the same indices under another seed differ.
        assert not torch.equal(read_transformed(images, [3, 1, 3, 7], 11), read_transformed(images, [3, 1, 3, 7], 13))
        assert torch.equal(torch.random.get_rng_state(), state)
    finally:
        if num_workers is not None:
            draws.close()


def test_pending_draw_survives_a_checkpoint():
    images = _Images()
    draws = WorkerDraws(images, 1)
    try:
        assert int(draws.pending()["seed"]) == -1  # nothing pending
        draws.request(torch.tensor([4, 2]), 5)
        saved = {k: v.clone() for k, v in draws.pending().items()}
        resumed = QueueDraws(images)  # as the export reads it
        resumed.restore(saved)
        assert torch.equal(resumed.take(), draws.take())
        with pytest.raises(RuntimeError):
            resumed.take()
    finally:
        draws.close()
