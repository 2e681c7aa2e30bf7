"""RSMatch's hooks: routing the base's unlabeled mask, placing the detector, evaluating it and the queue."""
import logging

import numpy as np
import torch
from semilearn.algorithms.hooks import MaskingHook, PseudoLabelingHook
from semilearn.core.hooks import Hook
from sklearn.metrics import precision_score, recall_score
from torch.utils.data import DataLoader

from rsmatch_usb.fingerprints import fingerprint, log_fingerprint
from rsmatch_usb.origin import auroc_by_source, unlabeled_origin

from ..common import IndexedImages, at_eval_on_main_rank


class RoutedMaskingHook(MaskingHook):
    """The base's MaskingHook, its mask multiplied by "judged real" while :attr:`real` is set.

    Registered as ``MaskingHook`` in the base's place, so the base's train
    step calls it where it called its own: the real head's unlabeled loss (and
    whatever else the base derives from the mask, e.g. FreeMatch's fairness
    term) then sees only judged-real samples, while the base's threshold
    statistics are still estimated on the whole batch. The base's own mask is
    kept in :attr:`mask` for the dummy head. The bases read and write their
    hook's state through ``hooks_dict["MaskingHook"]`` (FlexMatch's
    ``classwise_acc`` in its checkpoint), so every other attribute is the
    inner hook's.
    """

    _OWN = frozenset({"inner", "real", "mask", "priority", "name"})

    def __init__(self, inner: MaskingHook):
        super().__init__()
        self.inner = inner
        self.real = None  # 1 per sample judged real, 0 per sample judged synthetic; None: the base's mask
        self.mask = None  # the base's mask at the last call

    def masking(self, algorithm, *args, **kwargs):
        self.mask = self.inner.masking(algorithm, *args, **kwargs)
        return self.mask if self.real is None else self.mask * self.real

    def __getattr__(self, name):
        inner = self.__dict__.get("inner")
        if inner is None or name in self._OWN:  # register_hook requires a hook without its own priority yet
            raise AttributeError(name)
        return getattr(inner, name)

    def __setattr__(self, name, value):
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    # USB calls these on the hook registered as MaskingHook: now this one, standing in for the inner hook.
    def update(self, *args, **kwargs):
        return self.inner.update(*args, **kwargs)

    def before_run(self, algorithm):
        self.inner.before_run(algorithm)

    def after_run(self, algorithm):
        self.inner.after_run(algorithm)

    def before_train_epoch(self, algorithm):
        self.inner.before_train_epoch(algorithm)

    def after_train_epoch(self, algorithm):
        self.inner.after_train_epoch(algorithm)

    def before_train_step(self, algorithm):
        self.inner.before_train_step(algorithm)

    def after_train_step(self, algorithm):
        self.inner.after_train_step(algorithm)


class RecordingPseudoLabelingHook(PseudoLabelingHook):
    """USB's PseudoLabelingHook that keeps its last targets (the base's, for the dummy head and the queue)."""

    targets = None

    def gen_ulb_targets(self, algorithm, *args, **kwargs):
        self.targets = super().gen_ulb_targets(algorithm, *args, **kwargs)
        return self.targets


def replace_hook(algorithm, name: str, hook: Hook) -> None:
    """Register ``hook`` as ``name`` in place of the hook registered under that name, at its priority."""
    old = algorithm.hooks_dict[name]
    # USB has no unregister: the old hook leaves the ordered list the registry is rebuilt from.
    algorithm._hooks.remove(old)
    algorithm.register_hook(hook, name, old.priority)


class DetectorPlacementHook(Hook):
    """Moves the detector to the backbone's device (under DDP: trains it through DistributedDataParallel).

    After the run it stops the queue-draw workers and, under DDP, logs a
    fingerprint of the detector and the queue.
    """

    def before_run(self, algorithm):
        if algorithm.detector is None:  # use_detector: False
            return
        device = next(algorithm.model.parameters()).device
        algorithm.detector.to(device)
        if algorithm.distributed and torch.distributed.is_initialized():
            algorithm.detector.distribute([device.index] if device.type == "cuda" else None)

    def after_run(self, algorithm):
        algorithm.trainer.close()
        if algorithm.detector is None or not (algorithm.distributed and torch.distributed.is_initialized()):
            return
        # Every rank's value, on one line of rank 0 (as the train command does for the backbone).
        log_fingerprint(logging.getLogger(algorithm.args.save_name), "RSMatch detector and queue fingerprint",
                        fingerprint(algorithm.detector.tensors() + list(algorithm.csqueue.state_dict().values())))


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
