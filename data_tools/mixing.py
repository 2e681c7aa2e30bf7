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
  training, so a broken file stops the run up front, by name (the train
  command checks them once per node, not in every DDP rank).
* Several sources (``synthetic_source`` a list, optionally weighted): the
  total is split over the sources in proportion to their weights (largest
  remainders, ties to the earlier source), and each class's count over the
  sources by a smooth weighted round-robin over the class-sorted slots, so
  both a source's total and a class's total are exact and each source's
  per-class counts differ by at most about one. Each source is drawn from
  its own seeded stream (keyed by its id, not its place in the list). Every
  unlabeled image carries its source id (``source``, ``source_ulb`` in a
  batch) beside ``is_synthetic``. A single source follows the rules above
  unchanged (same images under the same seed).
"""
from __future__ import annotations

import math
import os
import zlib
from argparse import Namespace
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .errors import UserError
from .imageset import ImageSet
from .synthetic import MANIFEST, SourceEntry, read_synthetic_source, resolve_source, source_entries

# Seed-sequence streams: which classes get the remainder, each class's draw, each source's draws.
_REMAINDER_STREAM, _CLASS_STREAM, _SOURCE_STREAM = 0, 1, 2


def synthetic_settings(args: Namespace, dataset: Optional[str] = None
                       ) -> Tuple[Optional[List[SourceEntry]], float, int]:
    """``(sources, ratio, seed)`` from the config, validated; sources (a list of
    :class:`~data_tools.synthetic.SourceEntry`) is None for a clean dataset.

    With ``dataset`` each source is also resolved (``bundled``) and checked to
    exist, so that a bad source fails before any real data is read.
    """
    sources = source_entries(getattr(args, "synthetic_source", None))
    try:
        ratio = float(getattr(args, "synthetic_ratio", 0.0) or 0.0)
    except (TypeError, ValueError):
        raise UserError(f"synthetic_ratio: {getattr(args, 'synthetic_ratio')!r} is not a number") from None
    if not math.isfinite(ratio) or ratio < 0:
        raise UserError(f"synthetic_ratio: {ratio} is not allowed; alpha = #synthetic / #real unlabeled "
                        "must be a finite number >= 0")
    if ratio > 0 and sources is None:
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
    if dataset:
        sources = [SourceEntry(e.name, resolve_source(e.spec, dataset), e.weight) for e in sources]
        check_distinct(sources)
    return sources, ratio, seed


def _same_files(path):
    """What identifies the images a resolved source reads: its real path (a folder's manifest if it has one)."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST)):
        path = os.path.join(path, MANIFEST)
    return os.path.realpath(path)


def check_distinct(sources: Sequence[SourceEntry]) -> None:
    """A UserError when two entries of a source list read the same images (``[bundled, bundled:digits_synthetic]``).

    The same images under two ids would be drawn twice, and each id's
    per-source figures would describe half of one source.
    """
    seen = {}
    for entry in sources:
        key = _same_files(entry.spec)
        if key in seen:
            raise UserError(f"synthetic_source: {seen[key]} and {entry.name} name the same images ({key}), which "
                            "would be drawn twice; list each source once (give it a larger weight to draw more "
                            "from it)")
        seen[key] = entry.name


def synthetic_total(num_real: int, ratio: float) -> int:
    """``round(ratio * num_real)``, halves up, with ``ratio`` read as the decimal it prints as."""
    return math.floor(Fraction(repr(float(ratio))) * num_real + Fraction(1, 2))


def per_class_counts(total: int, num_classes: int, seed: int) -> np.ndarray:
    """``total`` spread over classes: ``total // C`` each, one more for ``total % C`` seeded classes."""
    counts = np.full(num_classes, total // num_classes, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_REMAINDER_STREAM,)))
    # A permutation's head, not choice(): a larger remainder extends a smaller one's classes.
    counts[rng.permutation(num_classes)[:total % num_classes]] += 1
    return counts


def source_totals(total: int, weights: Sequence[float]) -> np.ndarray:
    """``total`` split over sources in proportion to ``weights``: largest remainders, ties to the earlier."""
    weights = [Fraction(repr(float(w))) for w in weights]
    shares = [total * w / sum(weights) for w in weights]
    counts = [math.floor(x) for x in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return np.asarray(counts, dtype=np.int64)


def source_class_counts(total: int, num_classes: int, weights: Sequence[float], seed: int) -> np.ndarray:
    """``(S, C)`` counts: row sums are :func:`source_totals`, column sums :func:`per_class_counts`.

    The slots of the classes (class by class) are dealt to the sources by
    nginx's smooth weighted round-robin with the source totals as weights,
    which hands each source exactly its total and spreads it evenly over
    every run of consecutive slots, hence over the classes.
    """
    class_counts = per_class_counts(total, num_classes, seed)
    totals = source_totals(total, weights)
    weights, current = totals.tolist(), [0] * len(totals)  # Python ints: the loop runs once per image
    sources = range(len(weights))
    counts = [[0] * num_classes for _ in sources]
    for c, n in enumerate(class_counts.tolist()):
        for _ in range(n):
            for i in sources:
                current[i] += weights[i]
            s = max(sources, key=current.__getitem__)  # the first of equal maxima: deterministic
            current[s] -= total
            counts[s][c] += 1
    return np.asarray(counts, dtype=np.int64).reshape(len(weights), num_classes)


def check_available(synthetic: ImageSet, counts: np.ndarray, ratio: float, num_real: int, share: float = 1.0,
                    name: Optional[str] = None) -> None:
    """A UserError when some class has fewer synthetic images than ``counts`` asks for.

    ``share`` is the source's part of the synthetic total and ``name`` its id,
    when several sources are mixed.
    """
    available = np.bincount(synthetic.labels, minlength=len(counts))[:len(counts)]
    short = np.flatnonzero(counts > available)
    if not len(short):
        return
    detail = ", ".join(f"{available[c]} in class {synthetic.class_names[c]}" for c in short[:10])
    which = f"synthetic_source {name}" if name else "synthetic_source"
    raise UserError(
        f"synthetic_ratio: {ratio} of {num_real} real unlabeled images needs {int(counts.sum())} synthetic "
        f"images ({int(counts.max())} per class), but {which} has only {detail}"
        f"{' ...' if len(short) > 10 else ''}; {_how_to_fit(synthetic, available, num_real, share, which)}")


def check_source_totals(sets: Sequence[ImageSet], names: Sequence[str], totals: Sequence[int], ratio: float,
                        num_real: int, shares: Sequence[float]) -> None:
    """A UserError when a source holds fewer images than its part of the total, before any per-image work.

    Checked first so that an absurd ratio (1e9) fails at once instead of
    splitting its billions of images over the sources one by one. The hint is
    the largest ratio every source fits (approximate, as the split is).
    """
    short = [i for i, (source, total) in enumerate(zip(sets, totals)) if total > len(source)]
    if not short:
        return
    available = [np.bincount(s.labels, minlength=len(s.class_names))[:len(s.class_names)] for s in sets]
    tightest = min(range(len(sets)), key=lambda i: _largest_ratio(available[i], num_real, shares[i]))
    hint = _how_to_fit(sets[tightest], available[tightest], num_real, shares[tightest],
                       f"synthetic_source {names[tightest]}")
    i = short[0]
    raise UserError(
        f"synthetic_ratio: {ratio} of {num_real} real unlabeled images needs {int(sum(totals))} synthetic images, "
        f"{int(totals[i])} of them from synthetic_source {names[i]}, which holds only {len(sets[i])}; {hint}")


def _how_to_fit(synthetic, available, num_real, share, which):
    """The fix of a ratio that asks for too many images: the ratio that fits, or which class has too few."""
    largest = _largest_ratio(available, num_real, share)
    if largest > 0:
        return f"lower synthetic_ratio to {'at most' if share == 1 else 'about'} {largest:g} or add images"
    scarce = int(np.argmin(available))
    return (f"{which} has too few images for any balanced draw ({int(available.sum())} in all, "
            f"{int(available[scarce])} in class {synthetic.class_names[scarce]}); add images of that class")


def _largest_ratio(available, num_real, share=1.0):
    """The largest ratio whose balanced draw fits ``available`` images per class, rounded down (so it fits).

    ``share`` is a source's part of the total when several are mixed (then the ratio is approximate).
    """
    return math.floor(len(available) * int(available.min()) / (num_real * share) * 1e4) / 1e4


def draw(synthetic: ImageSet, counts: np.ndarray, seed: int, stream: Tuple[int, ...] = ()) -> np.ndarray:
    """Indices into ``synthetic``: ``counts[c]`` images of class ``c``, seeded, without replacement.

    ``stream`` prefixes the seed sequence's spawn key (a source's own stream when several are mixed).
    """
    order = _path_order(synthetic)
    order = order[np.argsort(synthetic.labels[order], kind="stable")]
    starts = np.searchsorted(synthetic.labels[order], np.arange(len(counts) + 1))
    picked = []
    for c, k in enumerate(counts):
        if k:
            members = order[starts[c]:starts[c + 1]]
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*stream, _CLASS_STREAM, c)))
            picked.append(members[rng.permutation(len(members))[:k]])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def _path_order(image_set):
    """Positions of ``image_set`` sorted by path (lazy sets), else as stored."""
    if image_set.lazy:
        return np.asarray(sorted(range(len(image_set)), key=lambda i: str(image_set.images[i])), dtype=np.int64)
    return np.arange(len(image_set), dtype=np.int64)


class UnreadableImageError(UserError):
    """A synthetic image file that PIL cannot parse (see :func:`verify_images`)."""


def verify_images(image_set: ImageSet) -> None:
    """Check every file of a lazily-read set with PIL's ``verify()``; a bad file is an UnreadableImageError.

    ``verify`` parses the file without decoding the pixels: cheap enough for
    the synthetic share of a dataset, it catches missing, non-image and most
    corrupt files before training starts.
    """
    if not image_set.lazy:
        return
    for path in image_set.images:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as exc:  # PIL raises many types for broken files
            raise UnreadableImageError(f"synthetic_source: image {path} is unreadable or corrupt "
                                       f"({type(exc).__name__}: {exc}); remove or replace it") from None


def contaminate(ulb: ImageSet, synthetic: Union[ImageSet, Sequence[ImageSet]], ratio: float, seed: int,
                names: Optional[Sequence[str]] = None, weights: Optional[Sequence[float]] = None,
                verify: bool = True) -> ImageSet:
    """``ulb`` (all real) followed by ``round(ratio * len(ulb))`` class-balanced synthetic images.

    ``synthetic`` is one ImageSet or a list of them (one per source, with
    their ids ``names`` and ``weights``); the drawn images of each source come
    in the list's order. ``verify``: check the drawn files with :func:`verify_images`.
    """
    total, num_classes = synthetic_total(len(ulb), ratio), len(ulb.class_names)
    sets = [synthetic] if isinstance(synthetic, ImageSet) else list(synthetic)
    if total >= 2 ** 63:  # a ratio such as 1e308: no int64 count holds it
        available = sum(np.bincount(s.labels, minlength=num_classes)[:num_classes] for s in sets)
        raise UserError(f"synthetic_ratio: {ratio} of {len(ulb)} real unlabeled images needs more synthetic "
                        f"images than the {sum(len(s) for s in sets)} synthetic_source holds; lower "
                        f"synthetic_ratio to at most {_largest_ratio(available, len(ulb)):g} or add images")
    if isinstance(synthetic, ImageSet):
        counts = per_class_counts(total, num_classes, seed)
        check_available(synthetic, counts, ratio, len(ulb))
        drawn = [synthetic.subset(draw(synthetic, counts, seed))]
        if names:
            drawn[0] = drawn[0].with_source(names[0])
    else:
        weights = weights or [1.0] * len(synthetic)
        check_source_totals(synthetic, names, source_totals(total, weights), ratio, len(ulb),
                            [w / sum(weights) for w in weights])
        counts = source_class_counts(total, num_classes, weights, seed)
        drawn = []
        for source, name, row, weight in zip(synthetic, names, counts, weights):
            check_available(source, row, ratio, len(ulb), weight / sum(weights), name)
            # A source's stream is keyed by its id, so reordering the list does not change its images.
            stream = (_SOURCE_STREAM, zlib.crc32(name.encode("utf-8")))
            drawn.append(source.subset(draw(source, row, seed, stream)).with_source(name))
    for part in drawn if verify else ():
        verify_images(part)
    return ImageSet.concat(ulb, *drawn)


def mix_unlabeled(args: Namespace, dataset: str, ulb: ImageSet) -> ImageSet:
    """The unlabeled set the config asks for: ``ulb`` itself, or ``ulb`` contaminated at ratio alpha.

    The drawn synthetic files are verified unless ``args.verify_synthetic_files``
    is False (the train command's DDP ranks whose node has verified them already).
    """
    sources, ratio, seed = synthetic_settings(args, dataset)
    if sources is None:
        return ulb
    sets = [read_synthetic_source(e.spec, dataset, ulb.class_names, ulb.class_ids) for e in sources]
    names = [e.name for e in sources]
    verify = getattr(args, "verify_synthetic_files", True)
    if len(sources) == 1:
        return contaminate(ulb, sets[0], ratio, seed, names, verify=verify)
    return contaminate(ulb, sets, ratio, seed, names, [e.weight for e in sources], verify=verify)
