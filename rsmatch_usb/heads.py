"""Extra classifier heads on any USB backbone, kept beside ``self.model`` rather than inside it, so that the
backbone, its EMA copy, USB's evaluation and USB's checkpoint entries (``model``/``ema_model``, loadable by USB's
eval.py into the plain net) stay exactly USB's. The heads train with the backbone's optimizer and schedule,
follow it to its device (and into DDP), and are saved under ``extra_heads``."""
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn
from semilearn.core.hooks import Hook
from semilearn.core.utils import get_optimizer, get_cosine_schedule_with_warmup


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DataParallel/DistributedDataParallel wrapper."""
    return module.module if hasattr(module, "module") else module


class HeadSet(nn.Module):
    """Named heads on the same features, ``heads(feat) -> {name: output}``: one module, so that DDP can wrap it."""

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
        self.model, self.heads = model, heads

    def no_weight_decay(self):
        return [f"model.{name}" for name in getattr(self.model, "no_weight_decay", lambda: [])()]

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
            heads = nn.parallel.DistributedDataParallel(heads, device_ids=device_ids, broadcast_buffers=False,
                                                        find_unused_parameters=True)
        algorithm.extra_heads = heads

    def after_train_step(self, algorithm: Any) -> None:
        # USB's ParamUpdateHook (run just before this one) zeroes only algorithm.model's gradients.
        algorithm.extra_heads.zero_grad(set_to_none=True)


class ExtraHeadsMixin:
    """Adds the heads of :meth:`build_extra_heads` to an AlgorithmBase subclass (mix in before it); its train
    step calls ``self.extra_heads(feat)``."""

    def build_extra_heads(self, num_features: int) -> Dict[str, nn.Module]:
        """Return ``{name: nn.Module}`` of heads that take pooled features."""
        raise NotImplementedError

    def set_model(self) -> nn.Module:
        model = super().set_model()
        # From a private RNG stream, so that the global one (data order, augmentation, the EMA copy)
        # advances exactly as for the base algorithm.
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
        # Heads on the backbone's device before the optimizer state is loaded, which torch puts on each
        # parameter's device (HeadPlacementHook would move only the heads later, on a GPU resume).
        unwrap(self.extra_heads).to(next(unwrap(self.model).parameters()).device)
        checkpoint = super().load_model(load_path)
        unwrap(self.extra_heads).load_state_dict(checkpoint["extra_heads"])
        return checkpoint
