"""RSMatch's hooks: routing the base's unlabeled mask, recording its pseudo-labels, placing the detector."""
import torch
from semilearn.algorithms.hooks import MaskingHook, PseudoLabelingHook
from semilearn.core.hooks import Hook


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
    """Moves the detector to the backbone's device (under DDP: trains it through DistributedDataParallel)."""

    def before_run(self, algorithm):
        if algorithm.detector is None:  # use_detector: False
            return
        device = next(algorithm.model.parameters()).device
        algorithm.detector.to(device)
        if algorithm.distributed and torch.distributed.is_initialized():
            algorithm.detector.distribute([device.index] if device.type == "cuda" else None)
