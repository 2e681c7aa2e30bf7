"""RSMatch's real-vs-synthetic detector: the network, and the component that trains and scores with it.

The paper asks for a "lightweight deepfake detector" and gives no architecture; :class:`DetectorNet` is our
choice. Its first convolution keeps full resolution, because generator artefacts live in fine detail.
"""
import copy
from typing import Callable, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .keys import RSMatchConfig
from .detector_inputs import make_input

_DEFAULTS = RSMatchConfig()


def _conv_bn_relu(in_ch, out_ch, stride):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DetectorNet(nn.Module):
    """The ``input`` transform, three conv-BN-ReLU layers (widths w, 2w, 4w), global pooling, one logit per image."""

    def __init__(self, width: int = 16, in_chans: int = 3, input: str = "rgb"):
        super().__init__()
        self.transform = make_input(input)  # parameter-free: the weights' entries are the same for every input
        self.features = nn.Sequential(_conv_bn_relu(self.transform.out_chans(in_chans), width, 1),
                                      _conv_bn_relu(width, 2 * width, 2),
                                      _conv_bn_relu(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, 1)

    def forward(self, x):
        return self.fc(self.features(self.transform(x)).mean(dim=(2, 3))).squeeze(1)


class Detector:
    """The detector network, its EMA copy that scores, and its own Adam optimizer.

    Scores come from the EMA copy in eval mode: for a small network moving fast under Adam on small batches,
    running BatchNorm statistics lag the weights and raw scores drift from calibrated; slowly moving weights
    whose statistics are refreshed on each training batch keep them consistent. It runs in fp32 whatever
    ``amp``. With ``ema_warmup`` the momentum at step t is ``min(ema_m, 1 - 1 / (t + 1))``, so that early
    scores follow the network while the queue fills. ``seed`` initialises the network from a private stream.
    """

    net_class = DetectorNet

    def __init__(self, width=_DEFAULTS.detector_width, lr=_DEFAULTS.detector_lr, weight_decay=_DEFAULTS.detector_wd,
                 ema_m=_DEFAULTS.detector_ema_m, seed=0, in_chans=3, ema_warmup=_DEFAULTS.detector_ema_warmup,
                 input: str = "rgb"):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only, as utils.private_rng
            self.net = self.net_class(width, in_chans, input)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.ema_m, self.ema_warmup = ema_m, ema_warmup
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.trained = self.net  # or its DDP wrapper (distribute)

    def to(self, device):
        """Move the network and the scorer (load optimizer state after this, so it follows)."""
        self.net.to(device)
        self.ema.to(device)
        return self

    def distribute(self, device_ids=None):
        """Train through DistributedDataParallel; the EMA copy's BatchNorm statistics are then averaged over the
        ranks at each update, so every rank scores alike."""
        self.trained = nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids)
        return self

    @torch.no_grad()
    def score(self, x):
        """P(synthetic) per image. In fp32 even under ``amp``: fp16 rounds the sigmoid to 1.0 from a logit of
        about 8, and the queue's top-Q choice would then pick among ties by position."""
        self.ema.eval()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.sigmoid(self.ema(x.float()))

    def step(self, x, target, weight=None):
        """One step on ``sum(weight * bce) / sum(weight)`` (target 1: synthetic); (loss, accuracy) as floats."""
        weight = torch.ones_like(target) if weight is None else weight

        def bce(logits):
            loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
            return loss, loss

        loss, logits = self._update(x, bce)
        return tuple(torch.stack((loss, ((logits >= 0).float() == target).float().mean())).tolist())

    def _update(self, x: torch.Tensor, loss_of: Callable) -> Tuple[torch.Tensor, torch.Tensor]:
        """Descend ``loss_of(logits)[0]`` on ``x``, update the EMA; (``loss_of(logits)[1]``, logits), detached."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = self.trained(x.float())
            objective, reported = loss_of(logits)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        self.update_ema(x)
        return reported.detach(), logits.detach()

    @torch.no_grad()
    def update_ema(self, x):
        """Move the EMA weights toward the network's, then refresh its BatchNorm statistics on ``x``."""
        m = self.ema_m
        if self.ema_warmup:  # steps taken so far: Adam's own count, saved with the optimizer
            m = min(m, 1 - 1 / (float(self.optimizer.state[next(self.net.parameters())].get("step", 1)) + 1))
        ema_params = list(self.ema.parameters())
        torch._foreach_mul_(ema_params, m)
        torch._foreach_add_(ema_params, [p.detach() for p in self.net.parameters()], alpha=1 - m)
        self.ema.train()
        with torch.autocast(device_type=x.device.type, enabled=False):
            self.ema(x.float())
        self.ema.eval()
        if self.trained is not self.net and dist.is_initialized() and dist.get_world_size() > 1:
            for buf in (b for b in self.ema.buffers() if b.is_floating_point()):
                dist.all_reduce(buf)
                buf.div_(dist.get_world_size())

    def state_dict(self):
        """Checkpoint entries: ``detector``, ``detector_ema``, ``detector_optimizer``."""
        return {"detector": self.net.state_dict(), "detector_ema": self.ema.state_dict(),
                "detector_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["detector"])
        self.ema.load_state_dict(state["detector_ema"])
        self.optimizer.load_state_dict(state["detector_optimizer"])  # onto each parameter's device
