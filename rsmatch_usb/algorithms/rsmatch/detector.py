"""RSMatch's real-vs-synthetic detector: the network, and the component that trains and scores with it.

The paper calls for a "lightweight deepfake detector" trained jointly with the
classifier and gives no architecture; :class:`DetectorNet`, a small CNN, is our
choice. The first convolution keeps full resolution because generator
artefacts live in fine, high-frequency detail; two strided convolutions,
global pooling and a linear layer then give one logit (positive = synthetic).
What the first convolution sees is the ``input`` transform of the image
(:mod:`.detector_inputs`: the pixels, or a residual that keeps a generator's
traces); the network records its settings in its state dict, so a checkpoint
alone rebuilds it (:meth:`DetectorNet.from_state_dict`).

:class:`Detector` holds what RSMatch trains and scores with: the network, an
EMA copy that scores, and the network's own Adam optimizer, with one
``state_dict``. Plain PyTorch, like :class:`~.csqueue.CSQueue`: usable and
tested without semilearn.
"""
import copy
from typing import Any, Callable, Dict, Mapping, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .config import RSMatchConfig
from .detector_inputs import make_input

_DEFAULTS = RSMatchConfig()
# The key nn.Module gives get_extra_state's value in a state dict.
_EXTRA = "_extra_state"


def _conv_bn_relu(in_ch, out_ch, stride):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DetectorNet(nn.Module):
    """The ``input`` transform, three conv-BN-ReLU layers (widths w, 2w, 4w), global pooling, one logit per image.

    Its state dict holds, beside the weights, its construction settings
    (``width``, ``in_chans``, ``input``; nn.Module's extra state, a plain dict
    that ``torch.load(weights_only=True)`` reads). Loading a state dict made
    with other settings is a ValueError naming them; one saved before the
    settings were recorded (no extra-state entry) was made with the ``rgb``
    input, and loads strictly into a network with that input.
    """

    def __init__(self, width: int = 16, in_chans: int = 3, input: str = "rgb"):
        super().__init__()
        self.settings = {"width": int(width), "in_chans": int(in_chans), "input": str(input)}
        # Parameter-free, so the state dict's weight entries are the same for every input.
        self.transform = make_input(input)
        self.features = nn.Sequential(_conv_bn_relu(self.transform.out_chans(in_chans), width, 1),
                                      _conv_bn_relu(width, 2 * width, 2),
                                      _conv_bn_relu(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, 1)
        self.register_load_state_dict_pre_hook(_settings_of_old_checkpoints)

    def forward(self, x):
        feat = self.features(self.transform(x)).mean(dim=(2, 3))
        return self.fc(feat).squeeze(1)

    def get_extra_state(self) -> Dict[str, Any]:
        return dict(self.settings)

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        saved = {key: state.get(key) for key in self.settings}
        if saved != self.settings:
            differ = ", ".join(f"{key} {saved[key]!r} (this network: {self.settings[key]!r})"
                               for key in self.settings if saved[key] != self.settings[key])
            raise ValueError(f"the detector state was saved with other settings: {differ}")

    @classmethod
    def settings_of(cls, state: Mapping[str, Any]) -> Dict[str, Any]:
        """The construction settings of the network that saved ``state`` (inferred for an old state dict)."""
        if _EXTRA in state:
            return dict(state[_EXTRA])
        first = state["features.0.0.weight"]  # (width, in_chans, 3, 3); the rgb input kept in_chans
        return {"width": int(first.shape[0]), "in_chans": int(first.shape[1]), "input": "rgb"}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "DetectorNet":
        """The network ``state`` was saved from, its weights loaded (strictly), in eval mode."""
        net = cls(**cls.settings_of(state))
        net.load_state_dict(state)
        return net.eval()


def _settings_of_old_checkpoints(module, state_dict, prefix, *args):
    # A state dict from before the settings were recorded lacks the extra-state key, which
    # strict loading would report missing; it was saved by an rgb network, whose shapes say the rest.
    first = prefix + "features.0.0.weight"
    if prefix + _EXTRA not in state_dict and first in state_dict:
        state_dict[prefix + _EXTRA] = DetectorNet.settings_of({"features.0.0.weight": state_dict[first]})


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
        input: what the network sees, a key of :data:`.detector_inputs.INPUTS` (``rgb``: the pixels).
    """

    def __init__(self, width=_DEFAULTS.detector_width, lr=_DEFAULTS.detector_lr, weight_decay=_DEFAULTS.detector_wd,
                 ema_m=_DEFAULTS.detector_ema_m, seed=0, in_chans=3, ema_warmup=_DEFAULTS.detector_ema_warmup,
                 input: str = "rgb"):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only, as utils.private_rng
            self.net = DetectorNet(width, in_chans, input)
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

        def bce(logits):
            loss = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / weight.sum()
            return loss, loss

        loss, logits = self._update(x, bce)
        acc = ((logits >= 0).float() == target).float().mean()
        loss, acc = torch.stack((loss, acc)).tolist()  # one device-to-host copy
        return loss, acc

    def nnpu_step(self, x_real, x_unlabeled, prior, beta=0.0, gamma=1.0):
        """One optimizer step on the non-negative PU risk (Kiryo et al., NeurIPS 2017), then the EMA update.

        The known-real images ``x_real`` are the labeled (positive) class;
        ``x_unlabeled`` holds real images at rate ``prior`` and synthetic ones.
        With the logistic loss l, logit z (synthetic positive) and means over
        each batch, the synthetic-class risk estimated from the unlabeled data,
        ``r_s = E_U[l(z, 1)] - prior * E_real[l(z, 1)]``, can go negative when
        the network fits the few known reals; below ``-beta`` the step then
        ascends ``gamma * r_s`` instead of descending the total
        ``prior * E_real[l(z, 0)] + r_s``. Both batches pass in one forward
        (one set of BatchNorm statistics). Returns the risk as a float.
        """
        if not 0 < prior <= 1:
            raise ValueError(f"nnPU prior (share of real images among the unlabeled ones) must lie in (0, 1], "
                             f"got {prior}")
        n = len(x_real)

        def nnpu(logits):
            real, unlabeled = logits[:n], logits[n:]
            risk_real = prior * F.softplus(real).mean()
            risk_syn = F.softplus(-unlabeled).mean() - prior * F.softplus(-real).mean()
            objective = -gamma * risk_syn if risk_syn < -beta else risk_real + risk_syn
            return objective, risk_real + risk_syn

        return self._update(torch.cat((x_real, x_unlabeled)), nnpu)[0].item()

    def _update(self, x: torch.Tensor,
                loss_of: Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Descend ``loss_of(logits)[0]`` on ``x`` in fp32, update the EMA; (``loss_of(logits)[1]``, logits), detached."""
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
        """Checkpoint entries: ``detector``, ``detector_ema``, ``detector_optimizer``.

        Tensors and plain values only (the networks' settings are a dict of str and int), so
        ``torch.load(weights_only=True)`` reads them.
        """
        return {"detector": self.net.state_dict(), "detector_ema": self.ema.state_dict(),
                "detector_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["detector"])
        self.ema.load_state_dict(state["detector_ema"])
        # torch puts each parameter's optimizer state on that parameter's device.
        self.optimizer.load_state_dict(state["detector_optimizer"])
