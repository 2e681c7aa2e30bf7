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
import math
import time
from inspect import signature

import torch
import torch.distributed as dist
import torch.nn as nn
from semilearn.algorithms.fixmatch import FixMatch
from semilearn.algorithms.flexmatch import FlexMatch
from semilearn.algorithms.freematch import FreeMatch
from semilearn.algorithms.softmatch import SoftMatch
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.utils import ALGORITHMS

from rsmatch_usb.errors import UserError
from rsmatch_usb.heads import ExtraHeadsMixin
from rsmatch_usb.origin import unlabeled_origin

from ..common import CPUInputsMixin, ExtraStateMixin
from .csqueue import CSQueue
from .detector import Detector, count_flops, count_params
from .hooks import DetectorEvalHook, DetectorPlacementHook
from .draws import QueueDraws
from .images import view_settings

# Offsets from args.seed for RSMatch's private RNG streams (the mixin's heads use +7919).
_DETECTOR_SEED_OFFSET = 15485863
_QUEUE_SEED_OFFSET = 104729


class RSMixin(CPUInputsMixin, ExtraStateMixin, ExtraHeadsMixin):
    """Adds RSMatch's detector, CSQueue and dummy head to a USB algorithm; mix in before the base.

    Each train step (1) scores the weak views of the unlabeled batch with the
    detector (an EMA copy): samples scoring >= ``detector_threshold`` are
    judged synthetic (before the detector is trusted, none are); (2) runs the
    base's train step unchanged, except that the mask its MaskingHook returns
    is multiplied by "judged real", so the real head's unlabeled loss (and
    anything else the base computes from the mask) sees only judged-real
    samples; (3) adds the dummy head's loss on the judged-synthetic samples,
    with the base's pseudo-labels and full mask; (4) pushes the top-scoring
    samples of P pseudo-classes into the CSQueue and takes one step of the
    detector on its own optimizer (the classifier's step stays USB's
    ParamUpdateHook): labeled images are real, a class-balanced queue draw is
    synthetic; until every sub-queue holds ``queue_min_fill`` images the
    detector is bootstrapped PU-style instead, labeled (real) against the
    unlabeled batch (possibly synthetic, weighted down). With
    ``use_detector: False`` the run is the base algorithm, step for step.
    """

    # Set only during the base's train step: {"real": 1 - syn, "mask": ..., "pseudo_label": ...}.
    _routing = None
    # The queue and the calibration use the sample indices on the CPU; the base gets its own device copy.
    cpu_inputs = ("idx_ulb", "idx_lb")

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        super().__init__(args, net_builder, tb_log, logger)
        self.init_rs(args)

    def init_rs(self, args):
        self.use_detector = args.use_detector
        self.use_dummy_head = args.use_dummy_head
        self.use_queue = args.use_queue
        self.lambda_syn = args.lambda_syn
        self.dummy_pseudo_label = str(args.dummy_pseudo_label).lower()
        if self.dummy_pseudo_label not in ("real", "dummy"):
            raise UserError(f"dummy_pseudo_label: {args.dummy_pseudo_label!r} is not 'real' or 'dummy'")
        self.dummy_p_cutoff = args.p_cutoff
        self.detector_threshold = args.detector_threshold
        self.calib_per_class = args.detector_calib_per_class
        if self.calib_per_class < 0:
            raise UserError(f"detector_calib_per_class: must be >= 0 (got {self.calib_per_class})")
        self.queue_min_fill = args.queue_min_fill
        self.queue_gate_share = args.queue_gate_share
        if not 0 < self.queue_gate_share <= 1:
            raise UserError(f"queue_gate_share: must lie in (0, 1] (got {self.queue_gate_share})")
        self.calib_quantile = args.detector_calib_quantile
        if not 0 <= self.calib_quantile <= 1:
            raise UserError(f"detector_calib_quantile: must lie in [0, 1] (got {self.calib_quantile})")
        self.queue_min_score = args.queue_min_score
        self.pu_pos_weight = args.pu_pos_weight
        self.pu_mass = args.pu_mass
        if self.pu_mass <= 0:
            raise UserError(f"pu_mass: must be > 0 (got {self.pu_mass})")
        self.detector_ulb_real = args.detector_ulb_real
        # Diagnostic: route by the ground truth instead of the detector (the dummy head's ceiling).
        self.oracle_flags = None
        if args.detector_oracle:
            origin = unlabeled_origin(self)
            if origin is None:
                raise UserError("detector_oracle: the unlabeled set has no is_synthetic flags; use RS-SSL data "
                                "(synthetic_source / synthetic_ratio) or set detector_oracle: False")
            if not self.use_detector:
                raise UserError("detector_oracle: routes in place of the detector; it needs use_detector: True")
            self.oracle_flags = torch.from_numpy(origin[0])
        for key in ("queue_size", "queue_push_classes", "queue_push_per_class"):
            if getattr(args, key) < 1:
                raise UserError(f"{key}: must be >= 1 (got {getattr(args, key)})")
        if not 0 <= self.queue_min_fill <= args.queue_size:
            raise UserError(f"queue_min_fill: must lie in [0, queue_size={args.queue_size}] "
                            f"(got {self.queue_min_fill})")

        self.csqueue = CSQueue(self.num_classes, args.queue_size, args.queue_push_classes,
                               args.queue_push_per_class)
        # Queue draws and their augmentations use this stream only, so the global
        # RNG (data order, augmentation) advances exactly as in the base.
        self.queue_generator = torch.Generator().manual_seed(args.seed + _QUEUE_SEED_OFFSET)
        # Queue images are read and transformed in worker processes, one step ahead.
        if args.queue_workers < 0:
            raise UserError(f"queue_workers: must be >= 0 (got {args.queue_workers})")
        self.queue_draws = QueueDraws(self.dataset_dict["train_ulb"], args.queue_workers)
        self.queue_draw_s = 0.0  # training-thread time of this step's draw (logged)
        # False while the detector is bootstrapped; set once when every sub-queue is full enough.
        self.detector_trusted = False
        self.detector = None
        # Labeled images held out of the detector's training; their latest scores calibrate it.
        self.calib_index = self.calibration_index(self.dataset_dict["train_lb"].targets, self.calib_per_class)
        self.calib_scores = torch.full((len(self.calib_index),), float("nan"))
        if self.use_detector:
            self.detector = Detector(args.detector_width, args.detector_lr, args.detector_wd, args.detector_ema_m,
                                     seed=args.seed + _DETECTOR_SEED_OFFSET, ema_warmup=args.detector_ema_warmup)
            self.log_detector_cost()
        # The inputs the base's train step takes (FreeMatch and SoftMatch take no idx_ulb).
        self._base_inputs = list(signature(super().train_step).parameters)

    def calibration_index(self, targets, per_class):
        """Labeled-set positions held out of the detector's training: the first ``per_class`` of each class."""
        targets = torch.as_tensor(list(targets)).long()
        held = [(targets == c).nonzero().flatten()[:per_class] for c in range(self.num_classes)]
        return torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)

    @property
    def calibration_floor(self):
        """The ``detector_calib_quantile`` of the held-out labeled images' latest scores (-inf before any).

        With the default quantile 1 (the maximum), a real image the detector
        never trained on scores above it about as rarely as above the maximum of
        ``n`` exchangeable real scores, 1 / (n + 1), whatever the detector has
        learnt to find; a lower quantile lets one odd real image not set it.
        """
        seen = self.calib_scores[~self.calib_scores.isnan()]
        return float(torch.quantile(seen, self.calib_quantile)) if len(seen) else float("-inf")

    @property
    def full_sub_queues(self):
        """How many class sub-queues hold ``queue_min_fill`` images or more."""
        return int((self.csqueue.fill >= self.queue_min_fill).sum())

    @property
    def queue_ready(self):
        """True once ``queue_gate_share`` of the class sub-queues hold ``queue_min_fill`` images each."""
        # ceil(share * C) classes; the epsilon keeps 0.7 * 10 = 7.000000000000001 at 7.
        needed = math.ceil(self.queue_gate_share * self.num_classes - 1e-9)
        return len(self.csqueue) > 0 and self.full_sub_queues >= needed

    @property
    def routing_threshold(self):
        """The score at or above which a sample is judged synthetic: ``detector_threshold`` or the floor."""
        return max(self.detector_threshold, self.calibration_floor)

    def build_extra_heads(self, num_features):
        # Built whatever the switches, so every RSMatch checkpoint has the same entries.
        return {"dummy": nn.Linear(num_features, self.num_classes)}

    def set_hooks(self):
        super().set_hooks()
        self.register_hook(DetectorPlacementHook(), "DetectorPlacementHook", "VERY_HIGH")
        # NORMAL: after EvaluationHook (HIGH), before LoggingHook (LOWEST).
        self.register_hook(DetectorEvalHook(), "DetectorEvalHook", "NORMAL")

    def log_detector_cost(self):
        """Log the detector's parameters and FLOPs per image next to the classifier's."""
        example = torch.zeros(1, 3, self.args.img_size, self.args.img_size)
        with torch.random.fork_rng(devices=[]):
            det_flops, cls_flops = count_flops(self.detector.net, example), count_flops(self.model, example)
        det_params, cls_params = count_params(self.detector.net), count_params(self.model)
        self.print_fn(f"RSMatch detector: {det_params:,} parameters ({det_params / cls_params:.1%} of the "
                      f"classifier's {cls_params:,}); {det_flops:,} FLOPs per {self.args.img_size}px image "
                      f"({det_flops / max(cls_flops, 1):.1%} of the classifier's {cls_flops:,})")

    # ------------------------------------------------------------------ train step
    def train_step(self, x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s, idx_lb=None):
        inputs = dict(x_lb=x_lb, y_lb=y_lb, idx_ulb=idx_ulb, x_ulb_w=x_ulb_w, x_ulb_s=x_ulb_s)
        inputs = {k: v for k, v in inputs.items() if k in self._base_inputs}
        if "idx_ulb" in inputs:
            # Where USB's process_batch puts it: FlexMatch indexes a device tensor with it.
            inputs["idx_ulb"] = idx_ulb.cuda(self.gpu)
        if not self.use_detector:
            return super().train_step(**inputs)

        calib = self.update_calibration(x_lb, idx_lb)
        scores = self.detector.score(x_ulb_w)
        threshold = self.routing_threshold
        judged_syn = (scores >= threshold).float()
        if self.oracle_flags is not None:
            syn = self.oracle_flags[idx_ulb.cpu()].to(judged_syn)
        else:
            # Until the detector is trusted, every unlabeled sample is real.
            syn = judged_syn if self.detector_trusted else torch.zeros_like(judged_syn)
        self._routing = {"real": 1 - syn}
        try:
            out_dict, log_dict = super().train_step(**inputs)
            routing = self._routing
        finally:
            self._routing = None
        if "mask" not in routing or "pseudo_label" not in routing:
            raise RuntimeError(f"{type(self).__name__}: the base train step did not call MaskingHook and "
                               "PseudoLabelingHook; RSMatch cannot route its unlabeled loss")
        mask, pseudo_label = routing["mask"], routing["pseudo_label"]

        extra = {}
        if self.use_dummy_head:
            with self.amp_cm():
                syn_unsup_loss = self.dummy_head_loss(out_dict["feat"], pseudo_label, mask, syn)
            out_dict["loss"] = out_dict["loss"] + self.lambda_syn * syn_unsup_loss
            extra = dict(syn_unsup_loss=syn_unsup_loss.item(), total_loss=out_dict["loss"].item())
        # The queue's pseudo-labels are the base's weak-view predictions.
        queue_labels = pseudo_label.argmax(dim=-1) if pseudo_label.dim() > 1 else pseudo_label
        det_loss, det_acc = self.detector_step(x_lb[~calib], idx_ulb, x_ulb_w, queue_labels, scores)
        log_dict = self.process_log_dict(log_dict, util_ratio=mask.float().mean().item(), **extra,
                                         detector_loss=det_loss, detector_acc=det_acc,
                                         syn_ratio=judged_syn.mean().item(), routing_threshold=threshold,
                                         detector_trusted=float(self.detector_trusted),
                                         queue_fill_min=float(self.csqueue.fill.min()),
                                         queue_fill_mean=self.csqueue.fill.float().mean().item(),
                                         queue_draw_ms=1000 * self.queue_draw_s)
        self.queue_draw_s = 0.0
        return out_dict, log_dict

    def call_hook(self, fn_name, hook_name=None, *args, **kwargs):
        """USB's call_hook; inside an RS train step it also routes the base's unlabeled mask.

        The base's mask (MaskingHook) is kept for the dummy head and returned
        multiplied by "judged real"; its pseudo-labels (PseudoLabelingHook) are kept.
        """
        out = super().call_hook(fn_name, hook_name, *args, **kwargs)
        if self._routing is not None and hook_name == "MaskingHook" and fn_name == "masking":
            self._routing["mask"] = out
            out = out * self._routing["real"]
        elif self._routing is not None and hook_name == "PseudoLabelingHook" and fn_name == "gen_ulb_targets":
            self._routing["pseudo_label"] = out
        return out

    @torch.no_grad()
    def update_calibration(self, x_lb, idx_lb):
        """Score the held-out labeled images of this batch; returns the batch's held-out mask.

        Under DDP each held-out image's score is the largest any rank gave it
        this step (all-reduced), so every rank keeps the same threshold.
        """
        held = torch.zeros(x_lb.shape[0], dtype=torch.bool, device=x_lb.device)
        if len(self.calib_index) == 0 or idx_lb is None:
            return held
        idx_lb = idx_lb.cpu()  # a no-op: process_batch leaves it on the CPU
        pos = torch.searchsorted(self.calib_index, idx_lb)
        pos = pos.clamp(max=len(self.calib_index) - 1)
        hit = self.calib_index[pos] == idx_lb
        held = hit.to(x_lb.device)
        step = torch.full_like(self.calib_scores, -1.0)
        if hit.any():
            step[pos[hit]] = self.detector.score(x_lb[held]).float().cpu()
        if self.distributed and dist.is_initialized() and dist.get_world_size() > 1:
            device = next(self.model.parameters()).device
            step_dev = step.to(device)
            dist.all_reduce(step_dev, op=dist.ReduceOp.MAX)
            step = step_dev.cpu()
        seen = step >= 0
        self.calib_scores[seen] = step[seen]
        return held

    def dummy_head_loss(self, feats, pseudo_label, mask, syn):
        """The base's consistency loss on the dummy head, for the samples judged synthetic (``syn`` = 1).

        Targets are the base's pseudo-labels and mask (``dummy_pseudo_label: real``,
        the real head's weak-view prediction), or the dummy head's own weak-view
        prediction thresholded at ``p_cutoff`` (``dummy_pseudo_label: dummy``).
        """
        if self.dummy_pseudo_label == "real":
            logits_s = self.extra_heads(feats["x_ulb_s"])["dummy"]
        else:
            both = torch.cat((feats["x_ulb_w"].detach(), feats["x_ulb_s"]))
            logits_w, logits_s = self.extra_heads(both)["dummy"].chunk(2)
            probs_w = self.compute_prob(logits_w.detach())
            mask = probs_w.amax(dim=-1).ge(self.dummy_p_cutoff).to(probs_w.dtype)
            pseudo_label = self.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs_w,
                                          use_hard_label=self.use_hard_label, T=self.T, softmax=False)
        return self.consistency_loss(logits_s, pseudo_label, "ce", mask=mask * syn)

    # ------------------------------------------------------------------ detector
    def detector_step(self, x_lb, idx_ulb, x_ulb_w, pseudo_ulb, scores):
        """Update the queue, then step the detector; returns its (loss, accuracy).

        ``x_lb`` are the labeled images the detector trains on as real (the
        held-out ones removed). Samples scoring below ``queue_min_score`` or the
        calibration floor do not enter the queue.
        """
        min_score = max(self.queue_min_score, self.calibration_floor)
        self.csqueue.update(idx_ulb, pseudo_ulb, scores, min_score=min_score)
        if not self.detector_trusted and self.queue_ready:
            self.detector_trusted = True
            self.print_fn(f"RSMatch: {self.full_sub_queues} of {self.num_classes} class sub-queues hold "
                          f">= {self.queue_min_fill} images at iteration {self.it + 1}; the detector now routes unlabeled samples"
                          + (" and trains on the queue" if self.use_queue else ""))

        draw_from_queue = self.use_queue and self.detector_trusted
        if self.detector_ulb_real > 0:
            # The unlabeled samples it is surest are real widen the real side beyond the few labeled
            # images, in the bootstrap too (off by default: on digits it fed the bootstrap's errors back).
            judged_real = (scores < self.routing_threshold).nonzero().flatten()
            surest = judged_real[torch.argsort(scores[judged_real], stable=True)[:self.detector_ulb_real]]
            x_lb = torch.cat((x_lb, x_ulb_w[surest.to(x_ulb_w.device)]))
        num_lb = x_lb.shape[0]
        if draw_from_queue:
            # A fixed-size draw, weighted to the real side's mass (fewer real images when some are held out).
            start = time.perf_counter()
            x_syn = self.take_queued(self.args.batch_size).to(x_lb.device)
            self.queue_draw_s = time.perf_counter() - start
            syn_weight = num_lb / x_syn.shape[0]
        else:
            # PU bootstrap: the unlabeled batch stands in for "synthetic", carrying pu_mass times
            # the real side's mass. An image as frequent among labeled as among unlabeled data
            # (a real one) then scores pu_mass * pi_real / (1 + pu_mass * pi_real), below the
            # threshold with a margin even when nothing is synthetic (pi_real = 1).
            x_syn = x_ulb_w
            syn_weight = self.pu_pos_weight if self.pu_pos_weight > 0 else self.pu_mass * num_lb / x_syn.shape[0]
        num_syn = x_syn.shape[0]
        device = x_lb.device
        target = torch.cat((torch.zeros(num_lb, device=device), torch.ones(num_syn, device=device)))
        weight = torch.cat((torch.ones(num_lb, device=device), torch.full((num_syn,), syn_weight, device=device)))
        out = self.detector.step(torch.cat((x_lb, x_syn)), target, weight)
        if draw_from_queue:
            start = time.perf_counter()
            self.request_queued(self.args.batch_size)  # the next step's, read while it runs
            self.queue_draw_s += time.perf_counter() - start
        return out

    def take_queued(self, n):
        """This step's ``n`` queue images: the draw requested at the end of the previous step.

        The first trusted step has none yet and draws now. Draws are therefore
        made from the queue as it stood one step earlier, which lets a worker
        read and transform them while this step's passes run.
        """
        if not self.queue_draws.has_request():
            self.request_queued(n)
        return self.queue_draws.take()

    def request_queued(self, n):
        """Draw ``n`` class-balanced queue indices and a seed for their augmentation; submit them.

        Every rank holds the same queue and generator state, draws ``n`` per
        rank for all ranks and keeps its own slice, so ranks see different images.
        """
        world, rank = 1, 0
        if self.distributed and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
        index, _ = self.csqueue.sample(n * world, generator=self.queue_generator)
        seed = int(torch.randint(2 ** 62, (1,), generator=self.queue_generator))
        self.queue_draws.request(index[rank * n:(rank + 1) * n], seed)

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self):
        state = dict(self.detector.state_dict()) if self.detector is not None else {}
        state["csqueue"] = self.csqueue.state_dict()
        state["rsmatch_state"] = {"detector_trusted": torch.tensor(self.detector_trusted),
                                  "queue_generator": self.queue_generator.get_state(),
                                  "calib_scores": self.calib_scores.clone(),
                                  "queue_draw": self.queue_draws.pending(),
                                  # For rsmatch-detect only (never loaded): the threshold, and how images are viewed.
                                  "scoring": {"routing_threshold": torch.tensor(float(self.routing_threshold)),
                                              "eval_view": view_settings(self.dataset_dict["eval"].transform)}}
        return state

    def load_extra_state(self, checkpoint):
        if self.detector is not None:
            # On the backbone's device first, so the optimizer state is loaded onto it too.
            self.detector.to(next(self.model.parameters()).device)
            self.detector.load_state_dict(checkpoint)
        self.csqueue.load_state_dict(checkpoint["csqueue"])
        state = checkpoint["rsmatch_state"]
        self.detector_trusted = bool(state["detector_trusted"])
        self.queue_generator.set_state(state["queue_generator"])
        self.calib_scores.copy_(state["calib_scores"])
        self.queue_draws.restore(state["queue_draw"])

    @classmethod
    def get_argument(cls):
        """RSMatch's arguments, then the base's (each name once)."""
        return _merge_arguments(rs_arguments(), super().get_argument())


def rs_arguments():
    """The arguments RSMatch adds to its base algorithm's."""
    return [
        SSL_Argument("--base_algorithm", str, "fixmatch",
                     "the USB algorithm RSMatch extends: " + ", ".join(RS_VARIANTS)),
        # ablation switches
        SSL_Argument("--use_detector", str2bool, True, "False: every unlabeled sample is real (the base)"),
        SSL_Argument("--use_dummy_head", str2bool, True,
                     "False: samples judged synthetic are discarded (the filter baseline)"),
        SSL_Argument("--use_queue", str2bool, True,
                     "False: the detector trains on labeled vs unlabeled (PU) throughout"),
        # losses and routing
        SSL_Argument("--lambda_syn", float, 1.0, "weight of the dummy head's unlabeled loss"),
        SSL_Argument("--dummy_pseudo_label", str, "real",
                     "dummy head targets: 'real' head's or the 'dummy' head's own weak-view prediction"),
        SSL_Argument("--p_cutoff", float, 0.95,
                     "confidence threshold of pseudo-labels (FixMatch, FlexMatch; the dummy head's own targets)"),
        SSL_Argument("--detector_threshold", float, 0.5,
                     "score at or above which a sample is synthetic (raised by the calibration images' scores)"),
        SSL_Argument("--detector_calib_per_class", int, 1,
                     "labeled images per class held out of the detector's training to calibrate its threshold"),
        SSL_Argument("--detector_calib_quantile", float, 1.0,
                     "the floor is this quantile of the held-out images' scores (1: their maximum)"),
        # detector
        SSL_Argument("--detector_width", int, 16, "detector widths are w, 2w, 4w"),
        SSL_Argument("--detector_lr", float, 3e-3, "detector Adam learning rate"),
        SSL_Argument("--detector_wd", float, 5e-3,
                     "detector Adam weight decay (keeps it from memorizing the few labeled images)"),
        SSL_Argument("--detector_ema_m", float, 0.99,
                     "EMA momentum of the scoring copy of the detector (0: the detector itself)"),
        SSL_Argument("--detector_ulb_real", int, 0,
                     "the detector also trains on this many lowest-scoring unlabeled samples (of those judged "
                     "real) as real"),
        SSL_Argument("--detector_oracle", str2bool, False,
                     "diagnostic, not SSL: route by the unlabeled set's ground-truth synthetic flags from the first "
                     "step (the detector still trains and is evaluated); the dummy head's ceiling"),
        SSL_Argument("--detector_ema_warmup", str2bool, True,
                     "EMA momentum min(detector_ema_m, 1 - 1/(t+1)) at detector step t: early scores follow the detector"),
        SSL_Argument("--pu_mass", float, 1 / 3,
                     "bootstrap mass of the unlabeled ('possibly synthetic') side relative to the labeled side"),
        SSL_Argument("--pu_pos_weight", float, 0.0,
                     "bootstrap weight of each unlabeled sample, overriding pu_mass; 0: pu_mass * num_lb / num_ulb"),
        # CSQueue
        SSL_Argument("--queue_size", int, 128, "K: capacity of each class sub-queue"),
        SSL_Argument("--queue_push_classes", int, 5, "P: classes served per step"),
        SSL_Argument("--queue_push_per_class", int, 4, "Q: top-scoring images pushed per served class"),
        SSL_Argument("--queue_min_score", float, 0.5, "only samples scoring at least this are pushed"),
        SSL_Argument("--queue_min_fill", int, 16,
                     "bootstrap ends once queue_gate_share of the sub-queues hold this many images"),
        SSL_Argument("--queue_gate_share", float, 1.0,
                     "share of the class sub-queues that must hold queue_min_fill images to end the bootstrap"),
        SSL_Argument("--queue_workers", int, 1,
                     "processes reading the next step's queue images ahead (0: read on the training thread)"),
        # analysis
        SSL_Argument("--detector_eval_samples", int, 4000,
                     "unlabeled images scored at each evaluation (0: all)"),
    ]


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
    instance of :class:`RSFixMatch`, :class:`RSFlexMatch`, :class:`RSFreeMatch`
    or :class:`RSSoftMatch`. Its arguments are RSMatch's and every supported base's.
    """

    def __new__(cls, args, net_builder, tb_log=None, logger=None):
        base = str(getattr(args, "base_algorithm", "fixmatch")).lower()
        if base not in RS_VARIANTS:
            raise UserError(f"base_algorithm: {args.base_algorithm!r} is not one of {', '.join(RS_VARIANTS)}")
        return RS_VARIANTS[base](args, net_builder, tb_log, logger)

    @staticmethod
    def get_argument():
        return _merge_arguments(rs_arguments(), *(variant.get_argument() for variant in RS_VARIANTS.values()))
