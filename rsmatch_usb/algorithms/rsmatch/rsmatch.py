"""RSMatch (Wang, Mao, Xiang, Yamasaki 2024, arXiv 2405.16930): FixMatch for unlabeled data that holds synthetic
images, with nothing marking which.

A lightweight real-vs-synthetic detector trains alongside the classifier on a class-wise synthetic queue
(CSQueue) mined from the unlabeled data; the unlabeled samples it judges synthetic train a dummy head on the
shared backbone instead of the classifier head, so that they shape the features without bending the real
decision boundaries. The paper gives no code; every detail it leaves open is our choice.
"""
import dataclasses

import torch
import torch.nn as nn
from semilearn.algorithms.fixmatch import FixMatch
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.hooks import Hook
from semilearn.core.utils import ALGORITHMS

from rsmatch_usb.heads import ExtraHeadsMixin

from ..utils import QueueDraws
from .csqueue import CSQueue
from .detector import Detector
from .keys import RSMatchConfig
from .router import Router
from .trainer import DetectorTrainer

# Offsets from args.seed for RSMatch's private RNG streams (the extra heads use +7919).
_DETECTOR_SEED_OFFSET, _QUEUE_SEED_OFFSET = 15485863, 104729


class RSMixin(ExtraHeadsMixin):
    """Adds RSMatch's detector, CSQueue and dummy head to a USB algorithm (mix in before it), keeping its train step.

    Each step scores the unlabeled weak views and the held-out labeled images with the detector's EMA copy;
    runs the base's train step with its unlabeled mask multiplied by "judged real" (:class:`RoutedMasking`), while
    the base's threshold statistics still see the whole batch; trains the dummy head on the samples judged
    synthetic with the base's pseudo-labels and mask; pushes the top-scoring samples into the CSQueue and takes
    one detector step. With ``use_detector: False`` it is the base, step for step.
    """

    config_class, router_class, detector_class = RSMatchConfig, Router, Detector

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        super().__init__(args, net_builder, tb_log, logger)
        self.init_rs(self.config_class.from_args(args))

    def init_rs(self, cfg: RSMatchConfig) -> None:
        self.rs = cfg
        self.csqueue = CSQueue(self.num_classes, cfg.queue_size, cfg.queue_push_classes, cfg.queue_push_per_class)
        calib_index = Router.hold_out(self.dataset_dict["train_lb"].targets, cfg.detector_calib_per_class,
                                      self.num_classes)
        self.router = self.router_class(self.csqueue, calib_index, cfg.detector_threshold,
                                        cfg.detector_calib_quantile, cfg.queue_min_score, cfg.queue_min_fill,
                                        cfg.queue_gate_share)
        self.detector = None
        if cfg.use_detector:
            self.detector = self.detector_class(cfg.detector_width, cfg.detector_lr, cfg.detector_wd,
                                                cfg.detector_ema_m, seed=self.args.seed + _DETECTOR_SEED_OFFSET,
                                                ema_warmup=cfg.detector_ema_warmup, input=cfg.detector_input)
        self.trainer = DetectorTrainer(self.detector, self.csqueue, QueueDraws(self.dataset_dict["train_ulb"]),
                                       self.args.batch_size, self.args.seed + _QUEUE_SEED_OFFSET, cfg.use_queue,
                                       cfg.pu_mass, cfg.pu_pos_weight, cfg.detector_ulb_real)

    def build_extra_heads(self, num_features):
        return {"dummy": nn.Linear(num_features, self.num_classes)}  # whatever the switches: the same checkpoints

    def set_hooks(self):
        super().set_hooks()
        mix_into(self.hooks_dict["MaskingHook"], RoutedMasking)
        mix_into(self.hooks_dict["PseudoLabelingHook"], RecordedPseudoLabels)
        self.register_hook(DetectorPlacementHook(), "DetectorPlacementHook", "VERY_HIGH")

    def base_train_step(self, idx_ulb, **inputs):
        """The base's train step (``idx_ulb`` for a base that takes it; FixMatch does not)."""
        return super().train_step(**inputs)

    def train_step(self, x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s, idx_lb=None):
        inputs = dict(x_lb=x_lb, y_lb=y_lb, x_ulb_w=x_ulb_w, x_ulb_s=x_ulb_s)
        if self.detector is None:
            return self.base_train_step(idx_ulb, **inputs)
        idx_lb = torch.full((len(x_lb),), -1) if idx_lb is None else idx_lb.cpu()  # the router's are on the CPU
        held = self.router.held_out(idx_lb)
        held_dev = held.to(x_lb.device)
        # The unlabeled batch and the held-out labeled images in one pass (eval mode: each score is its own).
        scores = self.detector.score(torch.cat((x_ulb_w, x_lb[held_dev])))
        scores, calib = scores[:len(x_ulb_w)], scores[len(x_ulb_w):]
        self.router.record(idx_lb, held, calib)
        threshold = self.router.routing_threshold
        judged, syn = self.router.route(scores, idx_ulb)
        masking, labeling = self.hooks_dict["MaskingHook"], self.hooks_dict["PseudoLabelingHook"]
        masking.real = 1 - syn
        try:
            out_dict, log_dict = self.base_train_step(idx_ulb, **inputs)
        finally:
            masking.real = None
        mask, pseudo_label = masking.mask, labeling.targets
        logged = {"util_ratio": mask.float().mean()}
        if self.rs.use_dummy_head:
            with self.amp_cm():
                logged["syn_unsup_loss"] = self.dummy_head_loss(out_dict["feat"], pseudo_label, mask, syn)
            out_dict["loss"] = out_dict["loss"] + self.rs.lambda_syn * logged["syn_unsup_loss"]
            logged["total_loss"] = out_dict["loss"]
        queue_labels = pseudo_label.argmax(dim=-1) if pseudo_label.dim() > 1 else pseudo_label
        det_loss, det_acc = self.detector_step(x_lb[~held_dev], idx_ulb, x_ulb_w, queue_labels, scores)
        # One device-to-host copy for the logged tensors.
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
        """The base's consistency loss on the dummy head, for the samples judged synthetic (``syn`` = 1)."""
        return self.consistency_loss(self.extra_heads(feats["x_ulb_s"])["dummy"], pseudo_label, "ce", mask=mask * syn)

    def detector_step(self, x_lb, idx_ulb, x_ulb_w, pseudo_ulb, scores):
        """Push this step's candidates into the queue, then step the detector on ``x_lb`` as real; (loss, acc)."""
        if self.router.push(idx_ulb, pseudo_ulb, scores):
            self.print_fn(f"RSMatch: {self.router.full_sub_queues} of {self.num_classes} class sub-queues hold "
                          f">= {self.rs.queue_min_fill} images at iteration {self.it + 1}; the detector now routes "
                          "unlabeled samples" + (" and trains on the queue" if self.rs.use_queue else ""))
        return self.trainer.step(x_lb, x_ulb_w, scores, self.router.routing_threshold, self.router.trusted)

    def get_save_dict(self):
        save_dict = super().get_save_dict()
        save_dict.update(self.detector.state_dict() if self.detector is not None else {})
        save_dict["csqueue"] = self.csqueue.state_dict()
        save_dict["rsmatch_state"] = {**self.router.state_dict(), **self.trainer.state_dict()}
        return save_dict

    def load_model(self, load_path):
        checkpoint = super().load_model(load_path)
        if self.detector is not None:  # on the backbone's device first, so that its optimizer state follows
            self.detector.to(next(self.model.parameters()).device).load_state_dict(checkpoint)
        self.csqueue.load_state_dict(checkpoint["csqueue"])
        self.router.load_state_dict(checkpoint["rsmatch_state"])
        self.trainer.load_state_dict(checkpoint["rsmatch_state"])
        return checkpoint

    @classmethod
    def get_argument(cls):
        """RSMatch's keys, then the base's."""
        own = [SSL_Argument(f"--{f.name}", str2bool if f.type is bool else f.type, f.default, f.metadata["help"])
               for f in dataclasses.fields(cls.config_class)]
        return own + [a for a in super().get_argument() if a.name not in {o.name for o in own}]


class RoutedMasking:
    """Mixed into the base's MaskingHook: keeps its mask and, while :attr:`real` is set, returns it times "judged
    real", so the real head's unlabeled loss (and whatever else the base derives from the mask) sees only the
    samples judged real while the base's threshold statistics still see the whole batch."""
    real = mask = None

    def masking(self, algorithm, *args, **kwargs):
        self.mask = super().masking(algorithm, *args, **kwargs)
        return self.mask if self.real is None else self.mask * self.real


class RecordedPseudoLabels:
    """Mixed into the base's PseudoLabelingHook: keeps its last targets (the dummy head's and the queue's)."""
    targets = None

    def gen_ulb_targets(self, algorithm, *args, **kwargs):
        self.targets = super().gen_ulb_targets(algorithm, *args, **kwargs)
        return self.targets


def mix_into(hook: Hook, mixin: type) -> Hook:
    """``hook`` with ``mixin``'s methods before its own class's; its state, name and priority stay as registered
    (the bases read and write their hooks' state through ``hooks_dict``, e.g. FlexMatch's ``classwise_acc``)."""
    hook.__class__ = type(mixin.__name__ + type(hook).__name__, (mixin, type(hook)), {})
    return hook


class DetectorPlacementHook(Hook):
    """Moves the detector to the backbone's device (under DDP: trains it through DistributedDataParallel)."""

    def before_run(self, algorithm):
        if algorithm.detector is not None:
            device = next(algorithm.model.parameters()).device
            algorithm.detector.to(device)
            if algorithm.distributed and torch.distributed.is_initialized():
                algorithm.detector.distribute([device.index] if device.type == "cuda" else None)


@ALGORITHMS.register("rsmatch")
class RSMatch(RSMixin, FixMatch):
    """``algorithm: rsmatch``: RSMatch as in the paper, on FixMatch."""
