"""OpenMatch's inlier selection over the unlabeled set.

Scores with the algorithm's ``outlier_score(logits, head_outputs)`` through
:func:`rsmatch_usb.algorithms.common.score_unlabeled`, which the synthetic-AUROC
hook of every open-set algorithm shares.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from semilearn.core.hooks import Hook

from rsmatch_usb.heads import unwrap

from ..common import score_unlabeled, synthetic_flags


class InlierSelectionHook(Hook):
    """OpenMatch's inlier selection over the whole unlabeled set.

    From iteration ``start_fix`` on, and again every ``select_interval``
    iterations (OpenMatch re-selects once per epoch), every unlabeled sample is
    scored and those with outlier score below 0.5 are kept for FixMatch. Under
    DDP each rank scores a shard and the shards are summed, so all ranks hold
    the same selection. ``inlier_mask`` is saved in checkpoints.
    """

    def __init__(self, num_ulb, start_fix, select_interval):
        super().__init__()
        self.start_fix = start_fix
        self.select_interval = max(1, select_interval)
        self.inlier_mask = torch.zeros(num_ulb, dtype=torch.bool)

    def due(self, it: int) -> bool:
        return it >= self.start_fix and (it - self.start_fix) % self.select_interval == 0

    def before_train_step(self, algorithm: Any) -> None:
        if self.due(algorithm.it):
            self.select(algorithm)

    def select(self, algorithm: Any) -> None:
        num_ulb = len(self.inlier_mask)
        indices = torch.arange(num_ulb)
        distributed = algorithm.distributed and dist.is_initialized()
        if distributed:
            indices = indices[dist.get_rank()::dist.get_world_size()]
        device = next(unwrap(algorithm.model).parameters()).device
        scores = torch.zeros(num_ulb, device=device)
        scores[indices.to(device)] = score_unlabeled(algorithm, indices).to(device)
        if distributed:
            dist.all_reduce(scores)
        self.inlier_mask = (scores < 0.5).cpu()

        message = f"OpenMatch: {int(self.inlier_mask.sum())}/{num_ulb} unlabeled samples selected as inliers"
        flags = synthetic_flags(algorithm)
        if flags is not None and flags.any():
            selected = self.inlier_mask.numpy()
            share = f"{flags[selected].mean():.3f}" if selected.any() else "n/a"
            message += f"; synthetic: {share} of the selected, {flags.mean():.3f} of all"
        algorithm.print_fn(message)
