"""RS-SSL data mixing: how synthetic images enter a semi-supervised dataset.

The rules, all applied here:

* Labeled and eval sets stay 100% real; synthetic images only join the
  unlabeled set, appended after the real unlabeled images (whose order and
  indices are those of the clean dataset).
* ``alpha = synthetic_ratio = #synthetic / #real unlabeled``. The number of
  synthetic images is ``round(alpha * N_real)`` with halves rounded up
  (``alpha`` taken as the decimal written in the config, so 0.1 * 30 is 3).
  It is spread evenly over the classes: every class gets ``total // C`` and
  ``total % C`` classes, chosen at random from the synthetic seed, get one
  more, so class counts differ by at most one and the total is exact.
* Images of a class are drawn without replacement from a seeded permutation of
  that class's images (sorted by path, so file-system order does not matter):
  the same seed gives the same set on every machine, and under one seed a
  smaller alpha's set is a subset of a larger alpha's. The seed is
  ``synthetic_seed``, or the run's ``seed`` when that key is absent.
* A synthetic image keeps the index of the class it is filed under as its
  target, as real unlabeled images keep their true class, for analysis; USB
  never passes unlabeled targets to a train step. Every unlabeled sample also
  carries the ground-truth flag ``is_synthetic`` (``is_synthetic_ulb`` in a
  batch), which no train step receives either.
* Synthetic images are converted to RGB on reading and resized by the real
  data's transforms, so they reach the network with the real images' size and
  channels.
* The drawn synthetic images that are files are checked with PIL before
  training, so a broken file stops the run up front, by name.
"""
import math
import os
from fractions import Fraction

import numpy as np
from PIL import Image

from .errors import UserError
from .imageset import ImageSet
from .synthetic import read_synthetic_source, resolve_source

# Seed-sequence streams: which classes get the remainder, and each class's draw.
_REMAINDER_STREAM, _CLASS_STREAM = 0, 1

# Paths verified in this process, with (mtime, size): the train command builds
# the datasets twice (a dry run, then the run), and verifying is the slow part.
_VERIFIED = {}


def synthetic_settings(args, dataset=None):
    """``(source, ratio, seed)`` from the config, validated; source is None for a clean dataset.

    With ``dataset`` the source is also resolved (``bundled``) and checked to
    exist, so that a bad source fails before any real data is read.
    """
    source = getattr(args, "synthetic_source", None)
    if isinstance(source, str) and source.strip() in ("", "None", "none", "null"):
        source = None
    try:
        ratio = float(getattr(args, "synthetic_ratio", 0.0) or 0.0)
    except (TypeError, ValueError):
        raise UserError(f"synthetic_ratio: {getattr(args, 'synthetic_ratio')!r} is not a number") from None
    if not math.isfinite(ratio) or ratio < 0:
        raise UserError(f"synthetic_ratio: {ratio} is not allowed; alpha = #synthetic / #real unlabeled "
                        "must be a finite number >= 0")
    if ratio > 0 and source is None:
        raise UserError(f"synthetic_ratio: {ratio} needs synthetic_source (a folder, a manifest CSV, an .npz "
                        "or 'bundled'); set synthetic_ratio: 0 for the clean dataset")
    seed = getattr(args, "synthetic_seed", None)
    if seed in (None, "None"):
        seed = getattr(args, "seed", 0)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise UserError(f"synthetic_seed: {seed!r} is not an integer") from None
    if seed < 0:
        raise UserError(f"synthetic_seed: {seed} must be >= 0")
    if ratio == 0:
        return None, ratio, seed
    return (resolve_source(source, dataset) if dataset else source), ratio, seed


def synthetic_total(num_real, ratio):
    """``round(ratio * num_real)``, halves up, with ``ratio`` read as the decimal it prints as."""
    return math.floor(Fraction(repr(float(ratio))) * num_real + Fraction(1, 2))


def per_class_counts(total, num_classes, seed):
    """``total`` spread over classes: ``total // C`` each, one more for ``total % C`` seeded classes."""
    counts = np.full(num_classes, total // num_classes, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_REMAINDER_STREAM,)))
    # A permutation's head, not choice(): a larger remainder extends a smaller one's classes.
    counts[rng.permutation(num_classes)[:total % num_classes]] += 1
    return counts


def check_available(synthetic, counts, ratio, num_real):
    """A UserError when some class has fewer synthetic images than ``counts`` asks for."""
    available = np.bincount(synthetic.labels, minlength=len(counts))[:len(counts)]
    short = np.flatnonzero(counts > available)
    if not len(short):
        return
    detail = ", ".join(f"{available[c]} in class {synthetic.class_names[c]}" for c in short[:10])
    raise UserError(
        f"synthetic_ratio: {ratio} of {num_real} real unlabeled images needs {int(counts.sum())} synthetic "
        f"images ({int(counts.max())} per class), but synthetic_source has only {detail}"
        f"{' ...' if len(short) > 10 else ''}; lower synthetic_ratio to at most "
        f"{_largest_ratio(available, num_real):g} or add images")


def _largest_ratio(available, num_real):
    """The largest ratio whose balanced draw fits ``available`` images per class, rounded down (so it fits)."""
    return math.floor(len(available) * int(available.min()) / num_real * 1e4) / 1e4


def draw(synthetic, counts, seed):
    """Indices into ``synthetic``: ``counts[c]`` images of class ``c``, seeded, without replacement."""
    order = _path_order(synthetic)
    order = order[np.argsort(synthetic.labels[order], kind="stable")]
    starts = np.searchsorted(synthetic.labels[order], np.arange(len(counts) + 1))
    picked = []
    for c, k in enumerate(counts):
        if k:
            members = order[starts[c]:starts[c + 1]]
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_CLASS_STREAM, c)))
            picked.append(members[rng.permutation(len(members))[:k]])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def _path_order(image_set):
    """Positions of ``image_set`` sorted by path (lazy sets), else as stored."""
    if image_set.lazy:
        return np.asarray(sorted(range(len(image_set)), key=lambda i: str(image_set.images[i])), dtype=np.int64)
    return np.arange(len(image_set), dtype=np.int64)


def verify_images(image_set):
    """Check every file of a lazily-read set with PIL's ``verify()``; a bad file is a UserError naming it.

    ``verify`` parses the file without decoding the pixels: cheap enough for
    the synthetic share of a dataset, it catches missing, non-image and most
    corrupt files before training starts.
    """
    if not image_set.lazy:
        return
    for path in image_set.images:
        try:
            stat = os.stat(path)
            key = (stat.st_mtime_ns, stat.st_size)
            if _VERIFIED.get(path) == key:
                continue
            with Image.open(path) as img:
                img.verify()
        except Exception as exc:  # PIL raises many types for broken files
            raise UserError(f"synthetic_source: image {path} is unreadable or corrupt "
                            f"({type(exc).__name__}: {exc}); remove or replace it") from None
        _VERIFIED[path] = key


def contaminate(ulb, synthetic, ratio, seed):
    """``ulb`` (all real) followed by ``round(ratio * len(ulb))`` class-balanced synthetic images."""
    total = synthetic_total(len(ulb), ratio)
    if total >= 2 ** 63:  # a ratio such as 1e308: no int64 count holds it
        available = np.bincount(synthetic.labels, minlength=len(ulb.class_names))[:len(ulb.class_names)]
        raise UserError(f"synthetic_ratio: {ratio} of {len(ulb)} real unlabeled images needs more synthetic "
                        f"images than the {len(synthetic)} synthetic_source holds; lower synthetic_ratio to at "
                        f"most {_largest_ratio(available, len(ulb)):g} or add images")
    counts = per_class_counts(total, len(ulb.class_names), seed)
    check_available(synthetic, counts, ratio, len(ulb))
    drawn = synthetic.subset(draw(synthetic, counts, seed))
    verify_images(drawn)
    return ImageSet.concat(ulb, drawn)


def mix_unlabeled(args, dataset, ulb):
    """The unlabeled set the config asks for: ``ulb`` itself, or ``ulb`` contaminated at ratio alpha."""
    source, ratio, seed = synthetic_settings(args, dataset)
    if source is None:
        return ulb
    synthetic = read_synthetic_source(source, dataset, ulb.class_names, ulb.class_ids)
    return contaminate(ulb, synthetic, ratio, seed)
