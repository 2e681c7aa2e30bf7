"""A small class-conditional DCGAN for 28x28 grayscale images, in plain PyTorch.

The non-diffusion generator family of the synthetic Fashion-MNIST sources
(``make_synthetic_fashion``): DCGAN layout (transposed-conv generator,
strided-conv discriminator, batch norm, LeakyReLU, Adam with beta1 0.5) made
class-conditional the usual way, a label embedding concatenated to the
generator's noise and given to the discriminator as an extra input plane.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from data_tools.diffusion_generator import to_uint8
from data_tools.resumable_training import ResumableBatches


class Generator(nn.Module):
    """(noise, class) -> 1x28x28 image in [-1, 1]."""

    def __init__(self, num_classes: int = 10, z_dim: int = 64, width: int = 64):
        super().__init__()
        self.z_dim = z_dim
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Sequential(nn.Linear(2 * z_dim, 2 * width * 7 * 7, bias=False),
                                nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),  # 7 -> 14
            nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),  # 14 -> 28
            nn.Tanh())
        self.width = width

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(c)], dim=1))
        return self.net(h.view(len(z), 2 * self.width, 7, 7))


class Discriminator(nn.Module):
    """(image, class) -> real/fake logit; the class enters as a learned 28x28 input plane."""

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(num_classes, 28 * 28)
        self.net = nn.Sequential(
            nn.Conv2d(2, width, 4, 2, 1), nn.LeakyReLU(0.2, True),  # 28 -> 14
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),  # 14 -> 7
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, self.embed(c).view(len(x), 1, 28, 28)], dim=1)).squeeze(1)


def train_cgan(gen_net: Generator, disc: Discriminator, images: torch.Tensor, labels: torch.Tensor, *,
               train_steps: int, batch_size: int, lr: float, seed: int,
               checkpoint: Path | None = None, checkpoint_every: int = 500) -> float:
    """Train both nets in place (non-saturating GAN loss) on images in [-1, 1].

    Resumable from ``checkpoint`` like :func:`diffusion_generator.train_diffusion`;
    returns the seconds spent training in this call.
    """
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    run = ResumableBatches(len(images), batch_size, seed, train_steps,
                           {"gen_net": gen_net, "disc": disc, "opt_g": opt_g, "opt_d": opt_d},
                           checkpoint, checkpoint_every)
    rng = run.gen
    gen_net.train()
    disc.train()
    start = time.perf_counter()
    for idx in run.batches("train cgan"):
        real, c = images[idx], labels[idx]
        z = torch.randn(len(c), gen_net.z_dim, generator=rng)
        fake = gen_net(z, c)
        ones, zeros = torch.ones(len(c)), torch.zeros(len(c))
        loss_d = (F.binary_cross_entropy_with_logits(disc(real, c), ones)
                  + F.binary_cross_entropy_with_logits(disc(fake.detach(), c), zeros))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.binary_cross_entropy_with_logits(disc(fake, c), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        run.bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}", refresh=False)
    gen_net.eval()
    disc.eval()
    return time.perf_counter() - start


@torch.no_grad()
def sample_cgan(gen_net: Generator, classes: np.ndarray, *, seed: int, batch: int = 500) -> np.ndarray:
    """One image per entry of ``classes`` (eval-mode batch norm, as DCGAN is sampled); uint8 (N, 28, 28)."""
    rng = torch.Generator().manual_seed(seed)
    c_all = torch.from_numpy(classes)
    out = []
    for start in range(0, len(c_all), batch):
        c = c_all[start:start + batch]
        x = gen_net(torch.randn(len(c), gen_net.z_dim, generator=rng), c)
        out.append(to_uint8((x.clamp(-1, 1) + 1) * 127.5))
    return np.concatenate(out)
