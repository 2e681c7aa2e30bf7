"""RSMatch (Wang, Mao, Xiang, Yamasaki 2024, arXiv 2405.16930) as a USB algorithm, on any of four bases.

The paper adds to FixMatch a lightweight real-vs-synthetic detector trained
alongside the classifier, a class-wise synthetic queue (CSQueue) that mines its
synthetic training examples from the unlabeled data, and a dummy head that
learns from the unlabeled samples judged synthetic so that they do not pull
the real head's decision boundaries. :class:`RSMixin` adds these three
components to a USB algorithm class without copying its train step: the base
computes its losses with its own thresholding/weighting hooks, the mixin
scales the base's unlabeled mask by "judged real" and trains the dummy head
on the rest. ``algorithm: rsmatch`` with ``base_algorithm`` (fixmatch, the
paper's; flexmatch, freematch, softmatch) picks the base. There is no
official code; every unstated detail is our choice, documented in
rsmatch-usb's docs/rsmatch.md and configurable below.
"""
import dataclasses

import torch
import torch.nn as nn
from semilearn.algorithms.fixmatch import FixMatch
from semilearn.algorithms.flexmatch import FlexMatch
from semilearn.algorithms.freematch import FreeMatch
from semilearn.algorithms.softmatch import SoftMatch
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.utils import ALGORITHMS

from rsmatch_usb.errors import UserError
from rsmatch_usb.heads import ExtraHeadsMixin

from ..utils import CPUInputsMixin, ExtraStateMixin
from .config import RSMatchConfig
from .csqueue import CSQueue
from .detector import Detector
from .draws import QueueDraws
from .hooks import DetectorPlacementHook, RecordingPseudoLabelingHook, RoutedMaskingHook, replace_hook
from .router import Router
from .trainer import DetectorTrainer

# Offsets from args.seed for RSMatch's private RNG streams (the mixin's heads use +7919).
_DETECTOR_SEED_OFFSET = 15485863
_QUEUE_SEED_OFFSET = 104729


class RSMixin(CPUInputsMixin, ExtraStateMixin, ExtraHeadsMixin):
    """Adds RSMatch's detector, CSQueue and dummy head to a USB algorithm; mix in before the base.

    A thin adapter over plain components: :class:`~.router.Router` (calibration,
    routing threshold, trust gate), :class:`~.trainer.DetectorTrainer` (the
    detector's batches and step), :class:`~.detector.Detector` and
    :class:`~.csqueue.CSQueue`. Each train step (1) scores the weak views of
    the unlabeled batch and the batch's held-out labeled images with the
    detector's EMA copy, in one pass; samples scoring at or above the routing
    threshold are judged synthetic (before the detector is trusted, none are
    routed); (2) runs the base's train step unchanged, except that its
    MaskingHook is wrapped (:class:`~.hooks.RoutedMaskingHook`): the mask is
    multiplied by "judged real", so the real head's unlabeled loss sees only
    judged-real samples; (3) adds the dummy head's loss on the judged-synthetic
    samples, with the base's pseudo-labels and full mask; (4) pushes the
    top-scoring samples into the CSQueue and takes one detector step on its own
    optimizer (the classifier's step stays USB's ParamUpdateHook). With
    ``use_detector: False`` the run is the base algorithm, step for step.
    """

    # The queue and the calibration use the sample indices on the CPU; the base gets its own device copy.
    cpu_inputs = ("idx_ulb", "idx_lb")
    # Whether the base's train step takes idx_ulb (FlexMatch's per-sample thresholds do).
    base_takes_idx_ulb = False
    # The routing policy (a subclass may route otherwise).
    router_class = Router

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        super().__init__(args, net_builder, tb_log, logger)
        self.init_rs(RSMatchConfig.from_args(args))

    def init_rs(self, cfg: RSMatchConfig) -> None:
        self.rs = checked(cfg)
        self.csqueue = CSQueue(self.num_classes, cfg.queue_size, cfg.queue_push_classes, cfg.queue_push_per_class)
        # Labeled images held out of the detector's training; their latest scores calibrate it.
        calib_index = Router.hold_out(self.dataset_dict["train_lb"].targets, cfg.detector_calib_per_class,
                                      self.num_classes)
        self.router = self.router_class(self.csqueue, calib_index, cfg.detector_threshold,
                                        cfg.detector_calib_quantile, cfg.queue_min_score, cfg.queue_min_fill,
                                        cfg.queue_gate_share)
        self.detector = None
        if cfg.use_detector:
            self.detector = Detector(cfg.detector_width, cfg.detector_lr, cfg.detector_wd, cfg.detector_ema_m,
                                     seed=self.args.seed + _DETECTOR_SEED_OFFSET, ema_warmup=cfg.detector_ema_warmup,
                                     input=cfg.detector_input)
        # Queue draws and their augmentations use a private stream, so the global RNG (data order,
        # augmentation) advances exactly as in the base.
        self.trainer = DetectorTrainer(self.detector, self.csqueue, QueueDraws(self.dataset_dict["train_ulb"]),
                                       self.args.batch_size, self.args.seed + _QUEUE_SEED_OFFSET, cfg.use_queue,
                                       cfg.pu_mass, cfg.pu_pos_weight, cfg.detector_ulb_real)

    def build_extra_heads(self, num_features):
        # Built whatever the switches, so every RSMatch checkpoint has the same entries.
        return {"dummy": nn.Linear(num_features, self.num_classes)}

    def set_hooks(self):
        super().set_hooks()
        replace_hook(self, "MaskingHook", RoutedMaskingHook(self.hooks_dict["MaskingHook"]))
        replace_hook(self, "PseudoLabelingHook", RecordingPseudoLabelingHook())
        self.register_hook(DetectorPlacementHook(), "DetectorPlacementHook", "VERY_HIGH")

    # ------------------------------------------------------------------ train step
    def train_step(self, x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s, idx_lb=None):
        inputs = dict(x_lb=x_lb, y_lb=y_lb, x_ulb_w=x_ulb_w, x_ulb_s=x_ulb_s)
        if self.base_takes_idx_ulb:
            # Where USB's process_batch would put it: FlexMatch indexes a tensor on the model's device with it.
            inputs["idx_ulb"] = idx_ulb.to(x_lb.device)
        if self.detector is None:
            return super().train_step(**inputs)

        idx_lb = torch.full((len(x_lb),), -1) if idx_lb is None else idx_lb
        held = self.router.held_out(idx_lb)
        held_dev = held.to(x_lb.device)
        # The unlabeled batch and the held-out labeled images in one pass of the EMA scorer (eval mode:
        # each image's score is its own).
        scores = self.detector.score(torch.cat((x_ulb_w, x_lb[held_dev])))
        scores, calib = scores[:len(x_ulb_w)], scores[len(x_ulb_w):]
        self.router.record(idx_lb, held, calib)
        threshold = self.router.routing_threshold
        judged, syn = self.router.route(scores, idx_ulb)
        masking, labeling = self.hooks_dict["MaskingHook"], self.hooks_dict["PseudoLabelingHook"]
        masking.mask, labeling.targets, masking.real = None, None, 1 - syn
        try:
            out_dict, log_dict = super().train_step(**inputs)
        finally:
            masking.real = None
        mask, pseudo_label = masking.mask, labeling.targets
        if mask is None or pseudo_label is None:
            raise RuntimeError(f"{type(self).__name__}: the base train step did not call MaskingHook and "
                               "PseudoLabelingHook; RSMatch cannot route its unlabeled loss")

        logged = {"util_ratio": mask.float().mean()}
        if self.rs.use_dummy_head:
            with self.amp_cm():
                logged["syn_unsup_loss"] = self.dummy_head_loss(out_dict["feat"], pseudo_label, mask, syn)
            out_dict["loss"] = out_dict["loss"] + self.rs.lambda_syn * logged["syn_unsup_loss"]
            logged["total_loss"] = out_dict["loss"]
        # The queue's pseudo-labels are the base's weak-view predictions.
        queue_labels = pseudo_label.argmax(dim=-1) if pseudo_label.dim() > 1 else pseudo_label
        det_loss, det_acc = self.detector_step(x_lb[~held_dev], idx_ulb, x_ulb_w, queue_labels, scores)
        # One device-to-host copy for the logged tensors (the log keeps the first version's key order).
        logged["syn_ratio"] = judged.mean()
        logged = dict(zip(logged, torch.stack([v.detach().float() for v in logged.values()]).tolist()))
        syn_ratio = logged.pop("syn_ratio")
        log_dict = self.process_log_dict(log_dict, **logged, detector_loss=det_loss, detector_acc=det_acc,
                                         syn_ratio=syn_ratio, routing_threshold=threshold,
                                         detector_trusted=float(self.router.trusted),
                                         queue_fill_min=float(self.csqueue.fill.min()),
                                         queue_fill_mean=self.csqueue.fill.float().mean().item(),
                                         queue_draw_ms=1000 * self.trainer.draw_s)
        return out_dict, log_dict

    def dummy_head_loss(self, feats, pseudo_label, mask, syn):
        """The base's consistency loss on the dummy head, for the samples judged synthetic (``syn`` = 1).

        Targets are the base's pseudo-labels and mask (``dummy_pseudo_label: real``,
        the real head's weak-view prediction), or the dummy head's own weak-view
        prediction thresholded at ``p_cutoff`` (``dummy_pseudo_label: dummy``).
        """
        if self.rs.dummy_pseudo_label == "real":
            logits_s = self.extra_heads(feats["x_ulb_s"])["dummy"]
        else:
            both = torch.cat((feats["x_ulb_w"].detach(), feats["x_ulb_s"]))
            logits_w, logits_s = self.extra_heads(both)["dummy"].chunk(2)
            probs_w = self.compute_prob(logits_w.detach())
            mask = probs_w.amax(dim=-1).ge(self.rs.p_cutoff).to(probs_w.dtype)
            pseudo_label = self.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs_w,
                                          use_hard_label=self.use_hard_label, T=self.T, softmax=False)
        return self.consistency_loss(logits_s, pseudo_label, "ce", mask=mask * syn)

    def detector_step(self, x_lb, idx_ulb, x_ulb_w, pseudo_ulb, scores):
        """Push this step's candidates into the queue, then step the detector; returns its (loss, accuracy).

        ``x_lb`` are the labeled images the detector trains on as real (the held-out ones removed).
        """
        if self.router.push(idx_ulb, pseudo_ulb, scores):
            self.print_fn(f"RSMatch: {self.router.full_sub_queues} of {self.num_classes} class sub-queues hold "
                          f">= {self.rs.queue_min_fill} images at iteration {self.it + 1}; the detector now routes "
                          "unlabeled samples" + (" and trains on the queue" if self.rs.use_queue else ""))
        return self.trainer.step(x_lb, x_ulb_w, scores, self.router.routing_threshold, self.router.trusted)

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self):
        state = dict(self.detector.state_dict()) if self.detector is not None else {}
        state["csqueue"] = self.csqueue.state_dict()
        state["rsmatch_state"] = {**self.router.state_dict(), **self.trainer.state_dict()}
        return state

    def load_extra_state(self, checkpoint):
        if self.detector is not None:
            # On the backbone's device first, so the optimizer state is loaded onto it too.
            self.detector.to(next(self.model.parameters()).device)
            self.detector.load_state_dict(checkpoint)
        self.csqueue.load_state_dict(checkpoint["csqueue"])
        self.router.load_state_dict(checkpoint["rsmatch_state"])
        self.trainer.load_state_dict(checkpoint["rsmatch_state"])

    @classmethod
    def get_argument(cls):
        """RSMatch's arguments, then the base's (each name once)."""
        return _merge_arguments(rs_arguments(), super().get_argument())


def checked(cfg: RSMatchConfig) -> RSMatchConfig:
    """``cfg``, or an error naming its first setting out of range."""
    problems = cfg.problems()
    if problems:
        raise UserError(problems[0])
    return cfg


def rs_arguments(diagnostic: bool = False) -> list:
    """The arguments RSMatch adds to its base algorithm's: :class:`RSMatchConfig`'s fields, in its order.

    The diagnostic keys only with ``diagnostic``.
    """
    arguments = []
    for f in dataclasses.fields(RSMatchConfig):
        if f.metadata["diagnostic"] and not diagnostic:
            continue
        help_text = f.metadata["help"]
        if "choices" in f.metadata:
            help_text += ": " + ", ".join(f.metadata["choices"])
        arguments.append(SSL_Argument(f"--{f.name}", str2bool if f.type is bool else f.type, f.default, help_text))
    return arguments


def _merge_arguments(*lists):
    """The arguments of several lists, each name once (the first list that has it wins)."""
    out, seen = [], set()
    for arguments in lists:
        for argument in arguments:
            if argument.name not in seen:
                seen.add(argument.name)
                out.append(argument)
    return out


class RSFixMatch(RSMixin, FixMatch):
    """RSMatch as in the paper: FixMatch with a detector, a CSQueue and a dummy head."""


class RSFlexMatch(RSMixin, FlexMatch):
    """RSMatch on FlexMatch (curriculum per-class thresholds)."""

    base_takes_idx_ulb = True


class RSFreeMatch(RSMixin, FreeMatch):
    """RSMatch on FreeMatch (self-adaptive thresholds, fairness entropy term)."""


class RSSoftMatch(RSMixin, SoftMatch):
    """RSMatch on SoftMatch (truncated-Gaussian sample weights, uniform distribution alignment)."""


RS_VARIANTS = {"fixmatch": RSFixMatch, "flexmatch": RSFlexMatch, "freematch": RSFreeMatch,
               "softmatch": RSSoftMatch}


@ALGORITHMS.register("rsmatch")
class RSMatch:
    """``algorithm: rsmatch``: builds the RS variant of ``base_algorithm`` (default fixmatch).

    USB's registry calls this with the run's args; the object returned is an
    instance of one of :attr:`variants` (:class:`RSFixMatch`, :class:`RSFlexMatch`,
    :class:`RSFreeMatch`, :class:`RSSoftMatch`). Its arguments are RSMatch's and
    every supported base's.
    """

    variants = RS_VARIANTS

    def __new__(cls, args, net_builder, tb_log=None, logger=None):
        # Checked here too, before the base builds its model and data.
        cfg = checked(RSMatchConfig.from_args(args))
        return cls.variants[cfg.base_algorithm](args, net_builder, tb_log, logger)

    @classmethod
    def get_argument(cls):
        return _merge_arguments(*(variant.get_argument() for variant in cls.variants.values()))
