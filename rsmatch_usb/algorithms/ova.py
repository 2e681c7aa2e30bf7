"""One-vs-all (OVA) heads as pure functions of logits: OpenMatch's OVA head, IOMatch's multi-binary head.

Layout of OVA logits: shape ``(B, 2 * C)``, read as ``(B, 2, C)``: row 0 holds
each class's "outlier" logit and row 1 its "inlier" logit, and every class
``j`` is a binary classifier (a softmax over its two logits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OUTLIER, INLIER = 0, 1


def ova_log_probs(logits_ova: torch.Tensor) -> torch.Tensor:
    """Per-class binary log-probabilities, shape ``(B, 2, C)``."""
    return F.log_softmax(logits_ova.view(logits_ova.size(0), 2, -1), dim=1)


def ova_inlier_probs(logits_ova: torch.Tensor) -> torch.Tensor:
    """p^j(inlier | x) for every class j, shape ``(B, C)``."""
    return ova_log_probs(logits_ova)[:, INLIER, :].exp()


def ova_loss(logits_ova: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """OVA loss on labeled data (OpenMatch, Eq. 1).

    ``-log p^y(inlier|x)`` for the sample's own class plus, of the other
    classes, only the hardest negative ``max_{j != y} -log p^j(outlier|x)``
    (the paper's choice: it sharpens the inlier/outlier boundary).
    Averaged over the batch.
    """
    log_p = ova_log_probs(logits_ova)
    num_classes = log_p.size(2)
    positive = F.one_hot(targets, num_classes).bool()
    # A gather, not boolean-mask indexing: the mask's size is data-dependent, which
    # costs a GPU-to-host sync every step.
    pos_loss = -log_p[:, INLIER, :].gather(1, targets[:, None]).squeeze(1)
    neg_loss = (-log_p[:, OUTLIER, :]).masked_fill(positive, float("-inf")).max(dim=1).values
    return (pos_loss + neg_loss).mean()
