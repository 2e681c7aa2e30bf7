"""``rsmatch-detect``: score a set of images with a trained RSMatch run's detector, before training on them.

It reads the detector from a run's checkpoint (its EMA scorer, ``detector_ema``)
and a folder, manifest CSV or ``.npz`` of images (the layouts ``synthetic_source``
reads, or a folder of images without class folders), writes a CSV of each
image's synthetic score, prints the share judged synthetic at the threshold,
draws a histogram of the scores, and can copy the images judged real into a
new folder, leaving the input untouched.

The images are viewed as the run viewed its evaluation images (resize, crop,
normalisation): recorded in checkpoints since the detector inputs were added,
otherwise read from the run folder's ``log.txt`` (its ``dataset``,
``img_size`` and ``crop_ratio``), otherwise given with ``--dataset``,
``--img-size`` and ``--crop-ratio``. The threshold is ``--threshold``, else the
run's routing threshold (recorded in the checkpoint, else the last one its log
reports).

Usage: ``rsmatch-detect RUN_OR_CHECKPOINT IMAGES --csv scores.csv [--keep-real DIR]``
(also ``python -m rsmatch_usb.detect``).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data_tools.devices import resolve_device
from data_tools.errors import command_name
from data_tools.imageset import ImageSet
from data_tools.run_folder import CHECKPOINTS

from . import checkpoint as checkpoints
from .algorithms.rsmatch.extensions import DetectorNet
from .algorithms.rsmatch.images import build_view
from .errors import UserError, report

PROG = "rsmatch-detect"
# The view keys a run's log gives (its "Arguments: Namespace(...)" line) and their flags.
VIEW_KEYS = {"dataset": "--dataset", "img_size": "--img-size", "crop_ratio": "--crop-ratio"}


@dataclass
class RunDetector:
    """A run's detector and how it scores: network, eval view, default threshold, and where each came from."""
    net: DetectorNet
    view: Callable
    view_from: str
    threshold: Optional[float]
    threshold_from: str
    trusted: Optional[bool]


def checkpoint_path(path: str) -> str:
    """``path`` itself, or a run folder's newest checkpoint."""
    if os.path.isdir(path):
        for name in CHECKPOINTS:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise UserError(f"RUN {path} holds no checkpoint ({' or '.join(CHECKPOINTS)}); give a trained RSMatch "
                        "run folder or its checkpoint file")
    if not os.path.isfile(path):
        raise UserError(f"RUN {path} does not exist; give a trained RSMatch run folder or its checkpoint file")
    return path


def read_log_settings(run_folder: str) -> dict:
    """``dataset``, ``img_size``, ``crop_ratio`` and the last ``routing_threshold`` a run's log.txt reports."""
    try:
        with open(os.path.join(run_folder, "log.txt"), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    found = {}
    arguments = re.findall(r"Arguments: Namespace\((.*)\)\s*$", text, flags=re.M)
    if arguments:
        line = arguments[-1]
        for key, pattern, cast in (("dataset", r"'([^']*)'", str), ("img_size", r"(\d+)", int),
                                   ("crop_ratio", r"([\d.eE+-]+)", float)):
            match = re.search(rf"\b{key}={pattern}", line)
            if match:
                found[key] = cast(match.group(1))
    thresholds = re.findall(r"train/routing_threshold: ([\d.eE+-]+)", text)
    if thresholds:
        found["routing_threshold"] = float(thresholds[-1])
    return found


def view_from_settings(dataset: str, img_size: int, crop_ratio: float) -> Callable:
    """The eval transform of a plugin dataset at ``img_size`` (as :mod:`data_tools.usb` builds it for training)."""
    from data_tools.sources import REAL_SOURCES
    from data_tools.usb import build_transforms

    if dataset not in REAL_SOURCES:
        raise UserError(f"--dataset {dataset!r} is not one of the plugin's datasets "
                        f"({', '.join(sorted(REAL_SOURCES))}), whose normalisation is known; score with a "
                        "checkpoint that records its view")
    source = REAL_SOURCES[dataset]
    return build_transforms(img_size, crop_ratio, source.mean, source.std, source.transforms)[2]


def load_run_detector(path: str, flags: dict) -> RunDetector:
    """The detector of the RSMatch checkpoint at ``path`` (a file or a run folder) and how it scores.

    ``flags``: ``dataset``, ``img_size``, ``crop_ratio`` given on the command
    line (None when not), for checkpoints that do not record their view.
    """
    path = checkpoint_path(path)
    try:
        ckpt = checkpoints.load(path)
    except checkpoints.CheckpointError as exc:
        raise UserError(f"RUN checkpoint {path} is {exc}") from None
    if not isinstance(ckpt, dict) or "detector_ema" not in ckpt:
        raise UserError(f"RUN checkpoint {path} holds no RSMatch detector (no 'detector_ema' entry); give a run "
                        "trained with algorithm: rsmatch and use_detector: True")
    try:
        net = DetectorNet.from_state_dict(ckpt["detector_ema"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"RUN checkpoint {path}: its detector cannot be rebuilt "
                        f"({str(exc).splitlines()[0][:200]})") from None
    state = ckpt.get("rsmatch_state", {})
    scoring = state.get("scoring") or {}
    trusted = bool(state["detector_trusted"]) if "detector_trusted" in state else None
    log = read_log_settings(os.path.dirname(os.path.abspath(path)))
    given = {key: value for key, value in flags.items() if value is not None}
    if scoring.get("eval_view") is not None:
        if given:
            raise UserError(f"{', '.join(VIEW_KEYS[k] for k in given)}: the checkpoint records how the run viewed "
                            f"its images ({view_settings_text(scoring['eval_view'])}); drop the flag(s)")
        view, view_from = build_view(scoring["eval_view"]), "the checkpoint"
    else:
        settings = {}
        for key, flag in VIEW_KEYS.items():
            if key in given and key in log and given[key] != log[key]:
                raise UserError(f"{flag} {given[key]} differs from the run's {key} {log[key]} (its log.txt); "
                                "drop the flag")
            settings[key] = given.get(key, log.get(key))
        missing = [VIEW_KEYS[k] for k, v in settings.items() if v is None]
        if missing:
            raise UserError(f"the checkpoint {path} does not record how its run viewed images, and its folder has "
                            f"no log.txt saying so; give {', '.join(missing)} as the run was trained")
        view = view_from_settings(settings["dataset"], settings["img_size"], settings["crop_ratio"])
        view_from = "the run's log.txt" if not given else "the flags" + (" and the run's log.txt" if log else "")
    if "routing_threshold" in scoring:
        threshold, threshold_from = float(scoring["routing_threshold"]), "the run's routing threshold"
    elif "routing_threshold" in log:
        threshold, threshold_from = log["routing_threshold"], "the run's last logged routing threshold"
    else:
        threshold, threshold_from = None, ""
    return RunDetector(net, view, view_from, threshold, threshold_from, trusted)


def view_settings_text(settings: dict) -> str:
    crop = f", centre crop {settings['crop']}" if settings.get("crop") else ""
    return f"resize {settings['resize']}{crop}, mean {settings['mean']}, std {settings['std']}"


def read_images(spec: str) -> ImageSet:
    """The images to score; the readers' errors are about ``IMAGES`` here, not a config key."""
    from data_tools.synthetic import BUNDLED_DIR, read_own_classes

    if spec == "bundled":  # a dataset's shipped set, and no dataset is named here
        names = ", ".join(sorted(f"bundled:{p.stem}" for p in BUNDLED_DIR.glob("*.npz")))
        raise UserError(f"IMAGES 'bundled' names no set without a dataset; give one of {names}, or a path")
    try:
        return read_own_classes(spec)
    except UserError as exc:
        # The readers name the config key they usually serve; here the images are a positional argument.
        text = re.sub(r"^synthetic_source: ", "IMAGES: ", str(exc)).replace("or 'bundled'", "or 'bundled:<name>'")
        raise UserError(text) from None


@torch.no_grad()
def score_images(detector: RunDetector, images: ImageSet, batch_size: int = 256,
                 device: str = "cpu") -> np.ndarray:
    """P(synthetic) of every image, from the detector under the run's eval view."""
    net = detector.net.to(device).eval()
    scores = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"{PROG}: scoring", unit="batch", disable=None):
        batch = torch.stack([detector.view(images.load(i)) for i in range(start, min(start + batch_size, len(images)))])
        scores.append(torch.sigmoid(net(batch.to(device).float())).cpu())
    return torch.cat(scores).numpy().astype(np.float64)


def image_names(images: ImageSet, spec: str) -> List[str]:
    """How the CSV names each image: its path, or ``<npz>#<index>`` for an image held in an array."""
    return [str(item) if isinstance(item, (str, os.PathLike)) else f"{spec}#{i}"
            for i, item in enumerate(images.images)]


def write_scores(path: str, images: ImageSet, names: Sequence[str], scores: np.ndarray, threshold: float) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "image", "class", "score", "judged"])
        for i, (name, score) in enumerate(zip(names, scores)):
            writer.writerow([i, name, images.class_names[images.labels[i]], f"{score:.6f}",
                             "synthetic" if score >= threshold else "real"])


def draw_histogram(path: str, scores: np.ndarray, threshold: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(scores, bins=50, range=(0, 1), color="tab:blue")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("detector score, P(synthetic)")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_kept(folder: str, images: ImageSet, keep: np.ndarray, root: Optional[str]) -> int:
    """Copy the images at ``keep`` into ``folder`` (files byte for byte, array images as PNG); returns the count.

    Files under the input folder ``root`` keep their path relative to it;
    others go to ``<class>/<file name>``. With named classes a
    ``manifest.csv`` (path, class_name) lists them, so the folder reads back
    as a source of the same classes.
    """
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    used, rows = set(), []
    for i in np.flatnonzero(keep):
        item, cls = images.images[i], images.class_names[images.labels[i]]
        if isinstance(item, (str, os.PathLike)):
            inside = root is not None and _is_within(item, root)
            rel = os.path.relpath(item, root) if inside else os.path.join(cls, os.path.basename(item))
        else:
            rel = os.path.join(cls, f"{i}.png")
        stem, ext = os.path.splitext(rel)
        if rel in used:  # two files of one name from different places
            rel = f"{stem}_{i}{ext}"
        used.add(rel)
        target = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(target) or folder, exist_ok=True)
        if isinstance(item, (str, os.PathLike)):
            shutil.copy2(item, target)
        else:
            Image.fromarray(np.asarray(item).squeeze()).save(target)
        rows.append((Path(rel).as_posix(), cls))
    if any(cls for _, cls in rows):
        with open(os.path.join(folder, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "class_name"])
            writer.writerows(rows)
    return len(rows)


def _is_within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def input_root(spec: str) -> Optional[str]:
    """The folder an IMAGES argument's files live under (a folder, or a manifest's folder); None for an .npz."""
    if os.path.isdir(spec):
        return spec
    if spec.lower().endswith(".csv"):
        return os.path.dirname(os.path.abspath(spec))
    return None


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that exist (without --overwrite), a non-empty --keep-real, and anything inside a folder IMAGES."""
    for flag, path in (("--csv", args.csv), ("--histogram", args.histogram)):
        if os.path.exists(path) and os.path.exists(args.images) and os.path.samefile(path, args.images):
            raise UserError(f"{flag} {path} is IMAGES itself, which is left untouched; write it elsewhere")
        if os.path.isdir(path):
            raise UserError(f"{flag} {path} is a folder; give a file name")
        if os.path.exists(path) and not args.overwrite:
            raise UserError(f"{flag} {path} exists; pass --overwrite to replace it, or choose another name")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError(f"{flag} {path}: its folder does not exist; create it first")
    if args.keep_real is not None:
        if os.path.exists(args.keep_real) and (not os.path.isdir(args.keep_real) or os.listdir(args.keep_real)):
            raise UserError(f"--keep-real {args.keep_real} exists and is not an empty folder; give a new folder")
    if os.path.isdir(args.images):
        for flag, path in (("--csv", args.csv), ("--histogram", args.histogram), ("--keep-real", args.keep_real)):
            if path is not None and _is_within(path, args.images):
                raise UserError(f"{flag} {path} lies inside IMAGES {args.images}, which is left untouched; "
                                "write it elsewhere")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="Exit codes: 0 done, 2 bad input (one 'rsmatch-detect: error:' line; nothing written).")
    parser.add_argument("run", metavar="RUN", help="a trained RSMatch run folder (its latest_model.pth, else "
                        "model_best.pth) or a checkpoint file")
    parser.add_argument("images", metavar="IMAGES", help="the images to score: a folder (class sub-folders, a "
                        "manifest.csv, or images directly), a manifest CSV, or an .npz (images, labels)")
    parser.add_argument("--csv", required=True, help="write the per-image scores here (index, image, class, "
                        "score, judged)")
    parser.add_argument("--histogram", default=None, help="score histogram PNG (default: the CSV's name with .png)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="judged synthetic at or above this score (default: the run's routing threshold)")
    parser.add_argument("--keep-real", default=None, metavar="DIR",
                        help="copy the images judged real into this new (or empty) folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv / --histogram file")
    parser.add_argument("--dataset", default=None,
                        help="for a checkpoint that does not record its view and has no log.txt beside it: the "
                             "run's dataset (its normalisation)")
    parser.add_argument("--img-size", type=int, default=None, help="likewise: the run's img_size")
    parser.add_argument("--crop-ratio", type=float, default=None, help="likewise: the run's crop_ratio")
    parser.add_argument("--batch-size", type=int, default=256, help="images scored at once (default 256)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to score (auto: CUDA if visible)")
    args = parser.parse_args(argv)
    if args.histogram is None:
        args.histogram = os.path.splitext(args.csv)[0] + ".png"
    return args


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold {args.threshold} is not a score; give a number in [0, 1]")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} must be >= 1")
    if args.img_size is not None and args.img_size < 1:
        raise UserError(f"--img-size {args.img_size} must be >= 1")
    device = resolve_device(args.device, setting="--device")
    check_outputs(args)
    detector = load_run_detector(args.run, {"dataset": args.dataset, "img_size": args.img_size,
                                            "crop_ratio": args.crop_ratio})
    threshold, threshold_from = args.threshold, "--threshold"
    if threshold is None:
        if detector.threshold is None:
            raise UserError("the checkpoint records no routing threshold and its folder has no log.txt reporting "
                            "one; give --threshold")
        threshold, threshold_from = detector.threshold, detector.threshold_from
    images = read_images(args.images)
    scores = score_images(detector, images, args.batch_size, device)  # every image read before anything is written

    judged = scores >= threshold
    share = float(judged.mean())
    write_scores(args.csv, images, image_names(images, args.images), scores, threshold)
    draw_histogram(args.histogram, scores, threshold,
                   f"{os.path.basename(os.path.normpath(args.images))}: {share:.1%} of {len(scores):,} judged "
                   f"synthetic (threshold {threshold:.3f})")
    print(f"{PROG}: {len(scores):,} images scored by the detector ({detector.net.settings['input']} input, "
          f"view from {detector.view_from})")
    print(f"{PROG}: estimated synthetic share {share:.1%} ({int(judged.sum()):,} of {len(scores):,} images score "
          f">= {threshold:.4f}, {threshold_from}); mean score {scores.mean():.3f}")
    if detector.trusted is False:
        print(f"{PROG}: note: this run's detector was never trusted (its bootstrap never ended, so it routed "
              "nothing); its scores are the PU bootstrap's")
    print(f"{PROG}: wrote {args.csv} and {args.histogram}")
    if args.keep_real is not None:
        kept = write_kept(args.keep_real, images, ~judged, input_root(args.images))
        print(f"{PROG}: copied the {kept:,} images judged real to {args.keep_real}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rsmatch-detect``; returns the exit code."""
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        return report(exc, command_name(PROG, "rsmatch_usb.detect"))


if __name__ == "__main__":
    sys.exit(main())
