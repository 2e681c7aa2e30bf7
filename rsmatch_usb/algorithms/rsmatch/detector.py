"""RSMatch's real-vs-synthetic detector: the network, and the component that trains and scores with it.

The paper calls for a "lightweight deepfake detector" trained jointly with the
classifier and gives no architecture; :class:`DetectorNet`, a small CNN, is our
choice. The first convolution keeps full resolution because generator
artefacts live in fine, high-frequency detail; two strided convolutions,
global pooling and a linear layer then give one logit (positive = synthetic).

:class:`Detector` holds what RSMatch trains and scores with: the network, an
EMA copy that scores, and the network's own Adam optimizer, with one
``state_dict``. Plain PyTorch, like :class:`~.csqueue.CSQueue`: usable and
tested without semilearn.
"""
import copy

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .config import RSMatchConfig

_DEFAULTS = RSMatchConfig()


def _conv_bn_relu(in_ch, out_ch, stride):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DetectorNet(nn.Module):
    """Three conv-BN-ReLU layers (widths w, 2w, 4w), global pooling, one logit per image."""

    def __init__(self, width=16, in_chans=3):
        super().__init__()
        self.features = nn.Sequential(_conv_bn_relu(in_chans, width, 1),
                                      _conv_bn_relu(width, 2 * width, 2),
                                      _conv_bn_relu(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, 1)

    def forward(self, x):
        feat = self.features(x).mean(dim=(2, 3))
        return self.fc(feat).squeeze(1)


class Detector:
    """The detector network, its EMA scorer and its Adam optimizer.

    Scores come from the EMA copy in eval mode (running BatchNorm statistics):
    for a small network moving fast under Adam on small batches the running
    statistics lag the weights, and the raw network's scores drift far from
    calibrated; slowly moving weights whose statistics are refreshed on each
    training batch keep them consistent. Training and scoring run in fp32 with
    autocast off, whatever the classifier's ``amp`` setting.

    Args:
        width: network widths are w, 2w, 4w.
        lr, weight_decay: the network's Adam.
        ema_m: EMA momentum of the scoring copy (0: score with the network's weights).
        ema_warmup: use momentum ``min(ema_m, 1 - 1 / (t + 1))`` at step ``t``, so that early
            scores follow the network (a plain average of its first steps) instead of lagging
            ~1 / (1 - ema_m) steps behind while the queue is being filled.
        seed: initialises the network from a private stream; the global RNG is left as it was.
    """

    def __init__(self, width=_DEFAULTS.detector_width, lr=_DEFAULTS.detector_lr, weight_decay=_DEFAULTS.detector_wd,
                 ema_m=_DEFAULTS.detector_ema_m, seed=0, in_chans=3, ema_warmup=_DEFAULTS.detector_ema_warmup):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only, as images.private_rng
            self.net = DetectorNet(width, in_chans)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.ema_m = ema_m
        self.ema_warmup = ema_warmup
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        # What the training step calls: the network, or its DDP wrapper (see distribute).
        self.trained = self.net

    @property
    def device(self):
        return next(self.net.parameters()).device

    def to(self, device):
        """Move the network and the scorer (load optimizer state after this, so it follows)."""
        self.net.to(device)
        self.ema.to(device)
        return self

    def distribute(self, device_ids=None):
        """Train through DistributedDataParallel: gradients all-reduced, rank 0's buffers broadcast.

        The EMA copy's BatchNorm statistics are then averaged over the ranks at
        each update, so every rank scores alike.
        """
        self.trained = nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids)
        return self

    @torch.no_grad()
    def score(self, x):
        """P(synthetic) per image, from the EMA copy in eval mode.

        In fp32 even inside the train step's autocast (``amp: True``): in fp16 the
        sigmoid rounds to 1.0 from a logit of about 8, and the queue's top-Q
        choice would then pick among ties by position.
        """
        self.ema.eval()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.sigmoid(self.ema(x.float()))

    def step(self, x, target, weight=None):
        """One optimizer step on weighted BCE (target 1 = synthetic), then the EMA update on ``x``.

        The loss is ``sum(weight * bce) / sum(weight)``. Returns (loss, accuracy
        on this batch) as floats.
        """
        if weight is None:
            weight = torch.ones_like(target)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = self.trained(x.float())
            loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.update_ema(x)
        acc = ((logits.detach() >= 0).float() == target).float().mean()
        loss, acc = torch.stack((loss.detach(), acc)).tolist()  # one device-to-host copy
        return loss, acc

    @torch.no_grad()
    def update_ema(self, x):
        """Move the EMA weights toward the network's, then refresh its BatchNorm statistics on ``x``."""
        m = self.ema_m
        if self.ema_warmup:
            # Steps taken so far, from Adam's own per-parameter count (saved with the optimizer).
            steps = float(self.optimizer.state[next(self.net.parameters())].get("step", 1))
            m = min(m, 1 - 1 / (steps + 1))
        ema_params = list(self.ema.parameters())
        torch._foreach_mul_(ema_params, m)  # all parameters in one call each, as torch's optimizers do
        torch._foreach_add_(ema_params, [p.detach() for p in self.net.parameters()], alpha=1 - m)
        self.ema.train()
        with torch.autocast(device_type=x.device.type, enabled=False):
            self.ema(x.float())
        self.ema.eval()
        if self.trained is not self.net and dist.is_initialized() and dist.get_world_size() > 1:
            for buf in self.ema.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf)
                    buf.div_(dist.get_world_size())

    def state_dict(self):
        """Checkpoint entries: ``detector``, ``detector_ema``, ``detector_optimizer`` (tensors only)."""
        return {"detector": self.net.state_dict(), "detector_ema": self.ema.state_dict(),
                "detector_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["detector"])
        self.ema.load_state_dict(state["detector_ema"])
        # torch puts each parameter's optimizer state on that parameter's device.
        self.optimizer.load_state_dict(state["detector_optimizer"])

    def tensors(self):
        """Every tensor that must agree across DDP ranks (for a fingerprint)."""
        return list(self.net.parameters()) + list(self.ema.state_dict().values())


def count_params(module):
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module, example):
    """FLOPs of one forward pass on ``example`` (eval mode, so BatchNorm statistics are untouched)."""
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        module.train(was_training)
    return counter.get_total_flops()
