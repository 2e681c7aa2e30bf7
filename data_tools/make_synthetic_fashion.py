"""Generate the bundled synthetic Fashion-MNIST sets (several generators) for the RS-SSL fashion benchmark.

The paper contaminates the unlabeled set with images from several generators.
This script makes three offline, CPU-only sources, each trained from scratch on
the Fashion-MNIST generator split only (``fashion_mnist.generator_split``:
1,000 training images per class, disjoint from the SSL pool and the test split):

- ``ddim25``: a class-conditional diffusers ``UNet2DModel`` sampled with
  25 DDIM steps (many-step, as Stable Diffusion is used);
- ``dpmsolver4``: the same model sampled with 4 DPM-Solver++ steps (few-step,
  as SDXL-Lightning is used);
- ``cgan``: a class-conditional DCGAN (``data_tools.conditional_gan``).

Each source is plain class-conditional sampling, ``--per-class`` images per
class, saved as ``<out-dir>/fashion_<source>.npz``. Then, per source, it
measures the share a real-image classifier assigns to the intended class and a
pixel probe's real-vs-synthetic AUROC, writes them to ``--stats`` and draws a
contact sheet. Training is checkpointed in ``--work-dir``: rerunning the same
command continues a killed run.

    python -m data_tools.make_synthetic_fashion --help
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data_tools import fashion_mnist
from data_tools.atomic import torch_save
from data_tools.conditional_gan import Discriminator, Generator, sample_cgan, train_cgan
from data_tools.contact_sheet import draw_contact_sheet
from data_tools.diffusion_generator import build_unet, make_train_scheduler, sample_diffusion, train_diffusion
from data_tools.errors import report
from data_tools.resumable_training import LossLog
from data_tools.synthetic_stats import (cnn_classifier, cnn_outputs, pixel_features, probe_auroc,
                                       train_cnn_classifier, within_class_spread)

NUM_CLASSES = len(fashion_mnist.CLASS_NAMES)
NULL_CLASS = NUM_CLASSES

_PKG_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PKG_DIR.parent
DEFAULT_OUT_DIR = _PKG_DIR / "bundled"
DEFAULT_SHEET_DIR = _REPO_DIR / "docs"
DEFAULT_STATS = _REPO_DIR / "docs" / "results" / "fashion_synthetic_stats.json"
DEFAULT_WORK_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rsmatch-usb" / "make_synthetic_fashion"


def source_names(args) -> dict[str, str]:
    """Source key (``--sources``) -> source name used in file names and metadata.

    Guided diffusion sources carry their scale (``ddim25_cfg3``); plain
    conditional sampling (scale 1) has none.
    """
    def cfg(key: str) -> str:
        return f"_cfg{guidance_of(key, args):g}" if guidance_of(key, args) != 1.0 else ""
    return {"many": f"ddim{args.many_steps}{cfg('many')}", "few": f"dpmsolver{args.few_steps}{cfg('few')}",
            "gan": "cgan"}


def guidance_of(key: str, args) -> float:
    """The classifier-free guidance scale of a source: each sampler has its own (the GAN: none, 1)."""
    return {"many": args.guidance_scale, "few": args.few_guidance_scale}.get(key, 1.0)


def npz_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"fashion_{name}.npz"


def sheet_path(sheet_dir: Path, name: str) -> Path:
    return sheet_dir / f"synthetic_fashion_{name}.png"


# --------------------------------------------------------------------- data
def load_generator_split(data_dir=None, max_per_class: int | None = None):
    """Training images reserved for the generators: uint8 (N, 28, 28), int64 labels.

    ``max_per_class`` keeps only the first images of each class (for smoke tests).
    """
    images, labels = fashion_mnist.load_split("train", data_dir)
    idx = fashion_mnist.generator_split(labels)
    if max_per_class is not None:
        idx = np.sort(np.concatenate([idx[labels[idx] == c][:max_per_class] for c in range(NUM_CLASSES)]))
    return images[idx], labels[idx]


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1], the generators' input scale."""
    return torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1.0


def plan_labels(per_class: int, seed: int) -> np.ndarray:
    """``per_class`` labels of each class in a seeded random order, so any prefix is about balanced."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class))


def checkpoint_path(work_dir: Path, family: str, config: dict) -> Path:
    """A checkpoint file named after a hash of everything that shapes training, so changed
    settings never resume a stale run."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return work_dir / f"{family}-{key}.pt"


# ------------------------------------------------------------- generators
def diffusion_model(args, images, labels):
    """Train (or resume, or reload) the class-conditional UNet; return (model, scheduler, info)."""
    config = {"channels": list(args.channels), "layers_per_block": args.layers_per_block,
              "train_steps": args.diffusion_train_steps, "batch_size": args.batch_size, "lr": args.lr,
              "p_uncond": args.p_uncond, "seed": args.seed, "n_train": len(images)}
    torch.manual_seed(args.seed)  # model initialisation
    model = build_unet(28, args.channels, args.layers_per_block, NUM_CLASSES)
    scheduler = make_train_scheduler()
    ckpt = checkpoint_path(args.work_dir, "diffusion", config)
    loss_log = LossLog()
    seconds = train_diffusion(model, scheduler, to_unit_range(images), torch.from_numpy(labels),
                              train_steps=args.diffusion_train_steps, batch_size=args.batch_size,
                              lr=args.lr, p_uncond=args.p_uncond, seed=args.seed, null_class=NULL_CLASS,
                              checkpoint=ckpt, loss_log=loss_log, stop_step=args.diffusion_stop_step)
    n_params = sum(p.numel() for p in model.parameters())
    return model, scheduler, {"params": n_params, "train_seconds_this_run": seconds, "checkpoint": str(ckpt),
                              "trained_steps": loss_log.steps, "loss_every": loss_log.every,
                              "loss_history": [round(v, 5) for v in loss_log.history]}


def gan_model(args, images, labels):
    """Train (or resume, or reload) the conditional DCGAN; return (generator net, info)."""
    config = {"z_dim": args.gan_z_dim, "width": args.gan_width, "train_steps": args.gan_train_steps,
              "batch_size": args.gan_batch_size, "lr": args.gan_lr, "seed": args.seed, "n_train": len(images)}
    torch.manual_seed(args.seed + 3)  # model initialisation
    gen_net = Generator(NUM_CLASSES, args.gan_z_dim, args.gan_width)
    disc = Discriminator(NUM_CLASSES, args.gan_width)
    ckpt = checkpoint_path(args.work_dir, "cgan", config)
    seconds = train_cgan(gen_net, disc, to_unit_range(images), torch.from_numpy(labels),
                         train_steps=args.gan_train_steps, batch_size=args.gan_batch_size, lr=args.gan_lr,
                         seed=args.seed + 3, checkpoint=ckpt)
    n_params = sum(p.numel() for p in gen_net.parameters())
    return gen_net, {"params": n_params, "train_seconds_this_run": seconds, "checkpoint": str(ckpt)}


def make_source(key: str, name: str, model, args) -> tuple[np.ndarray, np.ndarray, float]:
    """Sample ``--per-class`` images per class from one source; return (images, labels, seconds)."""
    labels = plan_labels(args.per_class, args.seed)
    start = time.perf_counter()
    if key == "gan":
        images = sample_cgan(model, labels, seed=args.seed + 4, batch=args.sample_batch)
    else:
        unet, scheduler = model
        steps, sampler, seed = ((args.many_steps, "ddim", args.seed + 1) if key == "many"
                                else (args.few_steps, "dpmsolver", args.seed + 2))
        images = sample_diffusion(unet, scheduler, labels, steps=steps, seed=seed, batch=args.sample_batch,
                                  null_class=NULL_CLASS, guidance_scale=guidance_of(key, args),
                                  sampler=sampler, desc=f"sample {name}")
    return images, labels, time.perf_counter() - start


def write_source(path: Path, images, labels, name: str, key: str, args, seconds: float, train_steps: int) -> None:
    """Save one source with its metadata; ``train_steps``: the generator's steps actually trained."""
    steps = {"many": args.many_steps, "few": args.few_steps, "gan": 1}[key]
    generator = "conditional-DCGAN" if key == "gan" else f"diffusers-UNet2DModel-{name}"
    schedule = args.gan_train_steps if key == "gan" else args.diffusion_train_steps
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, images=images, labels=labels, generator=np.str_(generator), source=np.str_(name),
        steps=np.int64(steps), seed=np.int64(args.seed), train_steps=np.int64(train_steps),
        schedule_steps=np.int64(schedule),
        guidance_scale=np.float64(guidance_of(key, args)),
        image_size=np.int64(28), generator_split_per_class=np.int64(fashion_mnist.GENERATOR_PER_CLASS),
        sample_seconds=np.float64(round(seconds, 1)))


# --------------------------------------------------------------- statistics
def cached_real_classifier(work_dir: Path, images: np.ndarray, labels: np.ndarray):
    """The real-image CNN and its fit time, kept in ``work_dir`` under a hash of its training data.

    The fit takes minutes on a shared CPU and every measurement needs it. The
    cache holds tensors only and loads with ``weights_only=True``, so a file
    planted in the work folder cannot run code.
    """
    key = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:12]
    path = work_dir / f"real-cnn-{key}.pt"
    net = cnn_classifier(NUM_CLASSES)
    if path.exists():
        state = torch.load(path, weights_only=True)
        net.load_state_dict(state["net"])
        return net.eval(), float(state["fit_seconds"])
    start = time.perf_counter()
    net = train_cnn_classifier(images, labels, seed=0)
    seconds = time.perf_counter() - start
    torch_save({"net": net.state_dict(), "fit_seconds": torch.tensor(seconds)}, path)
    return net, seconds


class Judge:
    """Measures synthetic images against the generator split with the real-image CNN.

    ``intended_class_share``: the share of images the CNN reads as the class
    they are filed under. ``diversity``: the images' mean within-class pairwise
    distance in the CNN's hidden-layer features, over that of as many real
    generator-split images per class (1: as varied as real images; a
    mode-collapsed generator scores far below).
    """

    def __init__(self, args, images: np.ndarray, labels: np.ndarray):
        self.net, self.fit_seconds = cached_real_classifier(args.work_dir, images, labels)
        self.images, self.labels, self.seed = images, labels, args.seed
        train_images, train_labels = fashion_mnist.load_split("train", args.data_dir)
        val = fashion_mnist.val_split(train_labels)
        pred, _ = cnn_outputs(self.net, train_images[val])
        self.val_accuracy = float((pred == train_labels[val]).mean())

    def real_sample(self, per_class: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return np.concatenate([rng.permutation(np.flatnonzero(self.labels == c))[:per_class]
                               for c in range(NUM_CLASSES)])

    def measure(self, synth: np.ndarray, synth_labels: np.ndarray) -> dict:
        pred, feats = cnn_outputs(self.net, synth)
        hit = pred == synth_labels
        per_class = int(np.bincount(synth_labels, minlength=NUM_CLASSES).min())
        real_idx = self.real_sample(per_class)
        _, real_feats = cnn_outputs(self.net, self.images[real_idx])
        diversity = (within_class_spread(feats, synth_labels, NUM_CLASSES)
                     / within_class_spread(real_feats, self.labels[real_idx], NUM_CLASSES))
        return {"intended_class_share": round(float(hit.mean()), 4),
                "intended_class_share_per_class": [round(float(hit[synth_labels == c].mean()), 4)
                                                   for c in range(NUM_CLASSES)],
                "diversity": round(float(diversity), 4)}


def measure(args, files: dict, images, labels, timing) -> dict:
    """Per-source figures of ``files`` ({name: (npz path, sheet path)}): counts per class,
    intended-class share, diversity, probe AUROC, timings.

    The real CNN is trained on the whole generator split; its accuracy is
    measured on the validation split (never the test split). The probe
    compares each source with ``--per-class`` real images per class from the
    generator split.
    """
    judge = Judge(args, images, labels)
    result = {
        "real_classifier": {
            "model": "CNN (two conv blocks, one hidden layer; data_tools.synthetic_stats.cnn_classifier)",
            "trained_on": f"generator split, {len(images)} images",
            "val_accuracy": round(judge.val_accuracy, 4),
            "fit_seconds": round(judge.fit_seconds, 1)},
        "probe": "held-out AUROC of sklearn StandardScaler + LogisticRegression(C=0.1) on raw pixels, "
                 "real (generator split) vs synthetic, trained on half of each side, scored on the other half",
        "diversity": "mean within-class pairwise distance of the real CNN's hidden features, synthetic over "
                     "real (generator split, as many images per class)",
        "sources": {}}
    real_idx = judge.real_sample(args.per_class)
    for name, (npz, sheet) in files.items():
        with np.load(npz) as z:
            bundle = {k: z[k] for k in z.files}
        synth, synth_labels = bundle["images"], bundle["labels"]
        result["sources"][name] = {
            "file": npz.name,
            "generator": str(bundle["generator"]),
            "sampler_steps": int(bundle["steps"]),
            "train_steps": int(bundle["train_steps"]),
            "schedule_steps": int(bundle["schedule_steps"]) if "schedule_steps" in bundle else int(bundle["train_steps"]),
            "guidance_scale": float(bundle["guidance_scale"]),
            "images": int(len(synth)),
            "images_per_class": np.bincount(synth_labels, minlength=NUM_CLASSES).tolist(),
            **judge.measure(synth, synth_labels),
            "probe_auroc": round(probe_auroc(pixel_features(images[real_idx]), pixel_features(synth),
                                             labels[real_idx], synth_labels, args.seed), 4),
            "sample_seconds": float(bundle["sample_seconds"]),
            "file_mb": round(npz.stat().st_size / 1e6, 2)}
        draw_sheet(sheet, synth, synth_labels, images, labels, name, str(bundle["generator"]))
    result["timing_seconds"] = timing
    result["command"] = args.command
    result["machine"] = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, " \
                        f"{args.threads} torch thread(s)"
    return result


def draw_sheet(path: Path, synth, synth_labels, real, real_labels, name: str, generator: str,
               n_syn: int = 10, n_real: int = 3) -> None:
    """One row per class: ``n_syn`` synthetic images, a gap, ``n_real`` real generator-split images."""
    draw_contact_sheet(path, [synth[synth_labels == c][:n_syn] for c in range(NUM_CLASSES)],
                       [real[real_labels == c][:n_real] for c in range(NUM_CLASSES)], fashion_mnist.CLASS_NAMES,
                       headings=(f"synthetic ({name})", "real (generator split)"),
                       title=f"fashion_{name}.npz: {generator}, first {n_syn} images filed under each class")


def merge_stats(path: Path, result: dict) -> None:
    """Merge ``result`` into the JSON file at ``path``: sources and sweeps of other runs are kept."""
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {**old, **result}
    for key in ("sources", "guidance_sweep"):
        if key in old or key in result:
            merged[key] = dict(sorted({**old.get(key, {}), **result.get(key, {})}.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n")


def write_stats(args, files: dict, images, labels, timing) -> None:
    """Measure ``files`` ({name: (npz, sheet)}) and merge them into ``--stats``."""
    result = measure(args, files, images, labels, timing)
    merge_stats(args.stats, result)
    print(f"real classifier (CNN on the generator split): validation accuracy "
          f"{result['real_classifier']['val_accuracy']:.3f}")
    for name, r in result["sources"].items():
        print(f"{name}: {r['images']} images ({r['images_per_class'][0]} per class), intended class "
              f"{r['intended_class_share']:.3f}, diversity {r['diversity']:.3f}, probe AUROC "
              f"{r['probe_auroc']:.3f}, sampled in {r['sample_seconds']:.0f} s")
    print(f"wrote {args.stats} and {', '.join(str(sheet) for _, sheet in files.values())}")


# ----------------------------------------------------------- guidance sweep
SWEEP_SEED_OFFSET = 1000  # sweep images come from seeds no bundled set uses


def sweep_guidance(args, unet, scheduler, images, labels) -> dict:
    """Intended-class share and diversity of each sampler against the guidance scale.

    ``--sweep-per-class`` images per class and scale, drawn from seeds that no
    bundled set uses and saved nowhere, so the scale is chosen on images that
    no benchmark run sees. Returns ``{sampler name: {scale: figures}}``.
    """
    judge = Judge(args, images, labels)
    drawn = plan_labels(args.sweep_per_class, args.seed + SWEEP_SEED_OFFSET)
    out = {}
    for key in [k for k in ("many", "few") if k in args.sources]:
        sampler, steps = ("ddim", args.many_steps) if key == "many" else ("dpmsolver", args.few_steps)
        name = f"{sampler}{steps}"
        out[name] = {}
        for scale in args.sweep_guidance:
            start = time.perf_counter()
            synth = sample_diffusion(unet, scheduler, drawn, steps=steps, seed=args.seed + SWEEP_SEED_OFFSET,
                                     batch=args.sample_batch, null_class=NULL_CLASS, guidance_scale=scale,
                                     sampler=sampler, desc=f"sweep {name} cfg {scale:g}")
            figures = {**judge.measure(synth, drawn), "images": int(len(synth)),
                       "sample_seconds": round(time.perf_counter() - start, 1)}
            out[name][f"{scale:g}"] = figures
            print(f"{name} guidance {scale:g}: intended class {figures['intended_class_share']:.3f}, "
                  f"diversity {figures['diversity']:.3f}", flush=True)
    return out


def plot_sweep(path: Path, sweep: dict) -> None:
    """Intended-class share and diversity against the guidance scale, one line per sampler."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for name, by_scale in sweep.items():
        scales = sorted(by_scale, key=float)
        x = [float(g) for g in scales]
        axes[0].plot(x, [by_scale[g]["intended_class_share"] for g in scales], "o-", label=name)
        axes[1].plot(x, [by_scale[g]["diversity"] for g in scales], "o-", label=name)
    axes[0].axhline(0.85, color="gray", lw=0.8, ls="--")
    axes[0].set(xlabel="guidance scale", ylabel="intended-class share", title="class fidelity (real CNN)")
    axes[1].axhline(1.0, color="gray", lw=0.8, ls="--")
    axes[1].set(xlabel="guidance scale", ylabel="within-class spread / real", title="diversity")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- CLI
SOURCE_KEYS = ("many", "few", "gan")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m data_tools.make_synthetic_fashion",
        description="Train a class-conditional diffusion model and a conditional DCGAN on the Fashion-MNIST "
                    "generator split and write the bundled synthetic sets (diffusion sampled many-step and "
                    "few-step, and the GAN), their statistics and contact sheets.")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                   help="folder of the fashion_<source>.npz files (default: %(default)s)")
    p.add_argument("--sheet-dir", type=Path, default=DEFAULT_SHEET_DIR,
                   help="folder of the synthetic_fashion_<source>.png contact sheets (default: %(default)s)")
    p.add_argument("--stats", type=Path, default=DEFAULT_STATS,
                   help="JSON file of the per-source statistics; entries of the sources made are replaced "
                        "(default: %(default)s)")
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                   help="training checkpoints, so a killed run continues (default: %(default)s)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding fashion_mnist/ (default: the Debian package's location)")
    p.add_argument("--overwrite", action="store_true", help="replace existing .npz files and contact sheets")
    p.add_argument("--sources", default="many,few,gan",
                   help="comma-separated subset of many (DDIM), few (DPM-Solver) and gan (default: all)")
    p.add_argument("--train-only", action="store_true",
                   help="only train (or finish training) the generators of --sources, write nothing else")
    p.add_argument("--stats-only", action="store_true",
                   help="only measure the existing .npz files of --sources and draw their contact sheets")
    p.add_argument("--no-stats", action="store_true", help="write the .npz files but skip the statistics")
    p.add_argument("--measure", type=Path, nargs="+", default=[],
                   help="also measure these .npz files (any name; e.g. a renamed set) into --stats")
    p.add_argument("--measure-only", action="store_true",
                   help="with --measure: measure only those files, not the --sources")
    p.add_argument("--sweep-guidance", default="",
                   help="comma-separated guidance scales: train (or reload) the diffusion model, then measure the "
                        "intended-class share and diversity of --sweep-per-class images per class and scale for "
                        "the diffusion --sources, from seeds no bundled set uses; write them to --stats and "
                        "--sweep-plot, and nothing else")
    p.add_argument("--sweep-per-class", type=int, default=30, help="images per class and scale in the sweep")
    p.add_argument("--sweep-plot", type=Path, default=DEFAULT_SHEET_DIR / "synthetic_fashion_guidance.png",
                   help="figure of the sweep (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-class", type=int, default=400, help="synthetic images per class and source")
    p.add_argument("--max-train-per-class", type=int, default=None,
                   help="use only this many generator-split images per class (smoke tests)")
    # diffusion
    p.add_argument("--channels", default="32,64,64", help="UNet block widths, comma separated")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32, help="diffusion training batch")
    p.add_argument("--diffusion-train-steps", type=int, default=12000,
                   help="optimizer steps of the diffusion model (a count, not a time budget, "
                        "keeps runs reproducible)")
    p.add_argument("--diffusion-stop-step", type=int, default=6000,
                   help="stop the diffusion model's training after this step of its --diffusion-train-steps "
                        "schedule (the loss has plateaued) and sample from it; a larger one continues the training")
    p.add_argument("--lr", type=float, default=2e-3, help="diffusion learning rate")
    p.add_argument("--p-uncond", type=float, default=0.1,
                   help="share of diffusion training labels replaced by the null class")
    p.add_argument("--many-steps", type=int, default=25, help="DDIM steps of the many-step source")
    p.add_argument("--few-steps", type=int, default=4, help="DPM-Solver++ steps of the few-step source")
    p.add_argument("--guidance-scale", type=float, default=1.5,
                   help="classifier-free guidance scale of the many-step (DDIM) source (1 = plain conditional "
                        "sampling); chosen by --sweep-guidance, docs/synthetic_fashion.md")
    p.add_argument("--few-guidance-scale", type=float, default=2.0,
                   help="classifier-free guidance scale of the few-step (DPM-Solver++) source")
    # GAN
    p.add_argument("--gan-train-steps", type=int, default=2000)
    p.add_argument("--gan-batch-size", type=int, default=64)
    p.add_argument("--gan-lr", type=float, default=2e-4)
    p.add_argument("--gan-z-dim", type=int, default=64)
    p.add_argument("--gan-width", type=int, default=32, help="channels of the GAN's last hidden layer")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; one avoids thread thrashing on shared cores")
    args = p.parse_args(argv)
    args.command = " ".join([p.prog, *(sys.argv[1:] if argv is None else argv)])
    try:
        args.channels = tuple(int(v) for v in args.channels.split(","))
    except ValueError:
        p.error(f"--channels must be comma-separated integers, got {args.channels!r}")
    try:
        args.sweep_guidance = [float(v) for v in args.sweep_guidance.split(",") if v.strip()]
    except ValueError:
        p.error(f"--sweep-guidance must be comma-separated numbers, got {args.sweep_guidance!r}")
    if any(not (1.0 <= g <= 50.0) for g in args.sweep_guidance) or not all(1.0 <= g <= 50.0 for g in (args.guidance_scale, args.few_guidance_scale)):
        p.error("guidance scales must lie in [1, 50] (1: plain conditional sampling)")
    if args.sweep_guidance and not {"many", "few"} & set(s.strip() for s in args.sources.split(",")):
        p.error("--sweep-guidance samples the diffusion model: give --sources many, few or both")
    if args.measure_only and not args.measure:
        p.error("--measure-only needs --measure FILE...")
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(args.sources) - set(SOURCE_KEYS))
    if unknown or not args.sources:
        p.error(f"--sources takes a comma-separated subset of {','.join(SOURCE_KEYS)}, got {unknown or 'nothing'}")
    if args.train_only and args.stats_only:
        p.error("--train-only and --stats-only exclude each other")
    if args.diffusion_stop_step is not None and not 1 <= args.diffusion_stop_step <= args.diffusion_train_steps:
        p.error("--diffusion-stop-step must lie in [1, --diffusion-train-steps]")
    for name in ("sweep_per_class", "per_class", "batch_size", "gan_batch_size", "diffusion_train_steps", "many_steps", "few_steps",
                 "gan_train_steps", "sample_batch", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    names = source_names(args)
    outputs = {k: (npz_path(args.out_dir, names[k]), sheet_path(args.sheet_dir, names[k])) for k in args.sources}
    if args.measure_only or args.sweep_guidance:
        outputs = {}  # writes no source
    if not args.train_only and not args.overwrite:
        existing = [str(p) for k in outputs for p in outputs[k] if p.exists()
                    and not (args.stats_only and p.suffix == ".npz")]
        if existing:
            return report(f"{', '.join(existing)} already exists; pass --overwrite to replace it")
    if args.stats_only:
        missing = [str(outputs[k][0]) for k in outputs if not outputs[k][0].exists()]
        if missing:
            return report(f"{', '.join(missing)} missing; run without --stats-only to make it")
    missing = [str(path) for path in args.measure if not path.is_file()]
    if missing:
        return report(f"--measure: {', '.join(missing)} is not a file; give .npz files written by this script")

    torch.set_num_threads(args.threads)
    images, labels = load_generator_split(args.data_dir, args.max_train_per_class)
    print(f"generator split: {len(images)} Fashion-MNIST training images "
          f"(disjoint from the SSL pool and the test split); {torch.get_num_threads()} torch threads", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    timing = {}
    if not (args.stats_only or args.measure_only):
        models, trained = {}, {}
        if {"many", "few"} & set(args.sources):
            unet, scheduler, info = diffusion_model(args, images, labels)
            print(f"diffusion UNet {info['params'] / 1e6:.2f}M params: trained {info['trained_steps']} of "
                  f"{args.diffusion_train_steps} steps ({info['train_seconds_this_run']:.0f} s in this run)",
                  flush=True)
            models.update(many=(unet, scheduler), few=(unet, scheduler))
            trained.update(many=info["trained_steps"], few=info["trained_steps"])
            timing["diffusion_train_seconds_this_run"] = round(info["train_seconds_this_run"], 1)
            history = info["loss_history"]
            if history:
                print(f"diffusion loss, mean of each {info['loss_every']} steps: "
                      + " ".join(f"{v:.4f}" for v in history), flush=True)
            if args.sweep_guidance:
                sweep = sweep_guidance(args, unet, scheduler, images, labels)
                merge_stats(args.stats, {"guidance_sweep": sweep, "diffusion_training": {
                    "train_steps": info["trained_steps"], "schedule_steps": args.diffusion_train_steps,
                    "batch_size": args.batch_size,
                    "channels": list(args.channels), "params": info["params"],
                    "loss_every": info["loss_every"], "loss_history": history}})
                plot_sweep(args.sweep_plot, json.loads(args.stats.read_text())["guidance_sweep"])
                print(f"wrote the sweep to {args.stats} and {args.sweep_plot}")
                return 0
        if "gan" in args.sources:
            gen_net, info = gan_model(args, images, labels)
            print(f"conditional DCGAN generator {info['params'] / 1e6:.2f}M params: trained "
                  f"{args.gan_train_steps} steps ({info['train_seconds_this_run']:.0f} s in this run)", flush=True)
            models["gan"] = gen_net
            trained["gan"] = args.gan_train_steps
            timing["gan_train_seconds_this_run"] = round(info["train_seconds_this_run"], 1)
        if args.train_only:
            return 0
        for key in args.sources:
            synth, synth_labels, seconds = make_source(key, names[key], models[key], args)
            write_source(outputs[key][0], synth, synth_labels, names[key], key, args, seconds, trained[key])
            timing[f"{names[key]}_sample_seconds"] = round(seconds, 1)
            print(f"wrote {outputs[key][0]} ({outputs[key][0].stat().st_size / 1e6:.2f} MB, {len(synth)} images, "
                  f"sampled in {seconds:.0f} s)", flush=True)
    if args.no_stats:
        return 0
    files = {names[k]: outputs[k] for k in outputs}
    for path in args.measure:
        name = path.stem[len("fashion_"):] if path.stem.startswith("fashion_") else path.stem
        files[name] = (path, sheet_path(args.sheet_dir, name))
    write_stats(args, files, images, labels, timing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
