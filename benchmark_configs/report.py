"""Turn a folder of USB runs into the benchmark's CSV, markdown tables and accuracy-vs-alpha plot.

    python -m benchmark_configs.report --runs saved_models/embedded_grid --out reports/embedded
    python -m benchmark_configs.report --results docs/results/fashion/results.csv --out docs/results/fashion

Reads each run's ``metrics.jsonl`` (``save_dir/save_name/metrics.jsonl``, the
structured records every training writes, :mod:`data_tools.run_metrics`), or
for a run without one (an older run) its ``log.txt``, and/or the results
files the runner records (:mod:`benchmark_configs.run`), and writes into ``--out``:

* ``runs.csv``: one row per run: label, algorithm, dataset, labels, alpha,
  seed, best accuracy (USB's ``eval/best_acc``: the best evaluation of the run,
  i.e. a checkpoint chosen on the eval split), final accuracy (the last logged
  evaluation, free of that selection), detector AUROC (the last logged
  ``eval/...auroc`` value, and per synthetic source when several are mixed),
  iterations, wall time;
* ``tables.md``: per dataset, mean ± std over seeds, one row per algorithm and
  one column per (labels, alpha), best of each column in bold; one table for
  best and one for final accuracy; paired differences to FixMatch (each
  method minus FixMatch at the same seed, label count and alpha, mean ± std
  over seeds); the contamination effect (each method at alpha > 0 minus itself
  at alpha 0, same seed); the AUROC where logged, overall and per source;
* ``acc_vs_alpha.png``: accuracy against alpha per algorithm.

Accuracies are in percent (``--metric error`` reports error rates, lower is
better). The config of a run is read from the ``run_start`` record's
arguments (from a log: the ``Arguments: Namespace(...)`` line the train
command logs); the row name is its ``benchmark_label`` key (set by the
generator), else derived from the algorithm and its ablation switches.
Unfinished runs are listed in the CSV and left out of the tables unless
``--include-unfinished``.
"""
import argparse
import ast
import csv
import io
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from datetime import datetime

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark_configs import generate
from data_tools import run_metrics
from data_tools.errors import InputError, UserError, command_name

_STAMP = r"\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+\] "
STAMP_RE = re.compile(_STAMP)
# Evaluation lines have a comma after "iteration"; log-only lines do not.
EVAL_RE = re.compile(_STAMP + r"(?P<it>\d+) iteration, USE_EMA: \w+, (?P<body>.*?) ?"
                     r"BEST_EVAL_ACC: (?P<best>[-+\w.]+), at (?P<best_it>\d+) iters")
ITER_RE = re.compile(_STAMP + r"(?P<it>\d+) iteration(?:,? USE_EMA: \w+, (?P<body>.*))?")
# RSMatch's line when its bootstrap ends and the detector starts routing.
# Older logs say "every class sub-queue holds", newer ones "K of C class sub-queues hold".
TRUSTED_RE = re.compile(r"RSMatch: (?:every class sub-queue holds|\d+ of \d+ class sub-queues hold) >= \d+ images "
                        r"at iteration (?P<it>\d+)")
# Train-line values of the last logged step that show what RSMatch's detector did (empty for other algorithms).
ROUTING_KEYS = {"judged_share": "train/syn_ratio", "routing_threshold": "train/routing_threshold",
                "queue_fill_min": "train/queue_fill_min"}
RESULT_RE = re.compile(r"Model result - (?P<key>\S+) : (?P<value>\S+)")
RUN_START = "Use device:"   # the train command's first log line of each (re)start
ARGS_MARK = "Arguments: Namespace("

CSV_FIELDS = ["label", "algorithm", "dataset", "num_labels", "alpha", "seed", "best_acc", "best_it", "final_acc",
              "final_it", "detector_auroc", "auroc_key", "auroc_by_source", "trusted_it", *ROUTING_KEYS,
              "iterations", "num_train_iter", "finished",
              "wall_time_s", "save_name", "run_dir"]
# The runner's committed results file: a runs.csv row without the machine-local folder, with the machine.
RESULT_FIELDS = [f for f in CSV_FIELDS if f != "run_dir"] + ["machine", "recorded"]

DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny_imagenet": "Tiny-ImageNet",
                 "imagenet": "ImageNet", "digits": "digits (embedded)", "stl10": "STL-10", "svhn": "SVHN"}


def _number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


_PAIR_RE = re.compile(r"[(, ](\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[-+\w.]+)(?=[,)])")


def parse_namespace(line):
    """The keyword values of a logged ``Namespace(...)``; values that are not literals are skipped."""
    text = line[line.index("Namespace("):].strip()
    out = {}
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        # Some value's repr is not Python (an object's <...>): take the simple pairs one by one.
        for key, value in _PAIR_RE.findall(text):
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue
        return out
    for kw in getattr(call, "keywords", []):
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, SyntaxError, TypeError):
            continue
    return out


def parse_eval_body(body):
    """``{'train/sup_loss': 0.1, 'eval/top-1-acc': 0.84, ...}`` from the middle of an evaluation line."""
    values = {}
    for part in body.rstrip(", ").split(", "):
        key, sep, value = part.rpartition(": ")
        if sep:
            values[key.strip()] = _number(value)
    return values


def _timestamp(match):
    return datetime.strptime(match.group("ts"), "%Y-%m-%d %H:%M:%S,%f")


def parse_log(path):
    """What a run's log says: its config, evaluations by iteration, results, and wall time.

    A resumed run appends to the same log and repeats the iterations after its
    checkpoint, so later lines win for an iteration; wall time is summed over
    the (re)starts so the time between an interruption and the resume is not counted.
    """
    config, evals, results, train = {}, {}, {}, {}
    max_it, trusted_it = 0, None
    segments = []  # [first timestamp, last timestamp] per (re)start
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # the last line, cut by a kill or a full disk: its value may be cut too (0.9 -> 0.)
            stamp = STAMP_RE.match(line)
            if stamp:
                ts = _timestamp(stamp)
                if RUN_START in line or not segments:
                    segments.append([ts, ts])
                else:
                    segments[-1][1] = ts
            if ARGS_MARK in line:
                config = parse_namespace(line)
                continue
            m = EVAL_RE.match(line)
            if m:
                it = int(m.group("it"))
                values = parse_eval_body(m.group("body"))
                values["BEST_EVAL_ACC"] = _number(m.group("best"))
                values["best_it"] = int(m.group("best_it"))
                evals[it] = values
                train = values
                max_it = max(max_it, it)
                continue
            m = ITER_RE.match(line)
            if m:
                max_it = max(max_it, int(m.group("it")))
                train = parse_eval_body(m.group("body") or "")
                continue
            m = TRUSTED_RE.search(line)
            if m:
                trusted_it = int(m.group("it"))
                continue
            m = RESULT_RE.search(line)
            if m:
                results[m.group("key")] = _number(m.group("value"))
    wall = sum((end - start).total_seconds() for start, end in segments)
    return {"config": config, "evals": evals, "results": results, "iterations": max_it, "wall_time_s": wall,
            "train": train, "trusted_it": trusted_it}


def parse_metrics(path):
    """What a run's ``metrics.jsonl`` says, as :func:`parse_log` returns it; None when the file does not
    cover the run from its start.

    The file covers the run when its first ``run_start`` event is at iteration
    0; one begun by a resume (the run's first part trained without it) does
    not, and the log, which holds both parts, is read instead. A later start
    at iteration 0 (the run trained again from scratch) begins the run anew.
    A resumed run appends and repeats the iterations after its checkpoint: a
    later record wins for its iteration. Wall time is summed over the (re)starts,
    each from its ``run_start`` record to its last record.
    """
    records = run_metrics.read_records(path)
    starts = [i for i, r in enumerate(records) if r.get("event") == "run_start"]
    if not starts or records[starts[0]].get("it") != 0:
        return None
    records = records[max(i for i in starts if records[i].get("it") == 0):]
    config, evals, steps, results, trusted_it = {}, {}, {}, {}, None
    segments = []  # [first time, last time] per (re)start
    for record in records:
        when, it = record.get("time"), record.get("it")
        if record.get("event") == "run_start":
            config = record.get("args") or config
            segments.append([when, when])
            continue
        if segments and isinstance(when, (int, float)):
            segments[-1][1] = when
        values = {k: math.nan if v is None else v for k, v in record.items() if k not in run_metrics.RECORD_KEYS}
        kind = record.get("kind")
        if kind in ("log", "eval") and isinstance(it, int):
            steps[it] = values
            if kind == "eval":
                evals[it] = values
        elif kind == "result":
            results = values
        elif record.get("event") == "detector_trusted":
            trusted_it = it
    wall = sum(end - start for start, end in segments if isinstance(start, (int, float)))
    last = max(steps, default=None)
    return {"config": config, "evals": evals, "results": results, "iterations": last or 0, "wall_time_s": wall,
            "train": steps.get(last, {}), "trusted_it": trusted_it}


def parse_run(run_dir):
    """What a run folder says: from its ``metrics.jsonl`` where that covers the run, else from its ``log.txt``."""
    path = run_metrics.path_in(run_dir)
    parsed = parse_metrics(path) if os.path.isfile(path) else None
    return parsed if parsed is not None else parse_log(os.path.join(run_dir, "log.txt"))


_KNOWN_DATASETS = sorted({d.name for fam in generate.FAMILIES.values() for d in fam.datasets} | set(DATASET_NAMES),
                         key=len, reverse=True)
_SAVE_NAME_TAIL = r"_(?P<num_labels>\d+)_alpha(?P<alpha>[\d.]+)_(?P<seed>\d+)$"
# Labels and datasets both hold underscores: prefer a known dataset name, shortest label first.
_SAVE_NAME_RES = (re.compile(r"^(?P<label>.+?)_(?P<dataset>" + "|".join(map(re.escape, _KNOWN_DATASETS)) + ")"
                             + _SAVE_NAME_TAIL),
                  re.compile(r"^(?P<label>.+)_(?P<dataset>[a-z0-9]+)" + _SAVE_NAME_TAIL))


def _from_save_name(name):
    """Fallback identity from a generator-made save name (for logs without a Namespace line)."""
    m = _SAVE_NAME_RES[0].match(name) or _SAVE_NAME_RES[1].match(name)
    if not m:
        return {}
    return {"benchmark_label": m.group("label"), "dataset": m.group("dataset"),
            "num_labels": int(m.group("num_labels")), "synthetic_ratio": float(m.group("alpha")),
            "seed": int(m.group("seed"))}


def run_record(run_dir):
    """One CSV row (a dict) for a run folder holding ``metrics.jsonl`` or ``log.txt`` (:func:`parse_run`)."""
    parsed = parse_run(run_dir)
    cfg = dict(_from_save_name(os.path.basename(run_dir)))
    cfg.update(parsed["config"])
    evals = parsed["evals"]
    last_it = max(evals) if evals else None
    last = evals.get(last_it, {})
    auroc_keys = sorted(k for k in last if k.startswith("eval/") and "auroc" in k and "/" not in k[5:])
    # eval/<key>/<source>: the AUROC of one synthetic source (several sources mixed).
    by_source = {k.rsplit("/", 1)[1]: last[k] for k in sorted(last)
                 if auroc_keys and k.startswith(auroc_keys[0] + "/")}
    finished = "eval/best_acc" in parsed["results"]
    if finished:
        best, best_it = parsed["results"]["eval/best_acc"], parsed["results"].get("eval/best_it")
        best_it = None if best_it is None or math.isnan(best_it) else int(best_it) + 1  # USB logs it - 1
    elif last:
        best, best_it = last["BEST_EVAL_ACC"], last["best_it"]
    else:
        best, best_it = math.nan, None
    return {
        "label": generate.label_of(cfg),
        "algorithm": cfg.get("algorithm", ""),
        "dataset": cfg.get("dataset", ""),
        "num_labels": cfg.get("num_labels", ""),
        "alpha": float(cfg.get("synthetic_ratio", 0.0) or 0.0),
        "seed": cfg.get("seed", ""),
        "best_acc": best,
        "best_it": best_it,
        "final_acc": last.get("eval/top-1-acc", math.nan),
        "final_it": last_it,
        "detector_auroc": last[auroc_keys[0]] if auroc_keys else math.nan,
        "auroc_key": auroc_keys[0] if auroc_keys else "",
        "auroc_by_source": format_by_source(by_source),
        "trusted_it": parsed["trusted_it"],
        **{field: parsed["train"].get(key, math.nan) for field, key in ROUTING_KEYS.items()},
        "iterations": parsed["iterations"],
        "num_train_iter": cfg.get("num_train_iter", ""),
        "finished": finished,
        "wall_time_s": round(parsed["wall_time_s"], 1),
        "save_name": os.path.basename(run_dir),
        "run_dir": run_dir,
    }


def format_by_source(values):
    """``{'ddim': 0.91, 'gan': 0.7}`` as ``ddim=0.9100;gan=0.7000`` (one CSV cell)."""
    return ";".join(f"{k}={v:.4f}" for k, v in values.items() if not math.isnan(v))


def parse_by_source(text):
    """The inverse of :func:`format_by_source`."""
    pairs = (part.split("=", 1) for part in str(text or "").split(";") if "=" in part)
    return {k: _number(v) for k, v in pairs}


def read_result_rows(path):
    """``(columns, rows)`` of a results CSV as text, every column kept (a user's own ones too).

    A row that is not whole is an InputError naming its line, never a
    traceback or a silently misread row: bytes that are not UTF-8 (a
    Latin-1 editor), a NUL byte, or a field count other than the header's
    (a row torn by a crash or a concurrent writer). Blank lines are skipped.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(f"--results {path}: cannot read it ({exc.strerror})") from None
    fix = "repair or delete that line (or restore the file from git)"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError(f"--results {path}: line {line} is not UTF-8 text (byte {raw[exc.start]:#04x}); "
                         f"save the file as UTF-8, or {fix}") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise InputError(f"--results {path}: line {line} holds a NUL byte (a torn write?); {fix}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = next(reader, [])
        if "save_name" not in columns:
            raise InputError(f"--results {path}: no header with a save_name column; give a results CSV the "
                             "runner wrote (or a report's runs.csv)")
        rows = []
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if len(fields) != len(columns):
                raise InputError(f"--results {path}: line {reader.line_num} has {len(fields)} field(s) where the "
                                 f"header has {len(columns)} (a torn row?); {fix}")
            if not fields[columns.index("save_name")].strip():
                raise InputError(f"--results {path}: line {reader.line_num} has no save_name; {fix}")
            rows.append(dict(zip(columns, fields)))
    except csv.Error as exc:
        raise InputError(f"--results {path}: line {reader.line_num} is not CSV ({exc}); {fix}") from None
    return columns, rows


def typed_row(row):
    """A results row (text) typed as :func:`run_record` makes its values."""
    row = dict(row)
    for key in ("best_acc", "final_acc", "detector_auroc", "wall_time_s", "alpha", *ROUTING_KEYS):
        row[key] = _number(row.get(key) or "nan")
    for key in ("num_labels", "seed", "iterations", "num_train_iter", "best_it", "final_it", "trusted_it"):
        row[key] = _int(row.get(key), row.get(key))
    row["finished"] = str(row.get("finished")).strip() == "True"
    return row


def read_results(path):
    """Rows of a results CSV (the runner's, or a runs.csv), typed as :func:`run_record` makes them."""
    return [typed_row(row) for row in read_result_rows(path)[1]]


def csv_cell(value):
    """How a row value is written to a CSV: NaN and None as an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def check_one_run_per_seed(rows):
    """An InputError when two rows are the same setting and seed: averaging them would count one seed twice."""
    seen = {}
    for row in rows:
        key = (row["label"], row["dataset"], str(row["num_labels"]), float(row["alpha"]), str(row["seed"]))
        if key in seen:
            raise InputError(f"runs {seen[key]} and {row['save_name']} are the same setting and seed "
                             f"({row['label']}, {row['dataset']}, {row['num_labels']} labels, alpha "
                             f"{row['alpha']:g}, seed {row['seed']}); tables average seeds, so keep one of them "
                             "(remove the other's folder from --runs or its row from --results)")
        seen[key] = row["save_name"]


def _is_run(folder):
    return any(os.path.isfile(os.path.join(folder, name)) for name in ("log.txt", run_metrics.FILE_NAME))


def find_runs(roots):
    """Run folders (holding ``log.txt`` or ``metrics.jsonl``) directly under each root, or the root itself."""
    found = []
    for root in roots:
        if _is_run(root):
            found.append(root)
            continue
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if _is_run(folder):
                found.append(folder)
    return found


# ---------------------------------------------------------------- aggregation
def _label_order(labels):
    known = [label for label in generate.LABELS if label in labels]
    return known + sorted(set(labels) - set(known))


def _dataset_order(datasets):
    order = [d.name for fam in generate.FAMILIES.values() for d in fam.datasets]
    known = [d for d in order if d in datasets]
    return known + sorted(set(datasets) - set(known))


def mean_std(values):
    """``(mean, sample std, n)`` of the finite values; std is 0 for one value, NaN mean for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def mean_interval(values, level=0.95):
    """``(mean, low, high, n)``: Student's t-interval of the mean of the finite values.

    With fewer than two values the interval is undefined (NaN bounds).
    """
    from scipy import stats as scipy_stats

    values = [v for v in values if v is not None and not math.isnan(v)]
    n = len(values)
    if not n:
        return math.nan, math.nan, math.nan, 0
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def _int(value, default=-1):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def sort_rows(rows):
    """Rows by dataset, labels, alpha, algorithm (table order), seed."""
    datasets = _dataset_order({r["dataset"] for r in rows})
    labels = _label_order({r["label"] for r in rows})
    return sorted(rows, key=lambda r: (datasets.index(r["dataset"]), _int(r["num_labels"]), r["alpha"],
                                       labels.index(r["label"]), _int(r["seed"])))


def aggregate(rows, key, transform):
    """``{(label, dataset, num_labels, alpha): (mean, std, n)}`` of ``transform(row[key])`` over seeds."""
    groups = defaultdict(list)
    for row in rows:
        value = row[key]
        if value is None or (isinstance(value, float) and math.isnan(value)) or _int(row["num_labels"]) < 0:
            continue
        groups[(row["label"], row["dataset"], int(row["num_labels"]), float(row["alpha"]))].append(transform(value))
    return {k: mean_std(v) for k, v in groups.items()}


def metric_transform(metric):
    if metric == "error":
        return lambda acc: 100.0 * (1.0 - acc)
    return lambda acc: 100.0 * acc


def markdown_table(stats, dataset, lower_is_better, digits=2):
    """A markdown table of one dataset: rows = labels, columns = (labels, alpha); best mean in bold."""
    cols = sorted({(k[2], k[3]) for k in stats if k[1] == dataset})
    labels = _label_order({k[0] for k in stats if k[1] == dataset})
    if not cols:
        return ""
    full_n = max(s[2] for k, s in stats.items() if k[1] == dataset)
    best = {}
    for col in cols:
        means = [stats[(lab, dataset) + col][0] for lab in labels if (lab, dataset) + col in stats]
        means = [m for m in means if not math.isnan(m)]
        if means:
            best[col] = min(means) if lower_is_better else max(means)

    def cell(s, col):
        text = f"{s[0]:.{digits}f}" + (f" ± {s[1]:.{digits}f}" if s[2] > 1 else "")
        if round(s[0], digits) == round(best[col], digits):
            text = f"**{text}**"
        return text + (f" (n={s[2]})" if s[2] != full_n else "")

    return _grid(stats, dataset, cols, labels, cell)


def _grid(stats, dataset, cols, labels, cell):
    """Markdown rows = labels, columns = (labels, alpha); ``cell(stat, col)`` writes a filled cell, "–" an empty one."""
    lines = ["| algorithm | " + " | ".join(f"{n} labels, α={generate.alpha_tag(a)}" for n, a in cols) + " |",
             "|" + " --- |" * (len(cols) + 1)]
    for lab in labels:
        cells = []
        for col in cols:
            s = stats.get((lab, dataset) + col)
            cells.append("–" if s is None or math.isnan(s[0]) else cell(s, col))
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _paired(rows, key, transform, partner, summary=mean_std):
    """``{(label, dataset, num_labels, alpha): summary(differences)}`` of run minus its partner run, over seeds.

    ``partner(label, dataset, num_labels, alpha, seed)`` names the run a run is
    compared with (the same tuple layout), or None for runs left out.
    """
    values = {}
    for row in rows:
        value = row[key]
        if value is None or (isinstance(value, float) and math.isnan(value)) or _int(row["num_labels"]) < 0:
            continue
        values[(row["label"], row["dataset"], int(row["num_labels"]), float(row["alpha"]), _int(row["seed"]))] = \
            transform(value)
    groups = defaultdict(list)
    for run, value in values.items():
        other = partner(*run)
        if other is not None and other in values:
            groups[run[:4]].append(value - values[other])
    return {k: summary(v) for k, v in groups.items()}


def paired_differences(rows, key, transform, reference="fixmatch", summary=mean_interval):
    """Each method minus ``reference`` at the same seed, label count and alpha (the same labeled split).

    The split's large seed-to-seed effect cancels; labels without a partner run
    are left out. Summarised by ``summary`` (default: mean and 95% t-interval).
    """
    return _paired(rows, key, transform,
                   lambda label, dataset, n, alpha, seed: None if label == reference
                   else (reference, dataset, n, alpha, seed), summary)


def contamination_effects(rows, key, transform, summary=mean_interval):
    """Each method at alpha > 0 minus the same method at alpha 0, same seed and label count.

    What contamination does to a method, with the labeled split's effect cancelled.
    """
    return _paired(rows, key, transform,
                   lambda label, dataset, n, alpha, seed: None if alpha == 0 else (label, dataset, n, 0.0, seed),
                   summary)


def resolved(interval):
    """True when a ``(mean, low, high, n)`` t-interval excludes 0."""
    _, low, high, _ = interval
    return not (math.isnan(low) or math.isnan(high)) and (low > 0 or high < 0)


def interval_table(stats, dataset, digits=2):
    """A markdown table of paired differences: ``mean [low, high]`` per cell, ``*`` where the interval excludes 0."""
    cols = sorted({(k[2], k[3]) for k in stats if k[1] == dataset})
    labels = _label_order({k[0] for k in stats if k[1] == dataset})
    if not cols:
        return ""

    def cell(s, col):
        mean, low, high, n = s
        text = f"{mean:+.{digits}f}"
        if n > 1:
            text += f" [{low:+.{digits}f}, {high:+.{digits}f}]" + ("*" if resolved(s) else "")
        return text + f" (n={n})"

    return _grid(stats, dataset, cols, labels, cell)


def source_auroc_stats(rows):
    """``{source: {(label, dataset, num_labels, alpha): (mean, std, n)}}`` of the per-source AUROCs."""
    names = sorted({name for row in rows for name in parse_by_source(row.get("auroc_by_source"))})
    out = {}
    for name in names:
        per_run = [dict(row, _auroc=parse_by_source(row.get("auroc_by_source")).get(name, math.nan)) for row in rows]
        out[name] = aggregate(per_run, "_auroc", lambda v: v)
    return out


def routing_table(rows, dataset):
    """RSMatch's routing at the last logged step, per label and (labels, alpha): a markdown table or "".

    A cell: how many runs ended their bootstrap (trusted) out of how many, then
    the means over runs of the share of the unlabeled batch judged synthetic
    (routed to the dummy head once trusted, before that routed nowhere), the
    routing threshold (raised by the calibration floor) and the size of the
    least-filled class sub-queue (with the default ``queue_gate_share`` of 1 the
    bootstrap ends when it reaches ``queue_min_fill``).
    """
    groups = defaultdict(list)
    for row in rows:
        if row["dataset"] == dataset and not _isnan(row.get("routing_threshold")) and _int(row["num_labels"]) >= 0:
            groups[(row["label"], int(row["num_labels"]), float(row["alpha"]))].append(row)
    if not groups:
        return ""
    cols = sorted({k[1:] for k in groups})
    labels = _label_order({k[0] for k in groups})
    lines = ["| algorithm | " + " | ".join(f"{n} labels, α={generate.alpha_tag(a)}" for n, a in cols) + " |",
             "|" + " --- |" * (len(cols) + 1)]
    for lab in labels:
        cells = []
        for col in cols:
            runs = groups.get((lab,) + col)
            if not runs:
                cells.append("–")
                continue
            trusted = sum(_int(r.get("trusted_it")) >= 0 for r in runs)
            mean = lambda key: statistics.fmean(float(r[key]) for r in runs)  # noqa: E731
            cells.append(f"trusted {trusted}/{len(runs)}; judged synthetic {mean('judged_share'):.2f}; "
                         f"threshold {mean('routing_threshold'):.3f}; min fill {mean('queue_fill_min'):.1f}")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _isnan(value):
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def write_csv(rows, path):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(row.get(k, "")) for k in CSV_FIELDS})


def write_markdown(rows, path, metric, excluded, unidentified=0):
    lower = metric == "error"
    what = "error rate (%), lower is better" if lower else "top-1 accuracy (%), higher is better"
    transform = metric_transform(metric)
    best = aggregate(rows, "best_acc", transform)
    final = aggregate(rows, "final_acc", transform)
    auroc = aggregate(rows, "detector_auroc", lambda v: v)
    parts = ["# RS-SSL benchmark results", "",
             f"Cells: {what}, mean ± sample std over seeds (n shown when a cell has fewer seeds than the "
             "table's fullest cell); α = synthetic / real unlabeled images. Best mean per column in bold.",
             "",
             "- **best**: USB's `eval/best_acc`, the best evaluation during training (a checkpoint chosen on "
             "the eval split, as USB reports);",
             "- **final**: the last logged evaluation (the end of training), free of that selection.", ""]
    if excluded:
        parts += [f"{excluded} unfinished run(s) left out (see runs.csv; `--include-unfinished` keeps them).", ""]
    if unidentified:
        parts += [f"{unidentified} run(s) left out whose log does not say their dataset and label count (a log "
                  "cut before its `Arguments:` line, with a save_name the generator did not make; see runs.csv).", ""]
    for dataset in _dataset_order({r["dataset"] for r in rows}):
        name = DATASET_NAMES.get(dataset, dataset)
        for title, stats in (("best", best), ("final", final)):
            table = markdown_table(stats, dataset, lower)
            if table:
                parts += [f"## {name}: {title} {'error' if lower else 'accuracy'}", "", table, ""]
        for title, key in (("final", "final_acc"), ("best", "best_acc")):
            table = interval_table(paired_differences(rows, key, transform), dataset)
            if table:
                parts += [f"## {name}: {title} {'error' if lower else 'accuracy'}, paired difference to FixMatch",
                          "", table, "", "Cells: mean over seeds of (method − FixMatch) in points, each difference "
                          "taken at the same seed, label count and alpha (the same labeled split, so its "
                          "seed-to-seed effect cancels), with its 95% Student-t interval over seeds; `*` marks "
                          "a difference whose interval excludes 0 (resolved at this n).", ""]
        table = interval_table(contamination_effects(rows, "final_acc", transform), dataset)
        if table:
            parts += [f"## {name}: final {'error' if lower else 'accuracy'}, contamination effect (α − α=0)",
                      "", table, "", "Cells: mean over seeds of (the method at α − the same method at α=0) in "
                      "points, at the same seed and label count, with its 95% t-interval; `*`: the interval "
                      "excludes 0. Negative accuracy differences mean contamination hurt.", ""]
        table = markdown_table({k: v for k, v in auroc.items()}, dataset, lower_is_better=False, digits=3)
        if table:
            parts += [f"## {name}: detector AUROC (synthetic vs real unlabeled, last evaluation)", "", table, ""]
        table = routing_table(rows, dataset)
        if table:
            parts += [f"## {name}: RSMatch routing at the last logged step", "", table, "",
                      "Cells: runs whose detector was trusted (bootstrap ended: `queue_gate_share` of the class "
                      "sub-queues, by default every one, held `queue_min_fill` images) out of the runs; then means "
                      "over runs of the share of the "
                      "unlabeled batch judged synthetic (routed to the dummy head only once trusted), the "
                      "routing threshold (`detector_threshold` raised by the calibration floor) and the "
                      "least-filled class sub-queue's size.", ""]
        for source, stats in source_auroc_stats(rows).items():
            table = markdown_table(stats, dataset, lower_is_better=False, digits=3)
            if table:
                parts += [f"## {name}: detector AUROC, source {source} vs real", "", table, ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def write_plot(rows, path, metric):
    """Accuracy (or error) against alpha: one column per (dataset, labels), rows best / final."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transform = metric_transform(metric)
    stats = {"best": aggregate(rows, "best_acc", transform), "final": aggregate(rows, "final_acc", transform)}
    settings = sorted({(r["dataset"], int(r["num_labels"])) for r in rows},
                      key=lambda s: (_dataset_order({r["dataset"] for r in rows}).index(s[0]), s[1]))
    labels = _label_order({r["label"] for r in rows})
    cols = max(1, len(settings))
    width = 3.6 * cols + 2.3  # 2.3 inches on the right for the legend
    fig, axes = plt.subplots(2, cols, figsize=(width, 6.4), squeeze=False, sharex=True)
    cmap = plt.get_cmap("tab20")
    for c, (dataset, num_labels) in enumerate(settings):
        for r, which in enumerate(("best", "final")):
            ax = axes[r][c]
            for i, label in enumerate(labels):
                points = sorted((k[3], v) for k, v in stats[which].items()
                                if k[0] == label and k[1] == dataset and k[2] == num_labels and not math.isnan(v[0]))
                if not points:
                    continue
                xs = [p[0] for p in points]
                ax.errorbar(xs, [p[1][0] for p in points], yerr=[p[1][1] for p in points], label=label,
                            color="black" if label == "rsmatch" else cmap(i % 20), linestyle="-" if label.startswith("rsmatch") else "--",
                            linewidth=2.2 if label == "rsmatch" else 1.2, marker="o", markersize=3, capsize=2)
            ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}, {num_labels} labels", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{which} {'error' if metric == 'error' else 'accuracy'} (%)")
            if r == 1:
                ax.set_xlabel("alpha (synthetic / real unlabeled)")
            alphas = sorted({r["alpha"] for r in rows if r["dataset"] == dataset})
            ax.set_xticks(alphas)
            ax.set_xticklabels([generate.alpha_tag(a) for a in alphas])
            ax.grid(alpha=0.3)
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    right = 1 - 2.3 / width
    fig.tight_layout(rect=(0, 0, right, 1))
    if handles:
        fig.legend(handles, names, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog=command_name("rsmatch-bench-report", "benchmark_configs.report"),
                                description="CSV, markdown tables and an accuracy-vs-alpha plot from USB runs (metrics.jsonl or log.txt).")
    p.add_argument("--runs", nargs="+", default=[],
                   help="save_dir folder(s) holding run folders (save_name/metrics.jsonl or log.txt), "
                        "or run folders")
    p.add_argument("--results", nargs="+", default=[],
                   help="results CSV file(s) the runner records (e.g. docs/results/fashion/results.csv); "
                        "a run also found under --runs is taken from its run folder")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--metric", choices=("accuracy", "error"), default="accuracy",
                   help="report top-1 accuracy (default) or error rate, in percent")
    p.add_argument("--include-unfinished", action="store_true",
                   help="aggregate unfinished runs too (their best/last evaluation so far)")
    args = p.parse_args(argv)
    try:
        if not args.runs and not args.results:
            raise InputError("give --runs DIR and/or --results FILE")
        for root in args.runs:
            if not os.path.isdir(root):
                raise InputError(f"--runs {root} is not a folder")
        folders = find_runs(args.runs)
        if args.runs and not folders:
            raise InputError(f"no runs (folders with log.txt or metrics.jsonl) under {', '.join(args.runs)}")
        recorded = [row for path in args.results for row in read_results(path)]
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise InputError(f"--out {args.out} exists and is not a folder")
        from_logs = [run_record(f) for f in folders]
        seen = {r["save_name"] for r in from_logs}
        rows = sort_rows(from_logs + [r for r in recorded if r["save_name"] not in seen])
        kept = rows if args.include_unfinished else [r for r in rows if r["finished"]]
        # Without its dataset and label count a run belongs to no table cell.
        identified = [r for r in kept if r["dataset"] and _int(r["num_labels"]) >= 0]
        check_one_run_per_seed(identified)
    except UserError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    os.makedirs(args.out, exist_ok=True)

    write_csv(rows, os.path.join(args.out, "runs.csv"))
    write_markdown(identified, os.path.join(args.out, "tables.md"), args.metric, len(rows) - len(kept),
                   len(kept) - len(identified))
    if identified:
        write_plot(identified, os.path.join(args.out, "acc_vs_alpha.png"), args.metric)
    print(f"{len(rows)} run(s), {sum(r['finished'] for r in rows)} finished; wrote "
          f"{os.path.join(args.out, 'runs.csv')}, tables.md" + (", acc_vs_alpha.png" if identified else
                                                                 " (no finished runs: no plot)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
