"""OpenMatch's one-vs-all (OVA) losses as pure functions of logits.

Layout of OVA logits: shape ``(B, 2 * C)``, read as ``(B, 2, C)``: row 0 holds
each class's "outlier" logit and row 1 its "inlier" logit, and every class
``j`` is a binary classifier (a softmax over its two logits).
"""
import torch
import torch.nn.functional as F

OUTLIER, INLIER = 0, 1


def ova_log_probs(logits_ova):
    """Per-class binary log-probabilities, shape ``(B, 2, C)``."""
    return F.log_softmax(logits_ova.view(logits_ova.size(0), 2, -1), dim=1)


def ova_inlier_probs(logits_ova):
    """p^j(inlier | x) for every class j, shape ``(B, C)``."""
    return ova_log_probs(logits_ova)[:, INLIER, :].exp()


def ova_loss(logits_ova, targets):
    """OVA loss on labeled data (OpenMatch, Eq. 1).

    ``-log p^y(inlier|x)`` for the sample's own class plus, of the other
    classes, only the hardest negative ``max_{j != y} -log p^j(outlier|x)``
    (the paper's choice: it sharpens the inlier/outlier boundary).
    Averaged over the batch.
    """
    log_p = ova_log_probs(logits_ova)
    num_classes = log_p.size(2)
    positive = F.one_hot(targets, num_classes).bool()
    pos_loss = -log_p[:, INLIER, :][positive]
    neg_loss = (-log_p[:, OUTLIER, :]).masked_fill(positive, float("-inf")).max(dim=1).values
    return (pos_loss + neg_loss).mean()


def ova_entropy_loss(logits_ova):
    """Open-set entropy minimisation: mean binary entropy over classes and samples."""
    log_p = ova_log_probs(logits_ova)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def socr_loss(logits_ova_1, logits_ova_2):
    """Soft open-set consistency between two views (OpenMatch, Eq. 3).

    ``sum_j sum_t (p^j_t(x1) - p^j_t(x2))^2`` on the OVA probabilities, without
    sharpening or a stop-gradient (both views are trained), averaged over the batch.
    """
    p1 = ova_log_probs(logits_ova_1).exp()
    p2 = ova_log_probs(logits_ova_2).exp()
    return ((p1 - p2) ** 2).sum(dim=(1, 2)).mean()


def ova_outlier_score(logits, logits_ova):
    """p^k(outlier | x) of the class k that the closed-set classifier predicts.

    OpenMatch treats a sample as an inlier when this is below 0.5; it is also
    the score ranked for outlier-detection AUROC.
    """
    pred = logits.argmax(dim=1, keepdim=True)
    outlier = ova_log_probs(logits_ova)[:, OUTLIER, :].exp()
    return outlier.gather(1, pred).squeeze(1)
