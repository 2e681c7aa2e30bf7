"""RSMatch's real-vs-synthetic detector and its cost relative to the classifier.

The paper calls for a "lightweight deepfake detector" trained jointly with the
classifier and gives no architecture; this small CNN is our choice. The first
convolution keeps full resolution because generator artefacts live in fine,
high-frequency detail; two strided convolutions, global pooling and a linear
layer then give one logit (positive = synthetic).
"""
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def _conv_bn_relu(in_ch, out_ch, stride):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class Detector(nn.Module):
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
