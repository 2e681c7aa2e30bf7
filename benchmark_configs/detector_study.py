"""Compare RSMatch detector settings inside training: AUROC over time, judged share, routing and accuracy.

The development study of issue 26 ("choose on digits or on the validation
split"): each variant is a set of config overrides, trained with
``rsmatch-train`` on a base config at each alpha and seed, and summarised from
its log. Never point it at a test split: the fashion base configs are run
with ``eval_split: val`` unless ``--eval-split`` says otherwise, and digits
has no validation split (its dev runs are the development data by design).

    python -m benchmark_configs.detector_study --base benchmark_configs/embedded/grid/rsmatch/rsmatch_digits_40_alpha1_0.yaml \\
        --variant rgb detector_input=rgb --variant npr detector_input=npr --alphas 0 1 --seeds 0 1 \\
        --set num_train_iter=1000 num_eval_iter=250 --save-dir /tmp/study --csv docs/results/detector_dev/digits.csv

Each run's folder is ``--save-dir/<variant>_alpha<a>_<seed>``; a finished run
is not trained again (rerun the command to continue), so the study resumes.
Rows: variant, alpha, seed, AUROC (overall and per source) at each
evaluation, the judged-synthetic share and routing threshold at the end
(``train/syn_ratio``, ``train/routing_threshold``, averaged over the last
``--tail`` logged steps), the trust iteration, final and best accuracy.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark_configs import generate  # noqa: E402
from benchmark_configs.report import ITER_RE, parse_eval_body, parse_log  # noqa: E402
from data_tools.errors import UserError, command_name  # noqa: E402

PROG = command_name("python -m benchmark_configs.detector_study", "benchmark_configs.detector_study")


def parse_overrides(items: Sequence[str]) -> Dict[str, str]:
    """``key=value`` strings -> ``{key: value}`` (values stay text; the train command parses them)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value")
        out[key] = value
    return out


def run_one(base: str, name: str, overrides: Dict[str, str], save_dir: str, threads: int) -> str:
    """Train one run (skipped when its log already has the final result); returns its folder."""
    folder = os.path.join(save_dir, name)
    log = os.path.join(folder, "log.txt")
    if os.path.isfile(log) and "eval/best_acc" in parse_log(log)["results"]:
        return folder
    cmd = [sys.executable, "-m", "rsmatch_usb.train", "--c", base, "--save_dir", save_dir, "--save_name", name,
           "--load_path", os.path.join(folder, "latest_model.pth"), "--resume", "True", "--overwrite", "True"]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    print(f"[study] {name}: {' '.join(f'{k}={v}' for k, v in overrides.items())}", flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{PROG}: error: run {name} failed (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return folder


def summarise(folder: str, tail: int) -> Dict[str, object]:
    """What a run's log says about its detector and accuracy (see the module docstring)."""
    parsed = parse_log(os.path.join(folder, "log.txt"))
    evals, row = parsed["evals"], {}
    for it in sorted(evals):
        for key, value in evals[it].items():
            if key.startswith("eval/detector_auroc"):
                row[f"{key.replace('eval/detector_', '')}@{it}"] = round(value, 4)
        row[f"acc@{it}"] = round(evals[it].get("eval/top-1-acc", float("nan")), 4)
        row[f"fpr@{it}"] = round(evals[it].get("eval/detector_fpr", float("nan")), 4)
    with open(os.path.join(folder, "log.txt"), encoding="utf-8", errors="replace") as f:
        steps = [parse_eval_body(m.group("body") or "") for m in map(ITER_RE.match, f) if m][-tail:]
    for field, key in (("judged_share", "train/syn_ratio"), ("routing_threshold", "train/routing_threshold")):
        values = [s[key] for s in steps if key in s]
        row[field] = round(statistics.fmean(values), 4) if values else float("nan")
    last = evals[max(evals)] if evals else {}
    row.update(trusted_it=parsed["trusted_it"], final_acc=last.get("eval/top-1-acc", float("nan")),
               best_acc=parsed["results"].get("eval/best_acc", float("nan")))
    return row


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="an RSMatch config to start from")
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                   help="a variant: its name, then config overrides (repeat for each variant)")
    p.add_argument("--alphas", nargs="+", type=float, default=[1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--set", nargs="*", default=[], help="overrides for every run (e.g. num_train_iter=1000)")
    p.add_argument("--eval-split", default="val", choices=("val", "test"),
                   help="eval split of datasets that have a validation split (default val; digits has none)")
    p.add_argument("--save-dir", required=True, help="folder of the runs")
    p.add_argument("--csv", help="write the summary rows here")
    p.add_argument("--tail", type=int, default=5, help="logged steps averaged for the judged share (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    args = p.parse_args(argv)
    try:
        shared = parse_overrides(args.set)
        variants: List[Tuple[str, Dict[str, str]]] = [(v[0], parse_overrides(v[1:])) for v in args.variant]
        if not os.path.isfile(args.base):
            raise UserError(f"--base {args.base} is not a file")
    except UserError as exc:
        p.exit(2, f"{PROG}: error: {exc}\n")
    with open(args.base, encoding="utf-8") as f:
        dataset = next((line.split(":", 1)[1].strip() for line in f if line.startswith("dataset:")), "")
    if dataset == "fashion_mnist":
        shared.setdefault("eval_split", args.eval_split)
    rows = []
    for alpha in args.alphas:
        for seed in args.seeds:
            for name, overrides in variants:
                run = f"{name}_alpha{generate.alpha_tag(alpha)}_{seed}"
                folder = run_one(args.base, run, {**shared, "synthetic_ratio": str(alpha), "seed": str(seed),
                                                  **overrides}, args.save_dir, args.threads)
                rows.append({"variant": name, "alpha": alpha, "seed": seed, **summarise(folder, args.tail)})
    fields = list(dict.fromkeys(k for row in rows for k in row))
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    keep = [k for k in fields if not k.startswith(("acc@", "fpr@"))]
    print(" | ".join(keep))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
