"""IOMatch's open-set targets and losses as pure functions.

The multi-binary classifier uses OpenMatch's one-vs-all layout and loss
(:mod:`rsmatch_usb.algorithms.ova`): IOMatch trains it on labeled
data exactly as OpenMatch trains its OVA head.
"""
from __future__ import annotations

import torch

from ..ova import ova_inlier_probs, ova_loss  # noqa: F401  (re-exported: IOMatch's L_mb)


def open_set_targets(probs: torch.Tensor, inlier_probs: torch.Tensor) -> torch.Tensor:
    """(C+1)-way open-set targets from closed-set probabilities and binary inlier probabilities.

    ``q_k = p_k * s_k`` for each seen class k, and the extra "outlier" class
    gets the rest, ``q_{C+1} = sum_k p_k * (1 - s_k)``: a sample is an inlier of
    class k when the closed-set classifier picks k and k's binary classifier
    accepts it. Rows sum to 1 whenever ``probs`` rows do.
    """
    inlier_part = probs * inlier_probs
    outlier_part = (probs * (1.0 - inlier_probs)).sum(dim=1, keepdim=True)
    return torch.cat([inlier_part, outlier_part], dim=1)


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against soft targets."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)
