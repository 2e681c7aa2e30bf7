"""Show what a training config's data holds: ``rsmatch-inspect --c config.yaml``.

Reads the config exactly as ``rsmatch-train`` does, builds the datasets with
the same seed and prints, per class, the labeled, real unlabeled, synthetic
unlabeled (and, with several synthetic sources, per source) and eval image
counts, and the ratio alpha actually achieved.
Creates no run folder. Bad input is one ``error:`` line and exit code 2.
Also ``python -m rsmatch_usb.inspect_data``. A tool above the data layer: it
reads configs with the plugin's :func:`rsmatch_usb.config.get_config`.
"""
from __future__ import annotations

import random
import sys
from argparse import Namespace
from typing import List, Optional, Tuple

import numpy as np
import torch

from data_tools import usb
from data_tools.errors import command_name
from data_tools.imageset import ImageSet

from .config import get_config
from .errors import UserError, report

PROG = command_name("rsmatch-inspect", "rsmatch_usb.inspect_data")


def synthetic_sources(ulb_set: ImageSet) -> List[int]:
    """Source indices of the synthetic images of ``ulb_set``, when two or more sources are mixed (else [])."""
    present = np.unique(ulb_set.source[ulb_set.is_synthetic]).tolist()
    return present if len(present) > 1 else []


def count_table(lb_set: ImageSet, ulb_set: ImageSet, eval_set: ImageSet) -> List[Tuple]:
    """Rows ``(class, labeled, real unlabeled, synthetic unlabeled, [per source ...], eval)``; label -1 is '?'."""
    names = lb_set.class_names
    c = len(names)

    def counts(labels):
        labels = np.asarray(labels)
        return np.bincount(labels[labels >= 0], minlength=c), int((labels < 0).sum())

    columns = [counts(lb_set.labels), counts(ulb_set.labels[~ulb_set.is_synthetic]),
               counts(ulb_set.labels[ulb_set.is_synthetic])]
    columns += [counts(ulb_set.labels[ulb_set.is_synthetic & (ulb_set.source == s)])
                for s in synthetic_sources(ulb_set)]
    columns.append(counts(eval_set.labels))
    rows = [(names[i], *(int(col[0][i]) for col in columns)) for i in range(c)]
    if any(col[1] for col in columns):  # STL-10's unlabeled split has no labels
        rows.append(("?", *(col[1] for col in columns)))
    return rows


def format_report(args: Namespace, lb_set: ImageSet, ulb_set: ImageSet, eval_set: ImageSet) -> str:
    """The report :func:`main` prints: the run's data settings, the per-class table and the alpha achieved."""
    rows = count_table(lb_set, ulb_set, eval_set)
    per_source = tuple(f"synthetic:{ulb_set.source_names[s]}" for s in synthetic_sources(ulb_set))
    header = ("class", "labeled", "real_unlabeled", "synthetic_unlabeled", *per_source, "eval")
    totals = ("total", *(sum(r[k] for r in rows) for k in range(1, len(header))))
    width = max(len(str(r[0])) for r in [header, *rows, totals])
    lines = [f"dataset {args.dataset} ({len(lb_set.class_names)} classes), seed {args.seed}, "
             f"num_labels {args.num_labels}, synthetic_source {args.synthetic_source}, "
             f"synthetic_ratio {args.synthetic_ratio}",
             f"eval split: {getattr(args, 'eval_split', 'test')} ({len(eval_set):,} images)"]
    for r in [header, *rows, totals]:
        lines.append(f"{str(r[0]):<{width}}  " + "  ".join(f"{str(v):>{len(h)}}" for v, h in zip(r[1:], header[1:])))
    real, synthetic = totals[2], totals[3]
    achieved = synthetic / real if real else 0.0
    lines.append(f"alpha achieved: {achieved:.4f} ({synthetic} synthetic / {real} real unlabeled; "
                 f"requested {args.synthetic_ratio})")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code."""
    try:
        args = get_config(argv)
        usb.check_dataset_name(args.dataset)
        if args.dataset not in usb.REAL_SOURCES:
            raise UserError(f"dataset: {args.dataset!r} is built by semilearn; inspect covers "
                            f"{', '.join(sorted(usb.REAL_SOURCES))}")
        # The seeding of rsmatch-train before it builds the datasets, so the split is the run's.
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        lb_set, ulb_set, eval_set = usb.build_datasets(args, args.algorithm, args.dataset, args.num_labels,
                                                       args.num_classes, args.data_dir, args.include_lb_to_ulb)
    except UserError as exc:
        return report(exc, PROG)
    print(format_report(args, lb_set, ulb_set, eval_set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
