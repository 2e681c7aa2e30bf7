"""RSMatch's detector trainer: what the detector learns from at each step, and the step itself.

Known-real examples are the labeled images (less the held-out calibration images). Until the detector is
trusted they are set against the whole unlabeled batch, "possibly synthetic" and weighted down (a PU
bootstrap); once trusted, against a class-balanced draw from the CSQueue, requested one step ahead.
"""
import time
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

from .csqueue import CSQueue
from .detector import Detector
from .keys import RSMatchConfig

_DEFAULTS = RSMatchConfig()


class DetectorTrainer:
    """One step of ``detector`` (None: only the draws' state is kept) per training step.

    ``draws`` holds the requested queue draw and reads its images (``QueueDraws`` in utils.py); ``seed`` seeds
    the private generator of the draws, so the global RNG advances as without RSMatch; ``ulb_real``: this many
    lowest-scoring unlabeled samples judged real join the real side.
    """

    def __init__(self, detector: Optional[Detector], queue: CSQueue, draws: Any, batch_size: int, seed: int,
                 use_queue: bool = _DEFAULTS.use_queue, pu_mass: float = _DEFAULTS.pu_mass,
                 pu_pos_weight: float = _DEFAULTS.pu_pos_weight, ulb_real: int = _DEFAULTS.detector_ulb_real):
        self.detector, self.queue, self.draws, self.batch_size = detector, queue, draws, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.use_queue, self.pu_mass, self.pu_pos_weight, self.ulb_real = use_queue, pu_mass, pu_pos_weight, ulb_real
        self.draw_s = 0.0  # training-thread time of the last step's queue draw

    def step(self, x_real: torch.Tensor, x_ulb_w: torch.Tensor, scores: torch.Tensor, threshold: float,
             trusted: bool) -> Tuple[float, float]:
        """One step on ``x_real`` as real, and the unlabeled weak views ``x_ulb_w`` (scored ``scores``, judged real
        below ``threshold``) or, once ``trusted``, a queue draw as synthetic; its (loss, accuracy)."""
        from_queue = self.use_queue and trusted
        self.draw_s = 0.0
        if self.ulb_real > 0:
            judged_real = (scores < threshold).nonzero().flatten()
            surest = judged_real[torch.argsort(scores[judged_real], stable=True)[:self.ulb_real]]
            x_real = torch.cat((x_real, x_ulb_w[surest.to(x_ulb_w.device)]))
        num_real = len(x_real)
        if from_queue:
            # A fixed-size draw, weighted to the real side's mass (fewer real images when some are held out).
            start = time.perf_counter()
            x_syn = self.take(self.batch_size).to(x_real.device)
            self.draw_s = time.perf_counter() - start
            syn_weight = num_real / len(x_syn)
        else:
            # The unlabeled batch carries pu_mass times the real side's mass: an image as frequent among labeled
            # as among unlabeled data (a real one) scores about pu_mass / (1 + pu_mass), below the threshold.
            x_syn = x_ulb_w
            syn_weight = self.pu_pos_weight if self.pu_pos_weight > 0 else self.pu_mass * num_real / len(x_syn)
        device = x_real.device
        target = torch.cat((torch.zeros(num_real, device=device), torch.ones(len(x_syn), device=device)))
        weight = torch.cat((torch.ones(num_real, device=device), torch.full((len(x_syn),), syn_weight, device=device)))
        out = self.detector.step(torch.cat((x_real, x_syn)), target, weight)
        if from_queue:
            start = time.perf_counter()
            self.request(self.batch_size)  # the next step's, which can be read while it runs
            self.draw_s += time.perf_counter() - start
        return out

    def take(self, n: int) -> torch.Tensor:
        """This step's ``n`` queue images: those requested at the end of the previous step (the first trusted
        step draws now), so that they can be read ahead."""
        if not self.draws.has_request():
            self.request(n)
        return self.draws.take()

    def request(self, n: int) -> None:
        """Draw ``n`` class-balanced queue indices and an augmentation seed. Every rank holds the same queue and
        generator, draws for all ranks and keeps its own slice."""
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
