"""Detector inputs compared without SSL training: PU learning from a few known reals, AUROC per synthetic source.

    python -m benchmark_configs.detector_inputs --steps 250 500 1000 --csv detector_inputs.csv

A development aid (issue 26), not the benchmark. For each synthetic source
(the embedded digits' bundled set at 16 px; the three bundled Fashion-MNIST
sets at 28 px, against real images from the SSL pool, never the test split),
each detector input (:mod:`rsmatch_usb.algorithms.rsmatch.detector_inputs`)
and each loss, a fresh :class:`~rsmatch_usb.algorithms.rsmatch.detector.Detector`
trains as RSMatch's bootstrap does, with no classifier: ``--known`` real
images (USB's weak view: flips and reflect-padded shifts, which keep the
artifacts) against an unlabeled set of ``--unlabeled`` real images plus as
many synthetic ones per ``--alpha``. Losses: ``nnpu`` (Kiryo et al. 2017, the
prior ``--prior`` = share of real images among the unlabeled ones, by
default the true one) and ``bce`` (RSMatch's weighted-BCE bootstrap,
``--pu-mass``). At each of ``--steps`` the EMA scorer's AUROC on the whole
unlabeled set (eval view) is recorded. Printed as a table; ``--csv`` also
writes it. Every configuration of a source sees the same images, batches and
augmentations (same ``--seed``).
"""
import argparse
import csv
import os
import random
import sys
import time
from typing import Dict, List

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_tools.errors import UserError, report  # noqa: E402

# benchmark -> (dataset, image size, bundled synthetic sources)
BENCHMARKS = {
    "digits": ("digits", 16, ("digits_synthetic",)),
    # The benchmark's sources (generate.FASHION_SOURCES); docs/results/detector_inputs/seed0.csv was measured on
    # the first bundle's diffusion sets, now fashion_offclass_ddim25 and fashion_offclass_dpmsolver4.
    "fashion": ("fashion_mnist", 28, ("fashion_ddim25_cfg1.5", "fashion_dpmsolver4_cfg2", "fashion_cgan")),
}
LOSSES = ("nnpu", "bce")
CROP_RATIO = 0.875  # USB's classic pipelines: the weak view's shift is img_size * (1 - crop_ratio) pixels


def parse_args(argv=None):
    from rsmatch_usb.algorithms.rsmatch.extensions import INPUTS

    p = argparse.ArgumentParser(prog="python -m benchmark_configs.detector_inputs",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--benchmarks", nargs="+", choices=sorted(BENCHMARKS), default=sorted(BENCHMARKS))
    p.add_argument("--sources", nargs="+", default=None, help="only these bundled sources (default: all of each "
                   "benchmark's)")
    p.add_argument("--inputs", nargs="+", choices=list(INPUTS), default=list(INPUTS))
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    p.add_argument("--known", type=int, default=30, help="known real images (RSMatch: the labeled ones)")
    p.add_argument("--unlabeled", type=int, default=1000, help="real images in the unlabeled set")
    p.add_argument("--alpha", type=float, default=1.0, help="synthetic / real images in the unlabeled set")
    p.add_argument("--prior", type=float, default=None,
                   help="nnPU prior, the share of real images among the unlabeled (default: the true one)")
    p.add_argument("--pu-mass", type=float, default=1 / 3, help="bce: mass of the unlabeled side (RSMatch's pu_mass)")
    p.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000], help="report the AUROC at these steps")
    p.add_argument("--batch-size", type=int, default=32, help="known reals per step")
    p.add_argument("--ulb-batch-size", type=int, default=32, help="unlabeled images per step")
    p.add_argument("--width", type=int, default=16, help="detector width (RSMatch: detector_width)")
    p.add_argument("--lr", type=float, default=3e-3, help="detector Adam learning rate (detector_lr)")
    p.add_argument("--wd", type=float, default=5e-3, help="detector Adam weight decay (detector_wd)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (small batches gain little from more)")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST files (default: where "
                   "data_tools.fashion_mnist looks, e.g. /usr/share/datasets/fashion-mnist)")
    p.add_argument("--csv", default=None, help="also write the table here")
    args = p.parse_args(argv)
    for name in ("known", "unlabeled", "batch_size", "ulb_batch_size", "width", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.steps) < 1:
        raise UserError("--steps must be positive step counts")
    if args.alpha <= 0 or args.pu_mass <= 0:
        raise UserError("--alpha and --pu-mass must be > 0")
    if args.prior is not None and not 0 < args.prior <= 1:
        raise UserError(f"--prior {args.prior} must lie in (0, 1]")
    known = {s for b in args.benchmarks for s in BENCHMARKS[b][2]}
    if args.sources is not None and set(args.sources) - known:
        raise UserError(f"--sources: {', '.join(sorted(set(args.sources) - known))} not among the chosen "
                        f"benchmarks' sources ({', '.join(sorted(known))})")
    if args.csv is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.csv))):
        raise UserError(f"--csv {args.csv}: its folder does not exist")
    args.steps = sorted(set(args.steps))
    return args


def draw_sets(benchmark: str, source: str, args) -> Dict[str, object]:
    """Known reals, the unlabeled set (real then synthetic) and its truth, as PIL images, and the transforms."""
    import numpy as np

    from data_tools.sources import REAL_SOURCES
    from data_tools.synthetic import read_synthetic_source
    from data_tools.usb import build_transforms

    dataset, img_size, _ = BENCHMARKS[benchmark]
    real_source = REAL_SOURCES[dataset]
    pool = real_source.load(None, args.data_dir)[0]  # the SSL pool (train split); the test split is never read
    synthetic = read_synthetic_source(f"bundled:{source}", dataset, pool.class_names)
    n_syn = int(round(args.alpha * args.unlabeled))
    if args.known + args.unlabeled > len(pool) or n_syn > len(synthetic):
        raise UserError(f"{source}: asks for {args.known} + {args.unlabeled} real and {n_syn} synthetic images; "
                        f"there are {len(pool)} and {len(synthetic)}")
    rng = np.random.RandomState(args.seed)
    real_index = rng.permutation(len(pool))[:args.known + args.unlabeled]
    syn_index = rng.permutation(len(synthetic))[:n_syn]
    weak, _, evaluation = build_transforms(img_size, CROP_RATIO, real_source.mean, real_source.std)
    return {"known": [pool.load(i) for i in real_index[:args.known]],
            "unlabeled": [pool.load(i) for i in real_index[args.known:]] + [synthetic.load(i) for i in syn_index],
            "truth": np.r_[np.zeros(args.unlabeled), np.ones(n_syn)], "weak": weak, "eval": evaluation}


def train_and_score(sets, name: str, loss: str, args, progress) -> List[float]:
    """AUROC of a detector with input ``name`` trained by ``loss``, at each of ``args.steps``."""
    import torch
    from sklearn.metrics import roc_auc_score

    from rsmatch_usb.algorithms.rsmatch.extensions import Detector

    # Same seed for every configuration of a source: same batches, same augmentations (torchvision draws
    # from the global RNGs).
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    det = Detector(args.width, args.lr, args.wd, ema_m=0.99, seed=args.seed, ema_warmup=True, input=name)
    known, unlabeled, weak = sets["known"], sets["unlabeled"], sets["weak"]
    scoring = torch.stack([sets["eval"](img) for img in unlabeled])
    prior = args.prior if args.prior is not None else float((sets["truth"] == 0).mean())
    aurocs = []
    for step in range(1, args.steps[-1] + 1):
        x_real = torch.stack([weak(known[i]) for i in torch.randint(len(known), (args.batch_size,), generator=g)])
        x_ulb = torch.stack([weak(unlabeled[i]) for i in torch.randint(len(unlabeled), (args.ulb_batch_size,),
                                                                         generator=g)])
        if loss == "nnpu":
            det.nnpu_step(x_real, x_ulb, prior)
        else:
            # RSMatch's bootstrap (RSMixin.detector_step): reals weigh 1, each unlabeled image pu_mass * n_real / n_ulb.
            n_real, n_ulb = len(x_real), len(x_ulb)
            det.step(torch.cat((x_real, x_ulb)), torch.cat((torch.zeros(n_real), torch.ones(n_ulb))),
                     torch.cat((torch.ones(n_real), torch.full((n_ulb,), args.pu_mass * n_real / n_ulb))))
        progress.update(1)
        if step in args.steps:
            scores = torch.cat([det.score(chunk) for chunk in scoring.split(512)]).numpy()
            aurocs.append(float(roc_auc_score(sets["truth"], scores)))
    return aurocs


def run(args) -> List[dict]:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    plan = [(b, s) for b in args.benchmarks for s in BENCHMARKS[b][2] if args.sources is None or s in args.sources]
    total = len(plan) * len(args.inputs) * len(args.losses) * args.steps[-1]
    rows = []
    with tqdm(total=total, desc="detector steps", unit="step", smoothing=0.05, mininterval=5) as progress:
        for benchmark, source in plan:
            sets = draw_sets(benchmark, source, args)
            for loss in args.losses:
                for name in args.inputs:
                    progress.set_postfix_str(f"{source} {loss} {name}")
                    start = time.perf_counter()
                    aurocs = train_and_score(sets, name, loss, args, progress)
                    row = {"benchmark": benchmark, "source": source, "img_size": BENCHMARKS[benchmark][1],
                           "loss": loss, "input": name}
                    row.update({f"auroc@{s}": round(a, 4) for s, a in zip(args.steps, aurocs)})
                    row["seconds"] = round(time.perf_counter() - start, 1)
                    rows.append(row)
                    tqdm.write(" | ".join(str(v) for v in row.values()))
    return rows


def print_table(rows: List[dict]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) and c.startswith("auroc")
                                else str(row[c]) for c in columns) + " |")


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        rows = run(args)
    except UserError as exc:
        return report(exc, "python -m benchmark_configs.detector_inputs")
    print(f"known reals {args.known}, unlabeled {args.unlabeled} real + {int(round(args.alpha * args.unlabeled))} "
          f"synthetic, width {args.width}, lr {args.lr}, wd {args.wd}, batches {args.batch_size} + "
          f"{args.ulb_batch_size}, seed {args.seed}, nnPU prior "
          f"{args.prior if args.prior is not None else 'true'}, bce pu_mass {args.pu_mass:.3f}")
    print_table(rows)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
