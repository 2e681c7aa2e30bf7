"""IOMatch (Li, Qi, Shi, Gao, ICCV 2023) as a USB algorithm."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.algorithmbase import AlgorithmBase
from semilearn.core.criterions import ce_loss
from semilearn.core.utils import ALGORITHMS

from rsmatch_usb.heads import ExtraHeadsMixin

from ..common import SyntheticAUROCHook, forward_all
from .utils import open_set_targets, ova_inlier_probs, ova_loss, soft_ce


class OpenSetHead(nn.Module):
    """IOMatch's heads on the backbone features.

    A projection MLP (features -> features -> ``proj_size``) feeds the
    multi-binary classifier (an inlier/outlier pair per seen class) and the
    (C+1)-way open-set classifier; returns ``{'mb': (B, 2C), 'open': (B, C+1)}``.
    """

    def __init__(self, num_features, num_classes, proj_size=128):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(num_features, num_features), nn.ReLU(),
                                  nn.Linear(num_features, proj_size))
        self.mb = nn.Linear(proj_size, 2 * num_classes, bias=False)
        self.open = nn.Linear(proj_size, num_classes + 1)
        nn.init.xavier_normal_(self.mb.weight)
        nn.init.xavier_normal_(self.open.weight)
        nn.init.zeros_(self.open.bias)

    def forward(self, feat: torch.Tensor) -> Dict[str, torch.Tensor]:
        z = self.proj(feat)
        return {"mb": self.mb(z), "open": self.open(z)}


@ALGORITHMS.register("iomatch")
class IOMatch(ExtraHeadsMixin, AlgorithmBase):
    """IOMatch: use outliers as one extra class instead of dropping them.

    Labeled: cross-entropy plus the multi-binary (one-vs-all) loss, weight
    ``lambda_mb``. Unlabeled, from the weak view: closed-set probabilities p
    and binary inlier probabilities s give open-set targets q over C+1
    classes (``q_k = p_k s_k``, ``q_{C+1} = sum_k p_k (1 - s_k)``). The
    closed-set classifier learns the strong view's pseudo-label where
    ``max p >= p_cutoff`` and the sample looks like an inlier
    (``q_{C+1} < 0.5``; the paper's double filtering), weight
    ``ulb_loss_ratio``; the open-set classifier learns q on the strong view
    for every sample with ``max q >= q_cutoff``, outliers included, weight
    ``lambda_open``. Evaluation uses the closed-set classifier.

    See docs/robust_baselines.md for what differs from the released code.
    """

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        super().__init__(args, net_builder, tb_log, logger)
        self.init(p_cutoff=args.p_cutoff, q_cutoff=args.q_cutoff, hard_label=args.hard_label,
                  lambda_mb=args.lambda_mb, lambda_open=args.lambda_open)

    def init(self, p_cutoff: float, q_cutoff: float, hard_label: bool = True, lambda_mb: float = 1.0,
             lambda_open: float = 1.0) -> None:
        self.p_cutoff = p_cutoff
        self.q_cutoff = q_cutoff
        self.use_hard_label = hard_label
        self.lambda_mb = lambda_mb
        self.lambda_open = lambda_open

    def build_extra_heads(self, num_features: int) -> Dict[str, nn.Module]:
        return {"open_set": OpenSetHead(num_features, self.num_classes, self.args.proj_size)}

    def set_hooks(self) -> None:
        super().set_hooks()
        self.register_hook(SyntheticAUROCHook(), "SyntheticAUROCHook", "NORMAL")

    def outlier_score(self, logits: torch.Tensor, head_outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Probability of the open-set classifier's extra "outlier" class."""
        return torch.softmax(head_outputs["open_set"]["open"].float(), dim=1)[:, -1]

    def train_step(self, x_lb: torch.Tensor, y_lb: torch.Tensor, x_ulb_w: torch.Tensor,
                   x_ulb_s: torch.Tensor) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        num_lb, num_ulb = y_lb.shape[0], x_ulb_w.shape[0]
        with self.amp_cm():
            logits, feats = forward_all(self, [x_lb, x_ulb_w, x_ulb_s])
            heads = self.extra_heads(feats)["open_set"]
            logits_x_lb = logits[:num_lb]
            logits_x_ulb_w, logits_x_ulb_s = logits[num_lb:].chunk(2)
            mb_x_lb, (mb_x_ulb_w, _) = heads["mb"][:num_lb], heads["mb"][num_lb:].chunk(2)
            _, open_x_ulb_s = heads["open"][num_lb:].chunk(2)

            sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
            mb_loss = ova_loss(mb_x_lb, y_lb)

            with torch.no_grad():
                probs = torch.softmax(logits_x_ulb_w.detach().float(), dim=1)
                targets_q = open_set_targets(probs, ova_inlier_probs(mb_x_ulb_w.detach().float()))
                p_mask = probs.max(dim=1).values.ge(self.p_cutoff)
                in_mask = targets_q[:, -1].lt(0.5)
                closed_mask = (p_mask & in_mask).float()
                open_mask = targets_q.max(dim=1).values.ge(self.q_cutoff).float()
                pseudo_label = probs.argmax(dim=1) if self.use_hard_label else probs

            unsup_loss = (ce_loss(logits_x_ulb_s, pseudo_label, reduction="none") * closed_mask).mean()
            open_loss = (soft_ce(open_x_ulb_s, targets_q) * open_mask).mean()

            total_loss = (sup_loss + self.lambda_mb * mb_loss + self.lambda_u * unsup_loss
                          + self.lambda_open * open_loss)

        out_dict = self.process_out_dict(loss=total_loss)
        log_dict = self.process_log_dict(sup_loss=sup_loss.item(), mb_loss=mb_loss.item(),
                                         unsup_loss=unsup_loss.item(), open_loss=open_loss.item(),
                                         total_loss=total_loss.item(),
                                         util_ratio=closed_mask.mean().item(),
                                         inlier_ratio=in_mask.float().mean().item(),
                                         open_util_ratio=open_mask.mean().item())
        return out_dict, log_dict

    @staticmethod
    def get_argument() -> List[Any]:
        return [
            SSL_Argument("--hard_label", str2bool, True),
            SSL_Argument("--p_cutoff", float, 0.95),
            SSL_Argument("--q_cutoff", float, 0.5),
            SSL_Argument("--lambda_mb", float, 1.0, "weight of the multi-binary (one-vs-all) loss"),
            SSL_Argument("--lambda_open", float, 1.0, "weight of the open-set consistency loss"),
            SSL_Argument("--proj_size", int, 128, "output size of the projection head"),
        ]
