"""The plugin's extensions of RSMatch's exported components: more detector inputs, networks that record their
settings, the nnPU step.

The USB export carries :mod:`.detector` and :mod:`.detector_inputs` as they
are; this module, which none of them imports, adds what the plugin's studies
and tools use: the ``highpass`` and ``spectrum`` inputs (registered in the
exported ``INPUTS``), a :class:`DetectorNet` whose state dict records its
construction settings so that a checkpoint alone rebuilds it (what
``rsmatch-detect`` reads), and :meth:`Detector.nnpu_step`. Plain PyTorch,
like the components.
"""
from typing import Any, Dict, Mapping

import torch
import torch.nn.functional as F

from . import detector
from .detector_inputs import INPUTS, RGB, make_input  # noqa: F401  (make_input: with the inputs below)

# The key nn.Module gives get_extra_state's value in a state dict.
_EXTRA = "_extra_state"


class HighPass(RGB):
    """``x`` minus its 3x3 mean, per channel: the fine detail where up-sampling leaves its pattern.

    Borders are replicated, so a constant image gives exactly zero everywhere,
    the border included.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


class Spectrum(HighPass):
    """``log(1 + |FFT|)`` of the high-pass residual per channel, zero frequency centred (Frank et al., ICML 2020).

    Up-sampling replicates the spectrum and leaves peaks at fixed
    frequencies, the same place in every image; the orthonormal FFT keeps the
    values on the pixels' scale, and ``log1p`` maps a zero residual to zero.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.fft2(super().forward(x).float(), norm="ortho")
        return torch.log1p(torch.fft.fftshift(spectrum.abs(), dim=(-2, -1)))


# In the order the choices are listed: npr moves behind highpass (the keyword arguments are evaluated first).
INPUTS.update(highpass=HighPass, npr=INPUTS.pop("npr"), spectrum=Spectrum)


class DetectorNet(detector.DetectorNet):
    """The exported network, its construction settings recorded in its state dict.

    Beside the weights the state dict holds ``width``, ``in_chans`` and
    ``input`` (nn.Module's extra state, a plain dict that
    ``torch.load(weights_only=True)`` reads). Loading a state dict made with
    other settings is a ValueError naming them; one saved before the settings
    were recorded (no extra-state entry) was made with the ``rgb`` input, and
    loads strictly into a network with that input.
    """

    def __init__(self, width: int = 16, in_chans: int = 3, input: str = "rgb"):
        super().__init__(width, in_chans, input)
        self.settings = {"width": int(width), "in_chans": int(in_chans), "input": str(input)}
        self.register_load_state_dict_pre_hook(_settings_of_old_checkpoints)

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


class Detector(detector.Detector):
    """The exported detector over the recording :class:`DetectorNet`, with an nnPU step for the studies."""

    net_class = DetectorNet

    def nnpu_step(self, x_real: torch.Tensor, x_unlabeled: torch.Tensor, prior: float, beta: float = 0.0,
                  gamma: float = 1.0) -> float:
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
