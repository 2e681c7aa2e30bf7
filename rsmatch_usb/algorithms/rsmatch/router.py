"""RSMatch's routing policy: which unlabeled samples are judged synthetic, and from when on they are routed.

:class:`Router` holds the labeled images held out of the detector's training
and their latest scores (the calibration floor), the routing threshold that
floor raises, the queue admission score, and the trust gate: the detector
routes nothing until enough class sub-queues of the CSQueue are full. Plain
PyTorch, like :class:`~.csqueue.CSQueue` and :class:`~.detector.Detector`:
usable and tested without semilearn.
"""
import math
from typing import Iterable, Tuple

import torch
import torch.distributed as dist

from .config import RSMatchConfig
from .csqueue import CSQueue

_DEFAULTS = RSMatchConfig()


class Router:
    """Calibration, routing threshold and trust gate of RSMatch's detector.

    Args:
        queue: the CSQueue whose fill opens the trust gate; the router pushes into it.
        calib_index: sorted labeled-set positions held out of the detector's training
            (:meth:`hold_out`); their latest scores set the calibration floor.
        detector_threshold: the lowest routing threshold.
        calib_quantile: the floor is this quantile of the held-out images' latest scores.
        queue_min_score: the lowest score that admits a sample into the queue.
        queue_min_fill, queue_gate_share: the gate opens once ``queue_gate_share`` of the
            class sub-queues hold ``queue_min_fill`` images each.
    """

    def __init__(self, queue: CSQueue, calib_index: torch.Tensor,
                 detector_threshold: float = _DEFAULTS.detector_threshold,
                 calib_quantile: float = _DEFAULTS.detector_calib_quantile,
                 queue_min_score: float = _DEFAULTS.queue_min_score,
                 queue_min_fill: int = _DEFAULTS.queue_min_fill,
                 queue_gate_share: float = _DEFAULTS.queue_gate_share):
        self.queue = queue
        self.calib_index = calib_index
        self.calib_scores = torch.full((len(calib_index),), float("nan"))
        self.detector_threshold = detector_threshold
        self.calib_quantile = calib_quantile
        self.queue_min_score = queue_min_score
        self.queue_min_fill = queue_min_fill
        self.queue_gate_share = queue_gate_share
        # False while the detector is bootstrapped; set once, when the gate opens.
        self.trusted = False

    @staticmethod
    def hold_out(targets: Iterable[int], per_class: int, num_classes: int) -> torch.Tensor:
        """Labeled-set positions held out of the detector's training: the first ``per_class`` of each class."""
        targets = torch.as_tensor(list(targets)).long()
        held = [(targets == c).nonzero().flatten()[:per_class] for c in range(num_classes)]
        return torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)

    # ------------------------------------------------------------------ calibration
    def held_out(self, idx_lb: torch.Tensor) -> torch.Tensor:
        """Which samples of a labeled batch (dataset indices ``idx_lb``, on the CPU) are held out: a bool mask."""
        if len(self.calib_index) == 0:
            return torch.zeros(len(idx_lb), dtype=torch.bool)
        pos = torch.searchsorted(self.calib_index, idx_lb).clamp(max=len(self.calib_index) - 1)
        return self.calib_index[pos] == idx_lb

    @torch.no_grad()
    def record(self, idx_lb: torch.Tensor, held: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep ``scores``, the latest scores of the batch's held-out images (``held``), as their calibration.

        Under DDP each held-out image's score is the largest any rank gave it
        this step, so every rank keeps the same threshold; every rank must then
        call this each step, with the scores on the detector's device (the
        all-reduce runs there: NCCL needs the GPU).
        """
        if len(self.calib_index) == 0:
            return
        step = torch.full_like(self.calib_scores, -1.0)
        step[torch.searchsorted(self.calib_index, idx_lb[held])] = scores.float().cpu()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            step_dev = step.to(scores.device)
            dist.all_reduce(step_dev, op=dist.ReduceOp.MAX)
            step = step_dev.cpu()
        seen = step >= 0
        self.calib_scores[seen] = step[seen]

    @property
    def calibration_floor(self) -> float:
        """The ``calib_quantile`` of the held-out labeled images' latest scores (-inf before any).

        With the default quantile 1 (the maximum), a real image the detector
        never trained on scores above it about as rarely as above the maximum of
        ``n`` exchangeable real scores, 1 / (n + 1), whatever the detector has
        learnt to find; a lower quantile lets one odd real image not set it.
        """
        seen = self.calib_scores[~self.calib_scores.isnan()]
        return float(torch.quantile(seen, self.calib_quantile)) if len(seen) else float("-inf")

    @property
    def routing_threshold(self) -> float:
        """The score at or above which a sample is judged synthetic: ``detector_threshold`` or the floor."""
        return max(self.detector_threshold, self.calibration_floor)

    # ------------------------------------------------------------------ routing
    def route(self, scores: torch.Tensor, idx_ulb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(judged, routed)``: 1.0 per sample judged synthetic by its score, and per sample routed as synthetic.

        Routed are the judged ones once the detector is trusted, none before.
        ``idx_ulb`` (the samples' dataset indices) is for subclasses that route by index.
        """
        judged = (scores >= self.routing_threshold).float()
        return judged, judged if self.trusted else torch.zeros_like(judged)

    # ------------------------------------------------------------------ queue and trust gate
    @property
    def full_sub_queues(self) -> int:
        """How many class sub-queues hold ``queue_min_fill`` images or more."""
        return int((self.queue.fill >= self.queue_min_fill).sum())

    @property
    def queue_ready(self) -> bool:
        """True once ``queue_gate_share`` of the class sub-queues hold ``queue_min_fill`` images each."""
        # ceil(share * C) classes; the epsilon keeps 0.7 * 10 = 7.000000000000001 at 7.
        needed = math.ceil(self.queue_gate_share * self.queue.num_classes - 1e-9)
        return len(self.queue) > 0 and self.full_sub_queues >= needed

    def push(self, idx_ulb: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor) -> bool:
        """Push this step's candidates into the queue; True when that opens the trust gate.

        Samples scoring below ``queue_min_score`` or the calibration floor
        (judged real by a calibrated detector) stay out of the queue.
        """
        self.queue.update(idx_ulb, labels, scores, min_score=max(self.queue_min_score, self.calibration_floor))
        if self.trusted or not self.queue_ready:
            return False
        self.trusted = True
        return True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Checkpoint entries (in ``rsmatch_state``): ``detector_trusted``, ``calib_scores`` (tensors)."""
        return {"detector_trusted": torch.tensor(self.trusted), "calib_scores": self.calib_scores.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.trusted = bool(state["detector_trusted"])
        self.calib_scores.copy_(state["calib_scores"])
