"""Extra classifier heads on any USB backbone, without editing the backbone.

Heads that read the backbone's pooled features, RSMatch's dummy head among
them, need no place in the net itself. :class:`ExtraHeadsMixin` keeps
them beside ``self.model`` rather than inside it, so the backbone, its EMA
copy, USB's evaluation and USB's checkpoint entries (``model``/``ema_model``,
loadable by USB's eval.py into the plain net) stay exactly USB's. The heads
train with the backbone's optimizer and schedule, follow it to its device (and
into DDP), and are saved under ``extra_heads``.
"""
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
from semilearn.core.hooks import Hook
from semilearn.core.utils import get_optimizer, get_cosine_schedule_with_warmup


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DataParallel/DistributedDataParallel wrapper."""
    return module.module if hasattr(module, "module") else module


class HeadSet(nn.Module):
    """Named heads applied to the same features: ``heads(feat) -> {name: output}``.

    One module with a forward (not a bare ModuleDict) so that DDP can wrap it
    and all-reduce the heads' gradients.
    """

    def __init__(self, heads):
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, feat: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {name: head(feat) for name, head in self.heads.items()}

    def __getitem__(self, name):
        return self.heads[name]


class _Trainable(nn.Module):
    """Backbone and heads seen as one module, only to build one optimizer over both."""

    def __init__(self, model, heads):
        super().__init__()
        self.model = model
        self.heads = heads

    def no_weight_decay(self):
        inner = getattr(self.model, "no_weight_decay", lambda: [])()
        return [f"model.{name}" for name in inner]

    def group_matcher(self, coarse=False, prefix=""):
        return self.model.group_matcher(coarse, prefix=prefix + "model.")


class HeadPlacementHook(Hook):
    """Puts the heads on the backbone's device (in DDP when distributed); clears their gradients each step."""

    def before_run(self, algorithm: Any) -> None:
        heads = unwrap(algorithm.extra_heads)
        device = next(algorithm.model.parameters()).device
        heads.to(device)
        if algorithm.distributed and torch.distributed.is_initialized():
            device_ids = [device.index] if device.type == "cuda" else None
            algorithm.extra_heads = nn.parallel.DistributedDataParallel(
                heads, device_ids=device_ids, broadcast_buffers=False, find_unused_parameters=True)
        else:
            algorithm.extra_heads = heads

    def after_train_step(self, algorithm: Any) -> None:
        # USB's ParamUpdateHook (run just before this one) zeroes only
        # algorithm.model's gradients; without this the heads' would accumulate.
        algorithm.extra_heads.zero_grad(set_to_none=True)


class ExtraHeadsMixin:
    """Mix into an AlgorithmBase subclass (before it in the bases) to add heads.

    Subclasses implement :meth:`build_extra_heads`; they call
    ``self.extra_heads(feat)`` in their train step.
    """

    def build_extra_heads(self, num_features: int) -> Dict[str, nn.Module]:
        """Return ``{name: nn.Module}`` of heads that take pooled features."""
        raise NotImplementedError

    def set_model(self) -> nn.Module:
        model = super().set_model()
        # Initialise the heads from a private RNG stream: the global stream then
        # advances exactly as for the base algorithm, so data order, augmentation
        # and the EMA copy match it step for step under the same seed.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.args.seed + 7919)  # CPU only: see utils.private_rng
            self.extra_heads = HeadSet(self.build_extra_heads(model.num_features))
        return model

    def set_optimizer(self) -> Tuple[torch.optim.Optimizer, Any]:
        self.print_fn("Create optimizer and scheduler (backbone + extra heads)")
        optimizer = get_optimizer(_Trainable(self.model, self.extra_heads), self.args.optim, self.args.lr,
                                  self.args.momentum, self.args.weight_decay, self.args.layer_decay)
        scheduler = get_cosine_schedule_with_warmup(optimizer, self.num_train_iter,
                                                    num_warmup_steps=self.args.num_warmup_iter)
        return optimizer, scheduler

    def set_hooks(self) -> None:
        super().set_hooks()
        self.register_hook(HeadPlacementHook(), "HeadPlacementHook", "VERY_HIGH")

    def get_save_dict(self) -> Dict[str, Any]:
        save_dict = super().get_save_dict()
        save_dict["extra_heads"] = unwrap(self.extra_heads).state_dict()
        return save_dict

    def load_model(self, load_path: str) -> Dict[str, Any]:
        # Heads on the backbone's device before the optimizer state is loaded: torch
        # puts each parameter's state (e.g. SGD momentum) on that parameter's device,
        # and HeadPlacementHook would move only the heads later (GPU resume).
        unwrap(self.extra_heads).to(next(unwrap(self.model).parameters()).device)
        checkpoint = super().load_model(load_path)
        unwrap(self.extra_heads).load_state_dict(checkpoint["extra_heads"])
        return checkpoint
