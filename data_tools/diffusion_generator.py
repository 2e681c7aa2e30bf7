"""A small class-conditional diffusion model trained from scratch on CPU, and its samplers.

Shared by the synthetic-image scripts (``make_synthetic_digits``,
``make_synthetic_fashion``): a diffusers ``UNet2DModel`` with a class
embedding (one extra "null" class for unconditional draws and guidance), the
DDPM training loop with an EMA copy and optional resumable checkpoints, and
sampling with a diffusers scheduler (many-step DDIM or few-step DPM-Solver).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from data_tools.resumable_training import LossLog, ResumableBatches

# name -> diffusers scheduler class used for sampling; both reuse the training schedule's config.
SAMPLERS = ("ddim", "dpmsolver")


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float 0..255 (N, 1, H, W) -> uint8 (N, H, W)."""
    return x.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()


def build_unet(image_size: int, channels: tuple[int, ...], layers_per_block: int, num_classes: int = 10) -> Any:
    """A small class-conditional UNet; class ``num_classes`` means "no class" (null)."""
    from diffusers import UNet2DModel

    # Group norm needs the group count to divide every width; 8 suits ~1M params.
    groups = math.gcd(8, *channels)
    return UNet2DModel(
        sample_size=image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels),
        norm_num_groups=groups,
        num_class_embeds=num_classes + 1,
    )


def make_train_scheduler() -> Any:
    """The DDPM noise schedule used for training; the samplers reuse its config."""
    from diffusers import DDPMScheduler

    # The cosine schedule wastes fewer steps on near-pure noise at tiny resolutions.
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def train_diffusion(model: Any, scheduler: Any, images: torch.Tensor, labels: torch.Tensor, *, train_steps: int,
                    batch_size: int, lr: float, p_uncond: float, seed: int, null_class: int,
                    checkpoint: Path | None = None, checkpoint_every: int = 250,
                    loss_log: LossLog | None = None, stop_step: int | None = None) -> float:
    """Train ``model`` in place on images scaled to [-1, 1]; it ends with its EMA weights.

    With ``checkpoint``, the full training state (weights, optimizer, EMA, data
    order, random generator) is saved every ``checkpoint_every`` steps and a run
    restarted with the same arguments continues from it, bit-identically.
    ``loss_log`` (saved in the checkpoint too) receives every step's loss and
    counts the steps trained. ``stop_step`` ends training after that step of
    the ``train_steps`` schedule (a later call without it continues).
    Returns the seconds spent training in this call.
    """
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    lr_sched = get_cosine_schedule_with_warmup(
        opt, num_warmup_steps=min(100, train_steps // 10), num_training_steps=train_steps)
    # EMA warm-up keeps the average useful even for short runs.
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)
    loss_log = LossLog() if loss_log is None else loss_log
    run = ResumableBatches(len(images), batch_size, seed, train_steps,
                           {"model": model, "opt": opt, "lr_sched": lr_sched, "ema": ema, "loss_log": loss_log},
                           checkpoint, checkpoint_every)
    gen = run.gen
    model.train()
    start = time.perf_counter()
    for idx in run.batches("train diffusion", stop=stop_step):
        x0, c = images[idx], labels[idx]
        # Label dropout trains the null class (unconditional model) used for
        # null-class draws and classifier-free guidance.
        drop = torch.rand(len(c), generator=gen) < p_uncond
        c = torch.where(drop, torch.full_like(c, null_class), c)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(c),), generator=gen)
        pred = model(scheduler.add_noise(x0, noise, t), t, class_labels=c).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        ema.step(model.parameters())
        loss_log.add(loss.item())
        run.bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    seconds = time.perf_counter() - start
    ema.copy_to(model.parameters())
    model.eval()
    return seconds


def make_sampler(name: str, train_scheduler: Any, steps: int) -> Any:
    """A diffusers sampling scheduler set to ``steps`` steps, sharing the training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        sampler = DDIMScheduler.from_config(train_scheduler.config)
    else:
        # diffusers' advice for pixel-space models: DPM-Solver++ with dynamic thresholding.
        # Without it the first step, at t=999 where the cosine schedule leaves
        # alpha_bar ~ 2e-9, divides the noise estimate by ~5e-5 and saturates every pixel.
        sampler = DPMSolverMultistepScheduler.from_config(train_scheduler.config, thresholding=True)
    sampler.set_timesteps(steps)
    return sampler


@torch.no_grad()
def sample_diffusion(model: Any, train_scheduler: Any, drawn_class: np.ndarray, *, steps: int, seed: int,
                     batch: int, null_class: int, guidance_scale: float = 1.0,
                     sampler: str = "ddim", desc: str = "sample") -> np.ndarray:
    """Sample one image per entry of ``drawn_class``; return uint8 (N, S, S).

    ``sampler`` is ``'ddim'`` (deterministic DDIM, eta 0) or ``'dpmsolver'``
    (DPM-Solver++ multistep with dynamic thresholding, a few-step sampler);
    ``guidance_scale`` 1 is plain conditional sampling, above 1 classifier-free
    guidance against the null class.
    """
    gen = torch.Generator().manual_seed(seed)
    size = model.config.sample_size
    out = []
    classes = torch.from_numpy(drawn_class)
    for start in tqdm(range(0, len(classes), batch), desc=desc, mininterval=10.0):
        # A fresh scheduler per batch: the multistep solvers keep per-run history.
        sched = make_sampler(sampler, train_scheduler, steps)
        c = classes[start:start + batch]
        x = torch.randn((len(c), 1, size, size), generator=gen)
        for t in sched.timesteps:
            if guidance_scale == 1.0:
                eps = model(x, t, class_labels=c).sample
            else:  # classifier-free guidance against the null class
                both = model(torch.cat([x, x]), t,
                             class_labels=torch.cat([c, torch.full_like(c, null_class)])).sample
                cond, uncond = both.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            x = sched.step(eps, t, x, **({"eta": 0.0} if sampler == "ddim" else {})).prev_sample
        out.append(to_uint8((x.clamp(-1, 1) + 1) * 127.5))
    return np.concatenate(out)
