"""Generate the bundled synthetic digits set for the RS-SSL ``digits`` benchmark.

RS-SSL contaminates the unlabeled set with images made by a generative model.
For the small built-in ``digits`` dataset (scikit-learn's 8x8 ``load_digits``)
this script trains a tiny class-conditional diffusion model from scratch, on
the real *train* split only and upsampled to 16x16, samples a labelled
synthetic set with DDIM and saves it as ``data_tools/bundled/digits_synthetic.npz``
plus a contact sheet. Like web-crawled synthetic sets, a share of each class's
images is "off-class": filed under the class but drawn with a wrong digit or
the null (unconditional) class.

The script ends with an acceptance check (a real-digits classifier must
recognise the on-class samples, and a real-vs-synthetic detector must tell the
two apart) and exits non-zero when it fails.

    python -m data_tools.make_synthetic_digits --help
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from data_tools.contact_sheet import draw_contact_sheet
from data_tools.diffusion_generator import (build_unet, make_train_scheduler, sample_diffusion,
                                            to_uint8, train_diffusion)
from data_tools.errors import report
from data_tools.synthetic_stats import pixel_features, probe_auroc, real_classifier

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # extra class embedding used for unconditional draws
KIND_ON, KIND_WRONG, KIND_NULL = 0, 1, 2

_PKG_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = _PKG_DIR / "bundled" / "digits_synthetic.npz"
DEFAULT_SHEET = _PKG_DIR.parent / "docs" / "synthetic_digits_contact_sheet.png"


# --------------------------------------------------------------------- data
def load_real_digits() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the project's fixed real split as uint8 8x8 images (0..255).

    The split must match the one the benchmark uses, so the generator never
    sees a test image.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    y = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=0.25, stratify=y, random_state=0)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def upsample(images: np.ndarray, size: int) -> torch.Tensor:
    """Bilinearly resize uint8 (N, H, W) images to float (N, 1, size, size) in 0..255."""
    x = torch.from_numpy(images).float().unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- sampling
def plan_draws(per_class: int, off_share: float, rng: np.random.Generator
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decide, for every image, its filed label, conditioning class and kind.

    Per class, ``round(per_class * off_share)`` images are off-class, half
    drawn with a random other digit and half with the null class. The result
    is shuffled so any prefix of the set has about the same off-class share.
    """
    n_off = int(round(per_class * off_share))
    n_wrong = n_off // 2
    labels, drawn, kind = [], [], []
    for c in range(NUM_CLASSES):
        others = np.array([d for d in range(NUM_CLASSES) if d != c])
        n_on = per_class - n_off
        labels += [c] * per_class
        drawn += [c] * n_on + list(rng.choice(others, size=n_wrong)) + [NULL_CLASS] * (n_off - n_wrong)
        kind += [KIND_ON] * n_on + [KIND_WRONG] * n_wrong + [KIND_NULL] * (n_off - n_wrong)
    perm = rng.permutation(len(labels))
    return tuple(np.asarray(v, dtype=np.int64)[perm] for v in (labels, drawn, kind))


def sample(model: torch.nn.Module, train_scheduler: Any, drawn_class: np.ndarray,
           args: argparse.Namespace) -> np.ndarray:
    """DDIM-sample one image per entry of ``drawn_class``; return uint8 (N, S, S)."""
    return sample_diffusion(model, train_scheduler, drawn_class, steps=args.sample_steps, seed=args.seed + 1,
                            batch=args.sample_batch, null_class=NULL_CLASS,
                            guidance_scale=args.guidance_scale, sampler="ddim")


# -------------------------------------------------------------- acceptance
def _histogram_features(images: np.ndarray, bins: int = 32) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return np.stack([np.bincount(row // (256 // bins), minlength=bins) for row in flat]) / flat.shape[1]


def acceptance(real_train: np.ndarray, y_train: np.ndarray, real_test: np.ndarray, y_test: np.ndarray,
               synth: np.ndarray, labels: np.ndarray, drawn: np.ndarray, kind: np.ndarray,
               seed: int) -> Dict[str, float]:
    """Compute the acceptance figures (see ``main``); all images uint8 (N, S, S)."""
    res = {}
    # (a) Does a classifier of real digits see the intended digit?
    clf = real_classifier(real_train, y_train)
    res["real_test_acc"] = float((clf.predict(pixel_features(real_test)) == y_test).mean())
    pred = clf.predict(pixel_features(synth))
    for name, k in (("on", KIND_ON), ("wrong", KIND_WRONG), ("null", KIND_NULL)):
        m = kind == k
        res[f"{name}_as_label"] = float((pred[m] == labels[m]).mean()) if m.any() else float("nan")
    m = kind == KIND_WRONG
    res["wrong_as_drawn"] = float((pred[m] == drawn[m]).mean()) if m.any() else float("nan")

    # (b) Can real and synthetic images be told apart? A pixel + intensity-histogram
    # detector, trained on half of each side and scored on the other half.
    for name, feats in (("auroc_pixels", pixel_features),
                        ("auroc", lambda x: np.hstack([pixel_features(x), _histogram_features(x)]))):
        res[name] = probe_auroc(feats(real_train), feats(synth), y_train, labels, seed)
    return res


# ------------------------------------------------------------ contact sheet
def contact_sheet(path: Path, synth: np.ndarray, labels: np.ndarray, kind: np.ndarray, drawn: np.ndarray,
                  real: np.ndarray, y_real: np.ndarray, title_model: str) -> None:
    """One row per class: up to 8 on-class + 1 wrong + 1 null sample, then 3 real digits."""
    rows, real_rows, marks = [], [], {}
    for c in range(NUM_CLASSES):
        picks = []
        for k, quota in ((KIND_ON, 8), (KIND_WRONG, 1), (KIND_NULL, 1)):
            picks += list(np.flatnonzero((labels == c) & (kind == k))[:quota])
        rows.append([synth[i] for i in picks])
        real_rows.append(list(real[y_real == c][:3]))
        marks.update({(c, j): "null" if kind[i] == KIND_NULL else f"drawn as {drawn[i]}"
                      for j, i in enumerate(picks) if kind[i] != KIND_ON})
    draw_contact_sheet(
        path, rows, real_rows, [str(c) for c in range(NUM_CLASSES)], marks=marks, ylabel="filed class",
        headings=("synthetic (red box: off-class, drawn as a wrong digit or null)", "real train"),
        title=f"Synthetic 16x16 digits from {title_model} trained on real train digits\n"
              "(left: samples filed under each class; right: real digits upsampled 8x8 -> 16x16)",
        cell_inches=0.62, dpi=150)


# ---------------------------------------------------------------------- CLI
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.make_synthetic_digits",
        description="Train a small class-conditional diffusion model on the real digits "
                    "train split and write the bundled synthetic digits set.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    p.add_argument("--sheet", type=Path, default=DEFAULT_SHEET,
                   help="contact sheet .png (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--channels", default="32,64,64",
                   help="UNet block widths, comma separated (default ~1.06M parameters)")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=1500,
                   help="optimizer steps (a step count, not a time budget, keeps runs "
                        "reproducible); the default takes about 7 minutes on one CPU core")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--p-uncond", type=float, default=0.1,
                   help="share of training labels replaced by the null class")
    p.add_argument("--per-class", type=int, default=300, help="synthetic images filed under each class")
    p.add_argument("--off-class-share", type=float, default=0.1,
                   help="share of each class's images drawn with a wrong digit or the null class")
    p.add_argument("--sample-steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance scale (1 = plain conditional sampling)")
    p.add_argument("--sample-batch", type=int, default=500)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; one keeps results bit-identical across machines "
                        "and avoids thread thrashing on shared cores")
    p.add_argument("--no-acceptance", action="store_true",
                   help="skip the acceptance check (for smoke tests only)")
    args = p.parse_args(argv)
    args.channels = tuple(int(v) for v in args.channels.split(","))
    if not 0.0 <= args.off_class_share <= 1.0:
        p.error("--off-class-share must be within [0, 1]")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    existing = [str(p) for p in (args.out, args.sheet) if p.exists()]
    if existing and not args.overwrite:
        return report(f"{', '.join(existing)} already exists; pass --overwrite to replace it")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # model initialisation
    real_train, y_train, real_test, y_test = load_real_digits()
    train_up = upsample(real_train, args.image_size)
    model = build_unet(args.image_size, args.channels, args.layers_per_block)
    n_params = sum(p.numel() for p in model.parameters())
    generator_name = f"diffusers-UNet2DModel-ddim{args.sample_steps}"
    if args.guidance_scale != 1.0:
        generator_name += f"-cfg{args.guidance_scale:g}"
    print(f"real train {len(real_train)} / test {len(real_test)} (test never used for training); "
          f"UNet2DModel {n_params / 1e6:.2f}M params, {torch.get_num_threads()} threads")

    scheduler = make_train_scheduler()
    train_s = train_diffusion(model, scheduler, train_up / 127.5 - 1.0, torch.from_numpy(y_train),
                              train_steps=args.train_steps, batch_size=args.batch_size, lr=args.lr,
                              p_uncond=args.p_uncond, seed=args.seed, null_class=NULL_CLASS)

    labels, drawn, kind = plan_draws(args.per_class, args.off_class_share,
                                     np.random.default_rng(args.seed))
    t0 = time.perf_counter()
    images = sample(model, scheduler, drawn, args)
    sample_s = time.perf_counter() - t0

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out, images=images, labels=labels, drawn_class=drawn, kind=kind,
        seed=np.int64(args.seed), generator=np.str_(generator_name),
        image_size=np.int64(args.image_size), off_class_share=np.float64(args.off_class_share),
        train_steps=np.int64(args.train_steps), guidance_scale=np.float64(args.guidance_scale))
    contact_sheet(args.sheet, images, labels, kind, drawn, to_uint8(train_up), y_train,
                  f"diffusers UNet2DModel ({n_params / 1e6:.2f}M params, DDIM {args.sample_steps} steps)")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(images)} images) and {args.sheet}")
    print(f"training: {args.train_steps} steps in {train_s:.1f} s; sampling: {len(images)} images "
          f"in {sample_s:.1f} s ({len(images) / sample_s:.1f} images/s)")
    if args.no_acceptance:
        return 0

    res = acceptance(to_uint8(train_up), y_train, to_uint8(upsample(real_test, args.image_size)),
                     y_test, images, labels, drawn, kind, args.seed)
    ok_a, ok_b = res["on_as_label"] >= 0.70, res["auroc"] >= 0.90
    print("acceptance:")
    print(f"  real-digits classifier (logistic regression, real test acc {res['real_test_acc']:.3f}):")
    print(f"    on-class samples recognised as their class: {res['on_as_label']:.3f} "
          f"(need >= 0.70) {'PASS' if ok_a else 'FAIL'}")
    print(f"    wrong-class samples recognised as filed class: {res['wrong_as_label']:.3f}, "
          f"as drawn class: {res['wrong_as_drawn']:.3f}")
    print(f"    null-class samples recognised as filed class: {res['null_as_label']:.3f}")
    print(f"  real-vs-synthetic detector, held-out AUROC: {res['auroc']:.3f} (need >= 0.90) "
          f"{'PASS' if ok_b else 'FAIL'}; pixels only: {res['auroc_pixels']:.3f}")
    if not (ok_a and ok_b):
        print("error: acceptance failed (outputs were written for inspection)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
