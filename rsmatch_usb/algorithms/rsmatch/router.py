"""RSMatch's routing policy: which unlabeled samples are judged synthetic, and from when on they are routed.

Labeled images held out of the detector's training keep their latest scores; a quantile of those (the
calibration floor) raises the routing threshold, so that a real image is judged synthetic about as rarely
as it outscores them. Nothing is routed until the detector is trusted: once enough class sub-queues are full.
"""
import math
from typing import Iterable, Tuple

import torch
import torch.distributed as dist

from .csqueue import CSQueue
from .keys import RSMatchConfig

_DEFAULTS = RSMatchConfig()


class Router:
    """Calibration, routing threshold and trust gate of the detector; pushes into the CSQueue ``queue``."""

    def __init__(self, queue: CSQueue, calib_index: torch.Tensor,
                 detector_threshold: float = _DEFAULTS.detector_threshold,
                 calib_quantile: float = _DEFAULTS.detector_calib_quantile,
                 queue_min_score: float = _DEFAULTS.queue_min_score, queue_min_fill: int = _DEFAULTS.queue_min_fill,
                 queue_gate_share: float = _DEFAULTS.queue_gate_share):
        self.queue, self.calib_index, self.trusted = queue, calib_index, False
        self.calib_scores = torch.full((len(calib_index),), float("nan"))
        self.detector_threshold, self.calib_quantile = detector_threshold, calib_quantile
        self.queue_min_score, self.queue_min_fill = queue_min_score, queue_min_fill
        self.queue_gate_share = queue_gate_share

    @staticmethod
    def hold_out(targets: Iterable[int], per_class: int, num_classes: int) -> torch.Tensor:
        """Labeled-set positions held out of the detector's training: the first ``per_class`` of each class."""
        targets = torch.as_tensor(list(targets)).long()
        held = [(targets == c).nonzero().flatten()[:per_class] for c in range(num_classes)]
        return torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)

    def held_out(self, idx_lb: torch.Tensor) -> torch.Tensor:
        """Which samples of a labeled batch (dataset indices ``idx_lb``, on the CPU) are held out: a bool mask."""
        if len(self.calib_index) == 0:
            return torch.zeros(len(idx_lb), dtype=torch.bool)
        pos = torch.searchsorted(self.calib_index, idx_lb).clamp(max=len(self.calib_index) - 1)
        return self.calib_index[pos] == idx_lb

    @torch.no_grad()
    def record(self, idx_lb: torch.Tensor, held: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep the scores of the batch's held-out images (``held``) as their latest. Under DDP each keeps the
        largest any rank gave it (every rank calls this each step, with the scores on the detector's device)."""
        if len(self.calib_index) == 0:
            return
        step = torch.full_like(self.calib_scores, -1.0)
        step[torch.searchsorted(self.calib_index, idx_lb[held])] = scores.float().cpu()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            step_dev = step.to(scores.device)
            dist.all_reduce(step_dev, op=dist.ReduceOp.MAX)
            step = step_dev.cpu()
        self.calib_scores[step >= 0] = step[step >= 0]

    @property
    def calibration_floor(self) -> float:
        """The ``calib_quantile`` of the held-out images' latest scores (-inf before any)."""
        seen = self.calib_scores[~self.calib_scores.isnan()]
        return float(torch.quantile(seen, self.calib_quantile)) if len(seen) else float("-inf")

    @property
    def routing_threshold(self) -> float:
        return max(self.detector_threshold, self.calibration_floor)

    def route(self, scores: torch.Tensor, idx_ulb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(judged, routed)``: 1.0 per sample judged synthetic, and per sample routed as synthetic (once trusted).
        ``idx_ulb`` (the samples' dataset indices) is for subclasses that route by index."""
        judged = (scores >= self.routing_threshold).float()
        return judged, judged if self.trusted else torch.zeros_like(judged)

    @property
    def full_sub_queues(self) -> int:
        return int((self.queue.fill >= self.queue_min_fill).sum())

    @property
    def queue_ready(self) -> bool:
        """True once ``queue_gate_share`` of the class sub-queues hold ``queue_min_fill`` images each."""
        # ceil(share * C) classes; the epsilon keeps 0.7 * 10 = 7.000000000000001 at 7.
        needed = math.ceil(self.queue_gate_share * self.queue.num_classes - 1e-9)
        return len(self.queue) > 0 and self.full_sub_queues >= needed

    def push(self, idx_ulb: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor) -> bool:
        """Push the samples scoring at least ``queue_min_score`` and the floor; True when that opens the gate."""
        self.queue.update(idx_ulb, labels, scores, min_score=max(self.queue_min_score, self.calibration_floor))
        opens = not self.trusted and self.queue_ready
        self.trusted = self.trusted or opens
        return opens

    def state_dict(self) -> dict:
        """Checkpoint entries (in ``rsmatch_state``): ``detector_trusted``, ``calib_scores``."""
        return {"detector_trusted": torch.tensor(self.trusted), "calib_scores": self.calib_scores.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.trusted = bool(state["detector_trusted"])
        self.calib_scores.copy_(state["calib_scores"])
