"""RSMatch as the plugin registers it: the exported algorithm (:mod:`.rsmatch`) plus the plugin's own features.

The USB export carries :mod:`.rsmatch` and its components (RSMatch on
FixMatch); this module, which none of them imports, adds what serves the
plugin's studies, analysis and tools:

- ``base_algorithm``: RSMatch on FlexMatch, FreeMatch or SoftMatch too (the
  exported mixin, :class:`~.rsmatch.RSMixin`, on another base);
- ``dummy_pseudo_label: dummy``: the dummy head's own weak-view targets;
- the range and choice checks of every key (:mod:`.config`), a one-line
  error before anything is built;
- the detector inputs ``highpass`` and ``spectrum``, and detector networks
  that record their settings in the checkpoint (:mod:`.extensions`);
- ``detector_oracle``: route by the unlabeled set's ground-truth synthetic
  flags (:class:`OracleRouter`), the dummy head's ceiling;
- :class:`DetectorEvalHook`: detector AUROC/FPR and queue purity against those
  flags at each evaluation, over ``detector_eval_samples`` images;
- ``queue_workers``: the queue's draws read in worker processes
  (:mod:`.draw_workers`) instead of on the training thread, and the
  train-step inputs that index CPU bookkeeping kept on the CPU;
- the log lines of the detector's cost and, under DDP, of the fingerprint of
  the detector and the queue at the end of the run;
- the ``scoring`` entry of the checkpoint that ``rsmatch-detect`` reads.

The diagnostic keys are those of :mod:`.config` marked ``diagnostic``; on
FixMatch at the exported keys the training is the exported algorithm's, step
for step.
"""
import contextlib
import dataclasses
import io
import logging
from typing import Any, List, Tuple

import numpy as np
import torch
import torch.nn as nn
from semilearn.algorithms.flexmatch import FlexMatch
from semilearn.algorithms.freematch import FreeMatch
from semilearn.algorithms.softmatch import SoftMatch
from semilearn.algorithms.utils import SSL_Argument, str2bool
from semilearn.core.hooks import Hook
from semilearn.core.utils import ALGORITHMS
from sklearn.metrics import precision_score, recall_score
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from rsmatch_usb.errors import UserError
from rsmatch_usb.fingerprints import fingerprint, log_fingerprint
from rsmatch_usb.origin import auroc_by_source, unlabeled_origin

from ..common import CPUInputsMixin, IndexedImages, at_eval_on_main_rank
from . import rsmatch as exported
from .config import RSMatchConfig, rule_of
from .draw_workers import WorkerDraws
from .extensions import Detector
from .images import view_settings
from .router import Router


class OracleRouter(Router):
    """A :class:`~.router.Router` that, given :attr:`oracle` (the unlabeled set's ground-truth synthetic flags),
    routes the truly synthetic samples from the first step; the judged ones are still reported."""

    oracle = None

    def route(self, scores: torch.Tensor, idx_ulb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        judged, routed = super().route(scores, idx_ulb)
        if self.oracle is not None:
            routed = self.oracle[idx_ulb.cpu()].to(judged)
        return judged, routed


class DetectorEvalHook(Hook):
    """At each evaluation, scores the detector and the queue on the unlabeled set's ground-truth flags.

    Runs when the unlabeled set carries ``train_ulb.data.is_synthetic`` (RS-SSL
    datasets, also at alpha 0); the flags are read here, never in the train
    step. Registered after USB's EvaluationHook and before its LoggingHook, so
    the figures land in the evaluation's log line. Over up to
    ``detector_eval_samples`` unlabeled images under the deterministic eval
    transform it logs ``eval/detector_fpr`` (share of the real ones judged
    synthetic, at the routing threshold) and, when both kinds are present,
    ``eval/detector_auroc``, ``eval/detector_precision``,
    ``eval/detector_recall`` (synthetic is the positive class); and
    ``eval/queue_purity``, the share of queued indices that are truly
    synthetic; prints the per-class queue fill and purity. When several
    synthetic sources are mixed it also logs ``eval/detector_auroc/<source>``,
    each source's images against the real ones.
    """

    def __init__(self):
        super().__init__()
        self._subset = None

    def after_train_step(self, algorithm):
        if algorithm.detector is None or not at_eval_on_main_rank(self, algorithm):
            return
        origin = unlabeled_origin(algorithm)
        if origin is None or len(origin[0]) == 0:
            return
        algorithm.log_dict.update(self.evaluate(algorithm, *origin))

    def subset(self, algorithm, num):
        """A fixed, seed-independent sample of unlabeled indices (the same at every evaluation)."""
        if self._subset is None:
            cap = algorithm.args.detector_eval_samples
            index = np.arange(num)
            if 0 < cap < num:
                index = np.sort(np.random.RandomState(0).choice(num, cap, replace=False))
            self._subset = index
        return self._subset

    @torch.no_grad()
    def evaluate(self, algorithm, flags, source=None, source_names=("real", "synthetic")):
        ulb = algorithm.dataset_dict["train_ulb"]
        index = self.subset(algorithm, len(flags))
        images = IndexedImages(ulb, index, algorithm.dataset_dict["eval"].transform)
        # A private generator: iterating a DataLoader otherwise draws its base seed from the global RNG.
        loader = DataLoader(images, batch_size=algorithm.args.eval_batch_size, shuffle=False,
                            num_workers=algorithm.args.num_workers, generator=torch.Generator())
        device = next(algorithm.model.parameters()).device
        scores = torch.cat([algorithm.detector.score(x.to(device)).cpu() for x in loader]).numpy()
        truth = flags[index]
        judged = scores >= algorithm.router.routing_threshold
        # On real images the share judged synthetic is the false-positive rate (clean data: all of it).
        out = {"eval/detector_fpr": float(judged[~truth].mean()) if (~truth).any() else 0.0}
        if truth.any() and not truth.all():
            source = flags.astype(np.int64) if source is None else source
            out.update(auroc_by_source("eval/detector_auroc", truth, scores, source[index], source_names))
            out.update({
                "eval/detector_precision": float(precision_score(truth, judged, zero_division=0)),
                "eval/detector_recall": float(recall_score(truth, judged, zero_division=0)),
            })
        queue = algorithm.csqueue
        per_class = [flags[queue.items(c).numpy()] for c in range(queue.num_classes)]
        queued = np.concatenate(per_class)
        if len(queued):
            out["eval/queue_purity"] = float(queued.mean())
        algorithm.print_fn("CSQueue fill per class: " + str(queue.fill.tolist()) + "; purity per class: "
                           + str([round(float(p.mean()), 3) if len(p) else None for p in per_class]))
        return out


class RunEndHook(Hook):
    """At the end of the run: the draw workers stopped, the DDP fingerprint logged."""

    def after_run(self, algorithm):
        algorithm.trainer.draws.close()
        if algorithm.detector is None or not (algorithm.distributed and torch.distributed.is_initialized()):
            return
        detector = algorithm.detector
        tensors = list(detector.net.parameters()) + [v for v in detector.ema.state_dict().values()
                                                     if torch.is_tensor(v)]
        # Every rank's value, on one line of rank 0 (as the train command does for the backbone).
        log_fingerprint(logging.getLogger(algorithm.args.save_name), "RSMatch detector and queue fingerprint",
                        fingerprint(tensors + list(algorithm.csqueue.state_dict().values())))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (eval mode, so BatchNorm statistics are untouched)."""
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        module.train(was_training)
    return counter.get_total_flops()


def detector_cost(detector: Detector, model: nn.Module, img_size: int) -> str:
    """The log line of the detector's parameters and FLOPs per image next to the classifier's."""
    example = torch.zeros(1, 3, img_size, img_size)
    with torch.random.fork_rng(devices=[]):
        det_flops, cls_flops = count_flops(detector.net, example), count_flops(model, example)
    det_params, cls_params = count_params(detector.net), count_params(model)
    return (f"RSMatch detector: {det_params:,} parameters ({det_params / cls_params:.1%} of the classifier's "
            f"{cls_params:,}); {det_flops:,} FLOPs per {img_size}px image ({det_flops / max(cls_flops, 1):.1%} "
            f"of the classifier's {cls_flops:,})")


def checked(cfg: RSMatchConfig) -> RSMatchConfig:
    """``cfg``, or an error naming its first setting out of range."""
    problems = cfg.problems()
    if problems:
        raise UserError(problems[0])
    return cfg


def rs_arguments(diagnostic: bool = False) -> List[SSL_Argument]:
    """The arguments RSMatch adds to its base algorithm's in the plugin: :class:`RSMatchConfig`'s fields, in its
    order, each choice key's help naming its choices. The diagnostic keys only with ``diagnostic``."""
    arguments = []
    for f in dataclasses.fields(RSMatchConfig):
        rule = rule_of(f)
        if rule["diagnostic"] and not diagnostic:
            continue
        help_text = f.metadata["help"] + (": " + ", ".join(rule["choices"]) if "choices" in rule else "")
        arguments.append(SSL_Argument(f"--{f.name}", str2bool if f.type is bool else f.type, f.default, help_text))
    return arguments


def _merge_arguments(*lists: List[SSL_Argument]) -> List[SSL_Argument]:
    """The arguments of several lists, each name once (the first list that has it wins)."""
    out, seen = [], set()
    for arguments in lists:
        for argument in arguments:
            if argument.name not in seen:
                seen.add(argument.name)
                out.append(argument)
    return out


class PluginMixin(CPUInputsMixin):
    """The plugin's features on an RS variant (mix in before it)."""

    config_class, router_class, detector_class = RSMatchConfig, OracleRouter, Detector
    # The queue and the calibration use the sample indices on the CPU; the base gets its own device copy.
    cpu_inputs = ("idx_ulb", "idx_lb")

    def init_rs(self, cfg: RSMatchConfig) -> None:
        checked(cfg)
        oracle = None
        if cfg.detector_oracle:  # route by the ground truth (the dummy head's ceiling)
            origin = unlabeled_origin(self)
            if origin is None:
                raise UserError("detector_oracle: the unlabeled set has no is_synthetic flags; use RS-SSL data "
                                "(synthetic_source / synthetic_ratio) or set detector_oracle: False")
            if not cfg.use_detector:
                raise UserError("detector_oracle: routes in place of the detector; it needs use_detector: True")
            oracle = torch.from_numpy(origin[0])
        super().init_rs(cfg)
        self.router.oracle = oracle
        if self.detector is not None:
            self.print_fn(detector_cost(self.detector, self.model, self.args.img_size))
        # Nothing is requested yet: the draws are read ahead in worker processes from the first one on.
        self.trainer.draws = WorkerDraws(self.dataset_dict["train_ulb"], cfg.queue_workers)

    def set_hooks(self):
        super().set_hooks()
        self.register_hook(RunEndHook(), "RSMatchRunEndHook", "VERY_HIGH")
        # NORMAL: after EvaluationHook (HIGH), before LoggingHook (LOWEST).
        self.register_hook(DetectorEvalHook(), "DetectorEvalHook", "NORMAL")

    def dummy_head_loss(self, feats, pseudo_label, mask, syn):
        """The exported loss (``dummy_pseudo_label: real``), or with the dummy head's own weak-view prediction,
        thresholded at ``p_cutoff``, as its targets (``dummy_pseudo_label: dummy``)."""
        if self.rs.dummy_pseudo_label == "real":
            return super().dummy_head_loss(feats, pseudo_label, mask, syn)
        both = torch.cat((feats["x_ulb_w"].detach(), feats["x_ulb_s"]))
        logits_w, logits_s = self.extra_heads(both)["dummy"].chunk(2)
        probs_w = self.compute_prob(logits_w.detach())
        mask = probs_w.amax(dim=-1).ge(self.rs.p_cutoff).to(probs_w.dtype)
        pseudo_label = self.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs_w,
                                      use_hard_label=self.use_hard_label, T=self.T, softmax=False)
        return self.consistency_loss(logits_s, pseudo_label, "ce", mask=mask * syn)

    def get_save_dict(self):
        save_dict = super().get_save_dict()
        # For rsmatch-detect only (never loaded): the threshold, and how images are viewed.
        save_dict["rsmatch_state"]["scoring"] = {
            "routing_threshold": torch.tensor(float(self.router.routing_threshold)),
            "eval_view": view_settings(self.dataset_dict["eval"].transform)}
        return save_dict

    @classmethod
    def get_argument(cls):
        """RSMatch's arguments with the plugin's keys, the diagnostic ones too, then the base's."""
        return _merge_arguments(rs_arguments(diagnostic=True), super().get_argument())


class RSFixMatch(PluginMixin, exported.RSMatch):
    """RSMatch on FixMatch (the paper's, the exported algorithm), with the plugin's features."""


class RSFlexMatch(PluginMixin, exported.RSMixin, FlexMatch):
    """RSMatch on FlexMatch (curriculum per-class thresholds)."""

    def base_train_step(self, idx_ulb, **inputs):
        # Where USB's process_batch would put it: FlexMatch indexes a tensor on the model's device with it.
        return FlexMatch.train_step(self, idx_ulb=idx_ulb.to(inputs["x_lb"].device), **inputs)


class RSFreeMatch(PluginMixin, exported.RSMixin, FreeMatch):
    """RSMatch on FreeMatch (self-adaptive thresholds, fairness entropy term)."""


class RSSoftMatch(PluginMixin, exported.RSMixin, SoftMatch):
    """RSMatch on SoftMatch (truncated-Gaussian sample weights, uniform distribution alignment)."""


RS_VARIANTS = {"fixmatch": RSFixMatch, "flexmatch": RSFlexMatch, "freematch": RSFreeMatch,
               "softmatch": RSSoftMatch}


class RSMatch:
    """``algorithm: rsmatch`` in the plugin: builds the RS variant of ``base_algorithm`` (default fixmatch).

    USB's registry calls this with the run's args; the object returned is an
    instance of one of :attr:`variants`. Its arguments are RSMatch's and every
    supported base's.
    """

    variants = RS_VARIANTS

    def __new__(cls, args: Any, net_builder: Any, tb_log: Any = None, logger: Any = None) -> Any:
        # Checked here too, before the base builds its model and data.
        cfg = checked(RSMatchConfig.from_args(args))
        return cls.variants[cfg.base_algorithm](args, net_builder, tb_log, logger)

    @classmethod
    def get_argument(cls) -> List[SSL_Argument]:
        return _merge_arguments(*(variant.get_argument() for variant in cls.variants.values()))


# Registered in place of the exported RSMatch (registered when .rsmatch was imported); USB's registry
# prints a notice for a key it already holds, which here is the intended replacement.
with contextlib.redirect_stdout(io.StringIO()):
    ALGORITHMS.register("rsmatch")(RSMatch)
