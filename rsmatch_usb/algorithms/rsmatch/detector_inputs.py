"""What the detector looks at: input transforms that keep a generator's traces and drop the image's content.

A CNN fed raw pixels learns what the images show before it learns how they
were made, and with a few dozen known-real images it memorises them instead.
Generated images are told apart by the traces of their up-sampling layers and
their spectra (Wang et al., CVPR 2020; Frank et al., ICML 2020), which a
residual that removes the content exposes (Tan et al., CVPR 2024, NPR). Each
transform is a parameter-free module on a batch ``(N, C, H, W)``, applied by
:class:`~.detector.DetectorNet` before its first convolution, so the scoring
and training code is the same for every input; ``INPUTS`` maps the
``input`` key to it.

Like the detector, plain PyTorch (no semilearn, no torchvision): RSMatch's
package is exported into USB as it is.
"""
from typing import Dict, List, Type

import torch
import torch.nn as nn
import torch.nn.functional as F


class RGB(nn.Module):
    """The normalised image itself (the detector's first input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def out_chans(in_chans: int) -> int:
        return in_chans


class HighPass(RGB):
    """``x`` minus its 3x3 mean, per channel: the fine detail where up-sampling leaves its pattern.

    Borders are replicated, so a constant image gives exactly zero everywhere,
    the border included.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


class NPR(RGB):
    """Neighbouring-pixel residual (Tan et al., CVPR 2024): ``x`` minus the nearest-neighbour
    up-sampling of its 2x nearest-neighbour down-sampling.

    Each pixel minus the top-left pixel of its 2x2 block, as NPR's
    ``x - interpolate(interpolate(x, 0.5), 2)``: an image that a generator
    up-sampled 2x by nearest neighbour (or a transposed convolution with
    stride 2) repeats itself within those blocks, so its residual is zero or
    periodic where a real image's is not. Odd sizes keep their last row and
    column (their blocks are cut short).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        anchors = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return x - anchors[..., :h, :w]


class Spectrum(HighPass):
    """``log(1 + |FFT|)`` of the high-pass residual per channel, zero frequency centred (Frank et al., ICML 2020).

    Up-sampling replicates the spectrum and leaves peaks at fixed
    frequencies, the same place in every image; the orthonormal FFT keeps the
    values on the pixels' scale, and ``log1p`` maps a zero residual to zero.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.fft2(super().forward(x).float(), norm="ortho")
        return torch.log1p(torch.fft.fftshift(spectrum.abs(), dim=(-2, -1)))


class Stacked(nn.Module):
    """Several transforms' outputs side by side on the channel axis (``rgb+npr``: the pixels and their residual).

    Content and up-sampling traces find different generators: on the bundled
    fashion sources the pixels separate the DDIM images best and the NPR
    residual the GAN and DPM-Solver images (docs/rsmatch.md, "Detector inputs").
    """

    def __init__(self, parts: List[RGB]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=1)

    def out_chans(self, in_chans: int) -> int:
        return sum(part.out_chans(in_chans) for part in self.parts)


INPUTS: Dict[str, Type[RGB]] = {"rgb": RGB, "highpass": HighPass, "npr": NPR, "spectrum": Spectrum}


def make_input(name: str) -> nn.Module:
    """The transform ``INPUTS[name]``, or several joined by ``+`` (``rgb+npr``) stacked on the channel axis.

    An unknown name is a ValueError naming the choices.
    """
    names = name.split("+")
    unknown = [n for n in names if n not in INPUTS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"detector input {name!r}: use one of {', '.join(INPUTS)}, or several different ones "
                         "joined by '+' (e.g. rgb+npr)")
    parts = [INPUTS[n]() for n in names]
    return parts[0] if len(parts) == 1 else Stacked(parts)
