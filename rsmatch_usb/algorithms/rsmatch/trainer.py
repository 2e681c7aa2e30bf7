"""RSMatch's detector trainer: what the detector learns from at each step, and the step itself.

Known-real examples are the labeled images (less the held-out calibration
images). Until the detector is trusted they are set against the whole
unlabeled batch, "possibly synthetic" and weighted down (a PU bootstrap);
once trusted, against a class-balanced draw from the CSQueue, requested
one step ahead and read by :class:`~.draws.QueueDraws`. Plain PyTorch
beside :class:`~.detector.Detector` and :class:`~.csqueue.CSQueue`: usable
and tested without semilearn.
"""
import time
from typing import TYPE_CHECKING, Optional, Tuple

import torch
import torch.distributed as dist

from .config import RSMatchConfig
from .csqueue import CSQueue
from .detector import Detector

if TYPE_CHECKING:  # draws.py reads images through the USB-facing helpers; the trainer only calls it
    from .draws import QueueDraws

_DEFAULTS = RSMatchConfig()


class DetectorTrainer:
    """One detector step per training step, on PU bootstrap batches or on queue batches.

    Args:
        detector: the Detector trained (None: RSMatch without a detector; only the
            queue draws' state is kept, so that every checkpoint has the same entries).
        queue: the CSQueue the synthetic examples are drawn from once trusted.
        draws: holds the requested draw and reads its images (:class:`~.draws.QueueDraws`).
        batch_size: queue images per step (per rank).
        seed: seeds the private generator of the queue draws and their augmentations,
            so the global RNG advances as without RSMatch.
        use_queue: False: the PU bootstrap throughout.
        pu_mass, pu_pos_weight: the bootstrap's weighting of the unlabeled side.
        ulb_real: this many lowest-scoring unlabeled samples judged real join the real side.
    """

    def __init__(self, detector: Optional[Detector], queue: CSQueue, draws: "QueueDraws", batch_size: int, seed: int,
                 use_queue: bool = _DEFAULTS.use_queue, pu_mass: float = _DEFAULTS.pu_mass,
                 pu_pos_weight: float = _DEFAULTS.pu_pos_weight, ulb_real: int = _DEFAULTS.detector_ulb_real):
        self.detector = detector
        self.queue = queue
        self.draws = draws
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.use_queue = use_queue
        self.pu_mass = pu_mass
        self.pu_pos_weight = pu_pos_weight
        self.ulb_real = ulb_real
        self.draw_s = 0.0  # training-thread time of the last step's queue draw

    def step(self, x_real: torch.Tensor, x_ulb_w: torch.Tensor, scores: torch.Tensor, threshold: float,
             trusted: bool) -> Tuple[float, float]:
        """One detector step; returns its (loss, accuracy on its batch).

        ``x_real``: the labeled images it trains on as real; ``x_ulb_w`` the
        unlabeled batch's weak views and ``scores`` their scores, judged real
        below ``threshold``; ``trusted``: draw the synthetic side from the queue.
        """
        from_queue = self.use_queue and trusted
        self.draw_s = 0.0
        if self.ulb_real > 0:
            # The unlabeled samples it is surest are real widen the real side beyond the few labeled
            # images, in the bootstrap too (off by default: on digits it fed the bootstrap's errors back).
            judged_real = (scores < threshold).nonzero().flatten()
            surest = judged_real[torch.argsort(scores[judged_real], stable=True)[:self.ulb_real]]
            x_real = torch.cat((x_real, x_ulb_w[surest.to(x_ulb_w.device)]))
        num_real = x_real.shape[0]
        if from_queue:
            # A fixed-size draw, weighted to the real side's mass (fewer real images when some are held out).
            start = time.perf_counter()
            x_syn = self.take(self.batch_size).to(x_real.device)
            self.draw_s = time.perf_counter() - start
            syn_weight = num_real / x_syn.shape[0]
        else:
            # PU bootstrap: the unlabeled batch stands in for "synthetic", carrying pu_mass times
            # the real side's mass. An image as frequent among labeled as among unlabeled data
            # (a real one) then scores pu_mass * pi_real / (1 + pu_mass * pi_real), below the
            # threshold with a margin even when nothing is synthetic (pi_real = 1).
            x_syn = x_ulb_w
            syn_weight = self.pu_pos_weight if self.pu_pos_weight > 0 else self.pu_mass * num_real / x_syn.shape[0]
        num_syn = x_syn.shape[0]
        device = x_real.device
        target = torch.cat((torch.zeros(num_real, device=device), torch.ones(num_syn, device=device)))
        weight = torch.cat((torch.ones(num_real, device=device), torch.full((num_syn,), syn_weight, device=device)))
        out = self.detector.step(torch.cat((x_real, x_syn)), target, weight)
        if from_queue:
            start = time.perf_counter()
            self.request(self.batch_size)  # the next step's, read while it runs
            self.draw_s += time.perf_counter() - start
        return out

    def take(self, n: int) -> torch.Tensor:
        """This step's ``n`` queue images: the draw requested at the end of the previous step.

        The first trusted step has none yet and draws now. Draws are therefore
        made from the queue as it stood one step earlier, so that their images
        can be read ahead, while this step's passes run.
        """
        if not self.draws.has_request():
            self.request(n)
        return self.draws.take()

    def request(self, n: int) -> None:
        """Draw ``n`` class-balanced queue indices and a seed for their augmentation; submit them.

        Every rank holds the same queue and generator state, draws ``n`` per
        rank for all ranks and keeps its own slice, so ranks see different images.
        """
        world, rank = 1, 0
        if dist.is_available() and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
        index, _ = self.queue.sample(n * world, generator=self.generator)
        seed = int(torch.randint(2 ** 62, (1,), generator=self.generator))
        self.draws.request(index[rank * n:(rank + 1) * n], seed)

    def state_dict(self) -> dict:
        """Checkpoint entries (in ``rsmatch_state``): ``queue_generator``, ``queue_draw`` (the pending draw)."""
        return {"queue_generator": self.generator.get_state(), "queue_draw": self.draws.pending()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["queue_generator"])
        self.draws.restore(state["queue_draw"])
