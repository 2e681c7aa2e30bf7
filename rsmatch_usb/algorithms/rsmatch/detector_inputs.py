"""What the detector looks at: parameter-free transforms of a batch ``(N, C, H, W)``, applied before its first
convolution. A CNN fed raw pixels learns what the images show before how they were made; a residual that
drops the content keeps a generator's up-sampling traces (Tan et al., CVPR 2024, NPR)."""
from typing import Dict, List, Type

import torch
import torch.nn as nn


class RGB(nn.Module):
    """The normalised image itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def out_chans(in_chans: int) -> int:
        return in_chans


class NPR(RGB):
    """Neighbouring-pixel residual: each pixel minus the top-left pixel of its 2x2 block (NPR's
    ``x - interpolate(interpolate(x, 0.5), 2)``), zero or periodic where a generator up-sampled 2x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        anchors = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return x - anchors[..., :h, :w]


class Stacked(nn.Module):
    """Several transforms' outputs on the channel axis (``rgb+npr``: content and traces find different generators)."""

    def __init__(self, parts: List[RGB]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=1)

    def out_chans(self, in_chans: int) -> int:
        return sum(part.out_chans(in_chans) for part in self.parts)


INPUTS: Dict[str, Type[RGB]] = {"rgb": RGB, "npr": NPR}


def make_input(name: str) -> nn.Module:
    """The transform ``INPUTS[name]``, or several different ones joined by '+' (``rgb+npr``), stacked."""
    names = name.split("+")
    if any(n not in INPUTS for n in names) or len(set(names)) != len(names):
        raise ValueError(f"detector input {name!r}: use one of {', '.join(INPUTS)}, or several different ones "
                         "joined by '+' (e.g. rgb+npr)")
    parts = [INPUTS[n]() for n in names]
    return parts[0] if len(parts) == 1 else Stacked(parts)
