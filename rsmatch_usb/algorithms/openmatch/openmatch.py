"""OpenMatch (Saito, Kim, Saenko, NeurIPS 2021) as a USB algorithm."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from semilearn.algorithms.hooks import FixedThresholdingHook, PseudoLabelingHook
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.algorithmbase import AlgorithmBase
from semilearn.core.criterions import ce_loss
from semilearn.core.utils import ALGORITHMS
from torch.utils.data import Dataset

from rsmatch_usb.heads import ExtraHeadsMixin

from ..common import CPUInputsMixin, ExtraStateMixin, SyntheticAUROCHook, forward_all
from ..utils import read_sample
from .hooks import InlierSelectionHook
from .utils import ova_entropy_loss, ova_loss, ova_outlier_score, socr_loss


class TwoWeakViews(Dataset):
    """An unlabeled USB dataset whose items also carry a second weak view, ``x_ulb_w_2``.

    OpenMatch's entropy minimisation and soft consistency compare two weakly
    augmented views of each unlabeled image; USB datasets give one weak and one
    strong view. Each image is read and decoded once: the dataset's own
    ``__getitem__`` (its views and extra keys) runs on the decoded image, and
    the second weak view is drawn from it after them, so the random draws are
    those of reading the image twice. Other attributes (``data``,
    ``transform``...) are the dataset's.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __getattr__(self, name):
        if name == "dataset":  # not set yet (e.g. while unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        image, target = read_sample(self.dataset, idx)
        # A shallow copy whose __sample__ hands back the decoded image: the
        # dataset's __getitem__ runs unchanged, and the dataset itself (also
        # read by the selection's scoring) is never modified.
        decoded = copy.copy(self.dataset)
        decoded.__sample__ = lambda _: (image, target)
        item = decoded[idx]
        item["x_ulb_w_2"] = self.dataset.transform(image)
        return item


def ova_head(num_features: int, num_classes: int) -> nn.Linear:
    """One-vs-all classifiers: an inlier and an outlier logit per class, no bias (as in OpenMatch)."""
    head = nn.Linear(num_features, 2 * num_classes, bias=False)
    nn.init.xavier_normal_(head.weight)
    return head


@ALGORITHMS.register("openmatch")
class OpenMatch(CPUInputsMixin, ExtraStateMixin, ExtraHeadsMixin, AlgorithmBase):
    """OpenMatch: FixMatch on the unlabeled samples that a one-vs-all detector accepts as inliers.

    Per step: cross-entropy and the OVA loss (own class + hardest negative) on
    labeled data; OVA entropy minimisation (``lambda_oem``) and soft open-set
    consistency (``lambda_socr``) between two weak views of every unlabeled
    image; from iteration ``start_fix`` on, FixMatch (threshold ``p_cutoff``,
    weight ``ulb_loss_ratio``) on the unlabeled samples whose OVA outlier score
    for their predicted class is below 0.5. That selection is recomputed over
    the whole unlabeled set at ``start_fix`` and every ``select_interval``
    iterations after, and saved in checkpoints.

    Differs from the paper's code (see docs/robust_baselines.md): the FixMatch
    pair comes from the same unlabeled batch, masked by the selection, instead
    of a second loader over the selected subset; selection scores with the
    online network rather than the EMA one; the labeled batch has one view.
    """

    # The indices only index the inlier mask, which lives on the CPU.
    cpu_inputs = ("idx_ulb",)

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        super().__init__(args, net_builder, tb_log, logger)
        self.init(T=args.T, p_cutoff=args.p_cutoff, hard_label=args.hard_label, lambda_oem=args.lambda_oem,
                  lambda_socr=args.lambda_socr, start_fix=args.start_fix)

    def init(self, T: float, p_cutoff: float, hard_label: bool = True, lambda_oem: float = 0.1,
             lambda_socr: float = 0.5, start_fix: int = 10240) -> None:
        self.T = T
        self.p_cutoff = p_cutoff
        self.use_hard_label = hard_label
        self.lambda_oem = lambda_oem
        self.lambda_socr = lambda_socr
        self.start_fix = start_fix

    def build_extra_heads(self, num_features: int) -> Dict[str, nn.Module]:
        return {"ova": ova_head(num_features, self.num_classes)}

    def set_dataset(self) -> Optional[Dict[str, Any]]:
        dataset_dict = super().set_dataset()
        if dataset_dict is not None:
            dataset_dict["train_ulb"] = TwoWeakViews(dataset_dict["train_ulb"])
        return dataset_dict

    def set_hooks(self) -> None:
        self.register_hook(PseudoLabelingHook(), "PseudoLabelingHook")
        self.register_hook(FixedThresholdingHook(), "MaskingHook")
        super().set_hooks()
        self.register_hook(InlierSelectionHook(len(self.dataset_dict["train_ulb"]), self.args.start_fix,
                                               self.args.select_interval), "InlierSelectionHook", "NORMAL")
        self.register_hook(SyntheticAUROCHook(), "SyntheticAUROCHook", "NORMAL")

    @property
    def inlier_mask(self) -> torch.Tensor:
        """Which unlabeled samples the last selection accepted (all False before ``start_fix``)."""
        return self.hooks_dict["InlierSelectionHook"].inlier_mask

    def outlier_score(self, logits: torch.Tensor, head_outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        return ova_outlier_score(logits, head_outputs["ova"])

    def train_step(self, x_lb: torch.Tensor, y_lb: torch.Tensor, idx_ulb: torch.Tensor, x_ulb_w: torch.Tensor,
                   x_ulb_w_2: torch.Tensor, x_ulb_s: torch.Tensor) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        num_lb, num_ulb = y_lb.shape[0], x_ulb_w.shape[0]
        fixmatch_on = self.it >= self.start_fix
        with self.amp_cm():
            # The strong view only feeds FixMatch; before start_fix it is not forwarded.
            parts = [x_lb, x_ulb_w, x_ulb_w_2] + ([x_ulb_s] if fixmatch_on else [])
            logits, feats = forward_all(self, parts)
            logits_ova = self.extra_heads(feats)["ova"]
            logits_x_lb, logits_x_ulb_w = logits[:num_lb], logits[num_lb:num_lb + num_ulb]
            ova_x_lb = logits_ova[:num_lb]
            ova_x_ulb_w, ova_x_ulb_w_2 = logits_ova[num_lb:num_lb + 2 * num_ulb].chunk(2)

            sup_loss = ce_loss(logits_x_lb, y_lb, reduction="mean")
            ova_sup_loss = ova_loss(ova_x_lb, y_lb)
            oem_loss = (ova_entropy_loss(ova_x_ulb_w) + ova_entropy_loss(ova_x_ulb_w_2)) / 2
            socr = socr_loss(ova_x_ulb_w, ova_x_ulb_w_2)

            if fixmatch_on:
                logits_x_ulb_s = logits[num_lb + 2 * num_ulb:]
                probs_x_ulb_w = self.compute_prob(logits_x_ulb_w.detach() / self.T)
                mask = self.call_hook("masking", "MaskingHook", logits_x_ulb=probs_x_ulb_w, softmax_x_ulb=False)
                pseudo_label = self.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs_x_ulb_w,
                                              use_hard_label=self.use_hard_label, T=self.T, softmax=False)
                inlier = self.inlier_mask[idx_ulb].to(mask)
                mask = mask * inlier
                # Mean over the selected inliers: OpenMatch draws its FixMatch batch
                # from the selected subset only, so outliers must not dilute the loss.
                unsup_loss = (ce_loss(logits_x_ulb_s, pseudo_label, reduction="none") * mask).sum() \
                    / inlier.sum().clamp(min=1)
            else:
                mask = torch.zeros(num_ulb, device=logits.device)
                inlier = mask
                unsup_loss = logits.new_zeros(())

            total_loss = (sup_loss + ova_sup_loss + self.lambda_oem * oem_loss + self.lambda_socr * socr
                          + self.lambda_u * unsup_loss)

        out_dict = self.process_out_dict(loss=total_loss)
        log_dict = self.process_log_dict(sup_loss=sup_loss.item(), ova_loss=ova_sup_loss.item(),
                                         oem_loss=oem_loss.item(), socr_loss=socr.item(),
                                         unsup_loss=unsup_loss.item(), total_loss=total_loss.item(),
                                         inlier_ratio=inlier.float().mean().item(),
                                         util_ratio=mask.float().mean().item())
        return out_dict, log_dict

    def extra_state(self) -> Dict[str, Any]:
        return {"inlier_mask": self.inlier_mask.clone()}

    def load_extra_state(self, checkpoint: Dict[str, Any]) -> None:
        mask = checkpoint["inlier_mask"]
        if mask.shape != self.inlier_mask.shape:
            raise ValueError(f"inlier_mask has {mask.numel()} entries but the unlabeled set has "
                             f"{self.inlier_mask.numel()} samples")
        self.hooks_dict["InlierSelectionHook"].inlier_mask = mask.bool().cpu()

    @staticmethod
    def get_argument() -> List[Any]:
        return [
            SSL_Argument("--hard_label", str2bool, True),
            SSL_Argument("--T", float, 1.0),
            SSL_Argument("--p_cutoff", float, 0.95),
            SSL_Argument("--lambda_oem", float, 0.1),
            SSL_Argument("--lambda_socr", float, 0.5),
            SSL_Argument("--start_fix", int, 10240, "iteration from which FixMatch trains on selected inliers"),
            SSL_Argument("--select_interval", int, 1024, "iterations between re-selections of inliers"),
        ]
