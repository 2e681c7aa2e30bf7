"""RSMatch as the plugin registers it: the exported algorithm (:mod:`.rsmatch`) plus the plugin's diagnostics.

The USB export carries :mod:`.rsmatch` and its components; this module, which
none of them imports, adds what serves analysis and this plugin's tools:

- ``detector_oracle``: route by the unlabeled set's ground-truth synthetic
  flags (:class:`OracleRouter`), the dummy head's ceiling;
- :class:`DetectorEvalHook`: detector AUROC/FPR and queue purity against those
  flags at each evaluation, over ``detector_eval_samples`` images;
- ``queue_workers``: the queue's draws read in worker processes
  (:mod:`.draw_workers`) instead of on the training thread;
- the log lines of the detector's cost and, under DDP, of the fingerprint of
  the detector and the queue at the end of the run;
- the ``scoring`` entry of the checkpoint that ``rsmatch-detect`` reads.

The diagnostic keys are :class:`~.config.RSMatchConfig`'s fields marked
``diagnostic``; the training itself is the exported algorithm's, step for step.
"""
import contextlib
import io
import logging
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
from semilearn.core.hooks import Hook
from semilearn.core.utils import ALGORITHMS
from sklearn.metrics import precision_score, recall_score
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from rsmatch_usb.errors import UserError
from rsmatch_usb.fingerprints import fingerprint, log_fingerprint
from rsmatch_usb.origin import auroc_by_source, unlabeled_origin

from ..common import IndexedImages, at_eval_on_main_rank
from . import rsmatch as exported
from .config import RSMatchConfig
from .detector import Detector
from .draw_workers import WorkerDraws
from .hooks import DetectorPlacementHook, replace_hook
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


class RunEndHook(DetectorPlacementHook):
    """The detector's placement, and at the end of the run: the draw workers stopped, the DDP fingerprint logged."""

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


class DiagnosticsMixin:
    """The plugin's diagnostics on an exported RS variant; mix in before it."""

    router_class = OracleRouter

    def init_rs(self, cfg: RSMatchConfig) -> None:
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
        replace_hook(self, "DetectorPlacementHook", RunEndHook())
        # NORMAL: after EvaluationHook (HIGH), before LoggingHook (LOWEST).
        self.register_hook(DetectorEvalHook(), "DetectorEvalHook", "NORMAL")

    def extra_state(self):
        state = super().extra_state()
        # For rsmatch-detect only (never loaded): the threshold, and how images are viewed.
        state["rsmatch_state"]["scoring"] = {
            "routing_threshold": torch.tensor(float(self.router.routing_threshold)),
            "eval_view": view_settings(self.dataset_dict["eval"].transform)}
        return state

    @classmethod
    def get_argument(cls):
        """RSMatch's arguments with its diagnostic keys, then the base's."""
        return exported._merge_arguments(exported.rs_arguments(diagnostic=True), super().get_argument())


class RSFixMatch(DiagnosticsMixin, exported.RSFixMatch):
    """RSMatch on FixMatch (the paper's), with the plugin's diagnostics."""


class RSFlexMatch(DiagnosticsMixin, exported.RSFlexMatch):
    """RSMatch on FlexMatch, with the plugin's diagnostics."""


class RSFreeMatch(DiagnosticsMixin, exported.RSFreeMatch):
    """RSMatch on FreeMatch, with the plugin's diagnostics."""


class RSSoftMatch(DiagnosticsMixin, exported.RSSoftMatch):
    """RSMatch on SoftMatch, with the plugin's diagnostics."""


RS_VARIANTS = {"fixmatch": RSFixMatch, "flexmatch": RSFlexMatch, "freematch": RSFreeMatch,
               "softmatch": RSSoftMatch}


class RSMatch(exported.RSMatch):
    """``algorithm: rsmatch`` in the plugin: the exported dispatcher over the variants with diagnostics."""

    variants = RS_VARIANTS


# Registered in place of the exported RSMatch (registered when .rsmatch was imported); USB's registry
# prints a notice for a key it already holds, which here is the intended replacement.
with contextlib.redirect_stdout(io.StringIO()):
    ALGORITHMS.register("rsmatch")(RSMatch)
