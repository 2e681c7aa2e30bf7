"""RSMatch (Wang, Mao, Xiang, Yamasaki 2024, arXiv 2405.16930) as a USB algorithm.

FixMatch's weak/strong consistency, plus a lightweight real-vs-synthetic
detector trained alongside the classifier, a class-wise synthetic queue
(CSQueue) that mines its synthetic training examples from the unlabeled data,
and a dummy head that learns from the unlabeled samples judged synthetic so
that they do not pull the real head's decision boundaries. There is no
official code; every unstated detail is our choice, documented in
rsmatch-usb's docs/rsmatch.md and configurable below.
"""
import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from semilearn.algorithms.hooks import FixedThresholdingHook, PseudoLabelingHook
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.algorithmbase import AlgorithmBase
from semilearn.core.utils import ALGORITHMS

from rsmatch_usb.errors import UserError
from rsmatch_usb.heads import ExtraHeadsMixin, unwrap

from .csqueue import CSQueue
from .detector import Detector, count_flops, count_params
from .hooks import DetectorEvalHook, DetectorPlacementHook
from .images import private_rng, read_image

# Offsets from args.seed for RSMatch's private RNG streams (the mixin's heads use +7919).
_DETECTOR_SEED_OFFSET = 15485863
_QUEUE_SEED_OFFSET = 104729


@ALGORITHMS.register("rsmatch")
class RSMatch(ExtraHeadsMixin, AlgorithmBase):
    """RSMatch: FixMatch with a detector, a CSQueue and a dummy head for synthetic unlabeled data.

    Each train step (1) computes FixMatch's losses; (2) scores the weak views
    of the unlabeled batch with the detector (an EMA copy): samples scoring >=
    ``detector_threshold`` feed the dummy head's consistency loss, the rest
    the real head's (before the detector is trusted, all feed the real head);
    (3) pushes the top-scoring samples of P pseudo-classes into the CSQueue;
    (4) takes one optimizer step of the detector on its own optimizer (the
    classifier's step stays USB's ParamUpdateHook): labeled images are real,
    a class-balanced queue draw is synthetic; until every sub-queue holds
    ``queue_min_fill`` images the detector is bootstrapped PU-style instead,
    labeled (real) against the unlabeled batch (possibly synthetic, weighted
    down). With ``use_detector: False`` the run is FixMatch, step for step.
    """

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        super().__init__(args, net_builder, tb_log, logger)
        self.init(args)

    def init(self, args):
        # FixMatch
        self.T = args.T
        self.p_cutoff = args.p_cutoff
        self.use_hard_label = args.hard_label
        # RSMatch
        self.use_detector = args.use_detector
        self.use_dummy_head = args.use_dummy_head
        self.use_queue = args.use_queue
        self.lambda_syn = args.lambda_syn
        self.dummy_pseudo_label = str(args.dummy_pseudo_label).lower()
        if self.dummy_pseudo_label not in ("real", "dummy"):
            raise UserError(f"dummy_pseudo_label: {args.dummy_pseudo_label!r} is not 'real' or 'dummy'")
        self.detector_threshold = args.detector_threshold
        self.queue_min_fill = args.queue_min_fill
        self.queue_min_score = args.queue_min_score
        self.pu_pos_weight = args.pu_pos_weight
        for key in ("queue_size", "queue_push_classes", "queue_push_per_class"):
            if getattr(args, key) < 1:
                raise UserError(f"{key}: must be >= 1 (got {getattr(args, key)})")
        if not 0 <= self.queue_min_fill <= args.queue_size:
            raise UserError(f"queue_min_fill: must lie in [0, queue_size={args.queue_size}] "
                            f"(got {self.queue_min_fill})")

        self.csqueue = CSQueue(self.num_classes, args.queue_size, args.queue_push_classes,
                               args.queue_push_per_class)
        # Queue draws and their augmentations use this stream only, so the global
        # RNG (data order, augmentation) advances exactly as in FixMatch.
        self.queue_generator = torch.Generator().manual_seed(args.seed + _QUEUE_SEED_OFFSET)
        # False while the detector is bootstrapped; set once when every sub-queue is full enough.
        self.detector_trusted = False
        self.detector_ema_m = args.detector_ema_m
        self.detector, self.detector_ema, self.detector_optimizer = None, None, None
        if self.use_detector:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(args.seed + _DETECTOR_SEED_OFFSET)  # CPU only, as private_rng
                self.detector = Detector(args.detector_width)
            # The scorer: an EMA of the trained detector's weights. Scores use running
            # BatchNorm statistics, which lag a fast-moving detector (Adam, small batches)
            # and mis-calibrate it; slowly moving weights keep them consistent.
            self.detector_ema = copy.deepcopy(self.detector)
            self.detector_ema.requires_grad_(False)
            self.detector_optimizer = torch.optim.Adam(self.detector.parameters(), lr=args.detector_lr,
                                                       weight_decay=args.detector_wd)
            self.log_detector_cost()

    def build_extra_heads(self, num_features):
        # Built whatever the switches, so every RSMatch checkpoint has the same entries.
        return {"dummy": nn.Linear(num_features, self.num_classes)}

    def set_hooks(self):
        self.register_hook(PseudoLabelingHook(), "PseudoLabelingHook")
        self.register_hook(FixedThresholdingHook(), "MaskingHook")
        super().set_hooks()
        self.register_hook(DetectorPlacementHook(), "DetectorPlacementHook", "VERY_HIGH")
        # NORMAL: after EvaluationHook (HIGH), before LoggingHook (LOWEST).
        self.register_hook(DetectorEvalHook(), "DetectorEvalHook", "NORMAL")

    def log_detector_cost(self):
        """Log the detector's parameters and FLOPs per image next to the classifier's."""
        example = torch.zeros(1, 3, self.args.img_size, self.args.img_size)
        with torch.random.fork_rng(devices=[]):
            det_flops, cls_flops = count_flops(self.detector, example), count_flops(self.model, example)
        det_params, cls_params = count_params(self.detector), count_params(self.model)
        self.print_fn(f"RSMatch detector: {det_params:,} parameters ({det_params / cls_params:.1%} of the "
                      f"classifier's {cls_params:,}); {det_flops:,} FLOPs per {self.args.img_size}px image "
                      f"({det_flops / max(cls_flops, 1):.1%} of the classifier's {cls_flops:,})")

    # ------------------------------------------------------------------ train step
    def train_step(self, x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s):
        num_lb = y_lb.shape[0]

        with self.amp_cm():
            if self.use_cat:
                inputs = torch.cat((x_lb, x_ulb_w, x_ulb_s))
                outputs = self.model(inputs)
                logits_x_lb = outputs["logits"][:num_lb]
                logits_x_ulb_w, logits_x_ulb_s = outputs["logits"][num_lb:].chunk(2)
                feats_x_lb = outputs["feat"][:num_lb]
                feats_x_ulb_w, feats_x_ulb_s = outputs["feat"][num_lb:].chunk(2)
            else:
                outs_x_lb = self.model(x_lb)
                logits_x_lb, feats_x_lb = outs_x_lb["logits"], outs_x_lb["feat"]
                outs_x_ulb_s = self.model(x_ulb_s)
                logits_x_ulb_s, feats_x_ulb_s = outs_x_ulb_s["logits"], outs_x_ulb_s["feat"]
                with torch.no_grad():
                    outs_x_ulb_w = self.model(x_ulb_w)
                    logits_x_ulb_w, feats_x_ulb_w = outs_x_ulb_w["logits"], outs_x_ulb_w["feat"]
            feat_dict = {"x_lb": feats_x_lb, "x_ulb_w": feats_x_ulb_w, "x_ulb_s": feats_x_ulb_s}

            sup_loss = self.ce_loss(logits_x_lb, y_lb, reduction="mean")

            probs_x_ulb_w = self.compute_prob(logits_x_ulb_w.detach())
            if self.registered_hook("DistAlignHook"):
                probs_x_ulb_w = self.call_hook("dist_align", "DistAlignHook", probs_x_ulb=probs_x_ulb_w.detach())
            mask = self.call_hook("masking", "MaskingHook", logits_x_ulb=probs_x_ulb_w, softmax_x_ulb=False)
            pseudo_label = self.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs_x_ulb_w,
                                          use_hard_label=self.use_hard_label, T=self.T, softmax=False)

            if not self.use_detector:
                unsup_loss = self.consistency_loss(logits_x_ulb_s, pseudo_label, "ce", mask=mask)
                total_loss = sup_loss + self.lambda_u * unsup_loss
            else:
                scores = self.detector_scores(x_ulb_w)
                judged_syn = (scores >= self.detector_threshold).to(mask.dtype)
                # Until the detector is trusted, every unlabeled sample is real.
                syn = judged_syn if self.detector_trusted else torch.zeros_like(judged_syn)
                # Masked means over the whole batch, as FixMatch: the two losses split its sum.
                unsup_loss = self.consistency_loss(logits_x_ulb_s, pseudo_label, "ce", mask=mask * (1 - syn))
                total_loss = sup_loss + self.lambda_u * unsup_loss
                if self.use_dummy_head:
                    syn_unsup_loss = self.dummy_head_loss(feats_x_ulb_w, feats_x_ulb_s, pseudo_label, mask, syn)
                    total_loss = total_loss + self.lambda_syn * syn_unsup_loss

        out_dict = self.process_out_dict(loss=total_loss, feat=feat_dict)
        log_dict = self.process_log_dict(sup_loss=sup_loss.item(),
                                         unsup_loss=unsup_loss.item(),
                                         total_loss=total_loss.item(),
                                         util_ratio=mask.float().mean().item())
        if self.use_detector:
            # The queue's pseudo-labels are the real head's weak-view predictions.
            det_loss, det_acc = self.detector_step(x_lb, idx_ulb, x_ulb_w, probs_x_ulb_w.argmax(dim=-1), scores)
            extra = dict(detector_loss=det_loss, detector_acc=det_acc,
                         syn_ratio=judged_syn.mean().item(), detector_trusted=float(self.detector_trusted),
                         queue_fill_min=float(self.csqueue.fill.min()),
                         queue_fill_mean=self.csqueue.fill.float().mean().item())
            if self.use_dummy_head:
                extra["syn_unsup_loss"] = syn_unsup_loss.item()
            log_dict = self.process_log_dict(log_dict, **extra)
        return out_dict, log_dict

    def dummy_head_loss(self, feats_x_ulb_w, feats_x_ulb_s, pseudo_label, mask, syn):
        """FixMatch's loss on the dummy head, for the samples judged synthetic (``syn`` = 1).

        Targets are the real head's weak-view pseudo-labels (``pseudo_label``,
        ``mask``) by default, or the dummy head's own with ``dummy_pseudo_label: dummy``.
        """
        if self.dummy_pseudo_label == "real":
            logits_s = self.extra_heads(feats_x_ulb_s)["dummy"]
        else:
            logits_w, logits_s = self.extra_heads(torch.cat((feats_x_ulb_w.detach(), feats_x_ulb_s)))["dummy"].chunk(2)
            probs_w = self.compute_prob(logits_w.detach())
            mask = self.call_hook("masking", "MaskingHook", logits_x_ulb=probs_w, softmax_x_ulb=False)
            pseudo_label = self.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs_w,
                                          use_hard_label=self.use_hard_label, T=self.T, softmax=False)
        return self.consistency_loss(logits_s, pseudo_label, "ce", mask=mask * syn)

    # ------------------------------------------------------------------ detector
    @torch.no_grad()
    def detector_scores(self, x):
        """P(synthetic) per image, from the EMA detector in eval mode (running BatchNorm statistics).

        In fp32 even inside the train step's autocast (``amp: True``): in fp16 the
        sigmoid rounds to 1.0 from a logit of about 8, and the queue's top-Q
        choice would then pick among ties by position.
        """
        self.detector_ema.eval()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.sigmoid(self.detector_ema(x.float()))

    @torch.no_grad()
    def update_detector_ema(self, x):
        """Move the EMA weights toward the detector's, then refresh its BatchNorm statistics on ``x``.

        Under DDP the statistics are averaged over the ranks, so every rank scores alike.
        """
        for ema_p, p in zip(self.detector_ema.parameters(), unwrap(self.detector).parameters()):
            ema_p.mul_(self.detector_ema_m).add_(p.detach(), alpha=1 - self.detector_ema_m)
        self.detector_ema.train()
        self.detector_ema(x.float())
        self.detector_ema.eval()
        if self.distributed and dist.is_initialized() and dist.get_world_size() > 1:
            for buf in self.detector_ema.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf)
                    buf.div_(dist.get_world_size())

    def detector_step(self, x_lb, idx_ulb, x_ulb_w, pseudo_ulb, scores):
        """Update the queue, step the detector's own optimizer, then its EMA; returns (loss, accuracy)."""
        self.csqueue.update(idx_ulb, pseudo_ulb, scores, min_score=self.queue_min_score)
        if not self.detector_trusted and self.csqueue.min_fill >= self.queue_min_fill and len(self.csqueue):
            self.detector_trusted = True
            self.print_fn(f"RSMatch: every class sub-queue holds >= {self.queue_min_fill} images at iteration "
                          f"{self.it + 1}; the detector now routes unlabeled samples"
                          + (" and trains on the queue" if self.use_queue else ""))

        num_lb = x_lb.shape[0]
        if self.use_queue and self.detector_trusted:
            x_syn = self.draw_queued(num_lb).to(x_lb.device)
            x = torch.cat((x_lb, x_syn))
            weight = torch.ones(2 * num_lb, device=x.device)
            num_syn = num_lb
        else:
            # PU bootstrap: the unlabeled batch stands in for "synthetic"; by default it is
            # weighted so that both sides carry equal mass, which puts the score of any image
            # that is as frequent among labeled as among unlabeled data below 0.5.
            num_syn = x_ulb_w.shape[0]
            pos_weight = self.pu_pos_weight if self.pu_pos_weight > 0 else num_lb / num_syn
            x = torch.cat((x_lb, x_ulb_w))
            weight = torch.cat((torch.ones(num_lb, device=x.device),
                                torch.full((num_syn,), pos_weight, device=x.device)))
        target = torch.cat((torch.zeros(num_lb, device=x.device), torch.ones(num_syn, device=x.device)))

        logits = self.detector(x.float())
        loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
        self.detector_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.detector_optimizer.step()
        self.update_detector_ema(x)
        acc = ((logits.detach() >= 0).float() == target).float().mean()
        return loss.item(), acc.item()

    def draw_queued(self, n):
        """``n`` class-balanced queue images under the unlabeled set's weak transform.

        Every rank holds the same queue and generator state, draws ``n`` per
        rank for all ranks and keeps its own slice, so ranks see different images.
        """
        world, rank = 1, 0
        if self.distributed and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
        index, _ = self.csqueue.sample(n * world, generator=self.queue_generator)
        index = index[rank * n:(rank + 1) * n]
        seed = int(torch.randint(2 ** 62, (1,), generator=self.queue_generator))
        ulb = self.dataset_dict["train_ulb"]
        with private_rng(seed):
            return torch.stack([ulb.transform(read_image(ulb, i)) for i in index.tolist()])

    # ------------------------------------------------------------------ checkpoints
    def get_save_dict(self):
        save_dict = super().get_save_dict()
        if self.detector is not None:
            save_dict["detector"] = unwrap(self.detector).state_dict()
            save_dict["detector_ema"] = self.detector_ema.state_dict()
            save_dict["detector_optimizer"] = self.detector_optimizer.state_dict()
        save_dict["csqueue"] = self.csqueue.state_dict()
        save_dict["rsmatch_state"] = {"detector_trusted": torch.tensor(self.detector_trusted),
                                      "queue_generator": self.queue_generator.get_state()}
        return save_dict

    def load_model(self, load_path):
        checkpoint = super().load_model(load_path)
        if self.detector is not None:
            detector = unwrap(self.detector)
            # On the backbone's device first, so the optimizer state is loaded onto it too.
            detector.to(next(self.model.parameters()).device)
            detector.load_state_dict(checkpoint["detector"])
            self.detector_ema.to(next(self.model.parameters()).device)
            self.detector_ema.load_state_dict(checkpoint["detector_ema"])
            self.detector_optimizer.load_state_dict(checkpoint["detector_optimizer"])
        self.csqueue.load_state_dict(checkpoint["csqueue"])
        state = checkpoint["rsmatch_state"]
        self.detector_trusted = bool(state["detector_trusted"])
        self.queue_generator.set_state(state["queue_generator"])
        return checkpoint

    @staticmethod
    def get_argument():
        return [
            # FixMatch's
            SSL_Argument("--hard_label", str2bool, True, "hard pseudo-labels (FixMatch)"),
            SSL_Argument("--T", float, 0.5, "temperature of soft pseudo-labels (FixMatch)"),
            SSL_Argument("--p_cutoff", float, 0.95, "confidence threshold of pseudo-labels (FixMatch)"),
            # ablation switches
            SSL_Argument("--use_detector", str2bool, True, "False: every unlabeled sample is real (FixMatch)"),
            SSL_Argument("--use_dummy_head", str2bool, True,
                         "False: samples judged synthetic are discarded (the filter baseline)"),
            SSL_Argument("--use_queue", str2bool, True,
                         "False: the detector trains on labeled vs unlabeled (PU) throughout"),
            # losses and routing
            SSL_Argument("--lambda_syn", float, 1.0, "weight of the dummy head's unlabeled loss"),
            SSL_Argument("--dummy_pseudo_label", str, "real",
                         "dummy head targets: 'real' head's or the 'dummy' head's own weak-view prediction"),
            SSL_Argument("--detector_threshold", float, 0.5, "score at or above which a sample is synthetic"),
            # detector
            SSL_Argument("--detector_width", int, 16, "detector widths are w, 2w, 4w"),
            SSL_Argument("--detector_lr", float, 1e-3, "detector Adam learning rate"),
            SSL_Argument("--detector_wd", float, 0.0, "detector Adam weight decay"),
            SSL_Argument("--detector_ema_m", float, 0.99,
                         "EMA momentum of the scoring copy of the detector (0: the detector itself)"),
            SSL_Argument("--pu_pos_weight", float, 0.0,
                         "bootstrap weight of unlabeled ('possibly synthetic') samples; 0: num_lb/num_ulb"),
            # CSQueue
            SSL_Argument("--queue_size", int, 128, "K: capacity of each class sub-queue"),
            SSL_Argument("--queue_push_classes", int, 5, "P: classes served per step"),
            SSL_Argument("--queue_push_per_class", int, 4, "Q: top-scoring images pushed per served class"),
            SSL_Argument("--queue_min_score", float, 0.5, "only samples scoring at least this are pushed"),
            SSL_Argument("--queue_min_fill", int, 16,
                         "bootstrap ends once every sub-queue holds this many images"),
            # analysis
            SSL_Argument("--detector_eval_samples", int, 4000,
                         "unlabeled images scored at each evaluation (0: all)"),
        ]
