"""Small CPU-friendly backbones that honour USB's net contract, and the net lookup.

USB nets are called as ``net(x)`` -> ``{'logits', 'feat'}``, ``net(feat,
only_fc=True)`` -> logits and ``net(x, only_feat=True)`` -> pooled features, and
expose ``num_features``, ``extract`` (feature maps), ``group_matcher`` and
``no_weight_decay``. The nets here follow that contract so every USB algorithm,
and RSMatch's extra heads, can use them; tests and the embedded demo train in
seconds per hundred iterations on 2 cores.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError


class _ResidualBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch, momentum=0.01)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, momentum=0.01)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_ch, momentum=0.01))

    def forward(self, x):
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.leaky_relu(out + skip, 0.1)


class TinyResNet(nn.Module):
    """A three-stage residual CNN of a few ten-thousand parameters.

    ``extract`` returns 8x8 feature maps whatever the input size because CRMatch
    sizes its head from an 8x8 map for every 'resnet'/'wrn' net on CIFAR-like data.
    """

    feature_map_size = 8

    def __init__(self, num_classes, widths=(16, 32, 64), in_chans=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], momentum=0.01)
        blocks, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            blocks.append(_ResidualBlock(in_ch, width, stride=1 if i == 0 else 2))
            in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = in_ch
        self.classifier = nn.Linear(in_ch, num_classes)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = self.blocks(out)
        if out.shape[-1] != self.feature_map_size:
            out = F.adaptive_avg_pool2d(out, self.feature_map_size)
        return out

    def forward(self, x: torch.Tensor, only_fc: bool = False, only_feat: bool = False,
                **kwargs: Any) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        if only_fc:
            return self.classifier(x)
        feat = F.adaptive_avg_pool2d(self.extract(x), 1).flatten(1)
        if only_feat:
            return feat
        return {"logits": self.classifier(feat), "feat": feat}

    def group_matcher(self, coarse: bool = False, prefix: str = "") -> Dict[str, str]:
        return dict(stem=rf"^{prefix}conv1|^{prefix}bn1",
                    blocks=rf"^{prefix}blocks\.(\d+)")

    def no_weight_decay(self) -> List[str]:
        return [n for n, _ in self.named_parameters() if "bn" in n or "bias" in n]


def resnet_tiny(num_classes: int = 10, pretrained: bool = False, pretrained_path: Any = None,
                **kwargs: Any) -> TinyResNet:
    """TinyResNet with widths 16/32/64 (about 0.1M parameters)."""
    if pretrained:
        raise UserError("net: resnet_tiny has no pretrained weights; set use_pretrain: False")
    return TinyResNet(num_classes, **kwargs)


def resnet_micro(num_classes: int = 10, pretrained: bool = False, pretrained_path: Any = None,
                 **kwargs: Any) -> TinyResNet:
    """TinyResNet with widths 8/16/32 for the fastest tests."""
    if pretrained:
        raise UserError("net: resnet_micro has no pretrained weights; set use_pretrain: False")
    return TinyResNet(num_classes, widths=(8, 16, 32), **kwargs)


PLUGIN_NETS = {"resnet_tiny": resnet_tiny, "resnet_micro": resnet_micro}


def get_net_builder(net_name: str, from_name: bool = False) -> Callable[..., nn.Module]:
    """Return the builder for ``net``: a plugin net, a USB net, or a torchvision model.

    Unlike semilearn's lookup, an unknown name is a :class:`UserError` listing
    what exists instead of an AttributeError deep in the algorithm.
    """
    if net_name in PLUGIN_NETS and not from_name:
        return PLUGIN_NETS[net_name]
    if from_name:
        import torchvision.models as tv_models

        if callable(getattr(tv_models, net_name, None)) and net_name.islower():
            return getattr(tv_models, net_name)
        raise UserError(f"net: {net_name!r} is not a torchvision model; fix 'net' or set net_from_name: False")
    import semilearn.nets as usb_nets

    builder = getattr(usb_nets, net_name, None)
    if not callable(builder):
        known = sorted(PLUGIN_NETS) + sorted(n for n in dir(usb_nets) if not n.startswith("_")
                                             and callable(getattr(usb_nets, n)) and n.islower())
        raise UserError(f"net: unknown net {net_name!r}; use one of: {', '.join(known)}")
    return builder
