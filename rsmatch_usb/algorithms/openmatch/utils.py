"""OpenMatch's losses and outlier score on one-vs-all (OVA) logits, as pure functions.

The OVA layout and OpenMatch's labeled OVA loss are in :mod:`rsmatch_usb.algorithms.ova`
(IOMatch's multi-binary head shares them).
"""
from __future__ import annotations

import torch

from ..ova import INLIER, OUTLIER, ova_inlier_probs, ova_log_probs, ova_loss  # noqa: F401  (re-exported)


def ova_entropy_loss(logits_ova: torch.Tensor) -> torch.Tensor:
    """Open-set entropy minimisation: mean binary entropy over classes and samples."""
    log_p = ova_log_probs(logits_ova)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def socr_loss(logits_ova_1: torch.Tensor, logits_ova_2: torch.Tensor) -> torch.Tensor:
    """Soft open-set consistency between two views (OpenMatch, Eq. 3).

    ``sum_j sum_t (p^j_t(x1) - p^j_t(x2))^2`` on the OVA probabilities, without
    sharpening or a stop-gradient (both views are trained), averaged over the batch.
    """
    p1 = ova_log_probs(logits_ova_1).exp()
    p2 = ova_log_probs(logits_ova_2).exp()
    return ((p1 - p2) ** 2).sum(dim=(1, 2)).mean()


def ova_outlier_score(logits: torch.Tensor, logits_ova: torch.Tensor) -> torch.Tensor:
    """p^k(outlier | x) of the class k that the closed-set classifier predicts.

    OpenMatch treats a sample as an inlier when this is below 0.5; it is also
    the score ranked for outlier-detection AUROC.
    """
    pred = logits.argmax(dim=1, keepdim=True)
    outlier = ova_log_probs(logits_ova)[:, OUTLIER, :].exp()
    return outlier.gather(1, pred).squeeze(1)
