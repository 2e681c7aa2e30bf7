"""Benchmark tooling: the config generator and its committed output, the grid runner, the report.

No training happens here: the runner's subprocess launch is replaced, and the
report reads small log files written by the tests in USB's log format.
"""
import glob
import io
import itertools
import math
import os
import statistics
from datetime import datetime, timedelta

import pytest
import torch

from conftest import REPO, USB_ALGORITHMS
from benchmark_configs import generate, report, run

PLUGIN_LABELS = {"openmatch", "iomatch", "rsmatch", "rsmatch_filter", "rsmatch_noqueue", "rsmatch_oracle",
                 "rsmatch_filter_oracle"}
PAPER_SETTINGS = {("cifar10", 40), ("cifar10", 250), ("cifar10", 4000), ("cifar100", 400), ("cifar100", 2500),
                  ("tiny_imagenet", 800), ("tiny_imagenet", 5000), ("imagenet", 13000)}


# ------------------------------------------------------------------ generator
def _alphas(label):
    """The oracle diagnostics run on contaminated data only."""
    return (0.5, 1.0) if label.endswith("_oracle") else (0.0, 0.5, 1.0)


def test_grid_is_complete():
    labels = set(USB_ALGORITHMS) | PLUGIN_LABELS
    assert set(generate.LABELS) == labels
    expected_paper = {(lab, ds, n, a, s) for lab in labels for ds, n in PAPER_SETTINGS
                      for a in _alphas(lab) for s in (0, 1, 2)}
    paper = generate.family_specs("paper")
    assert {(x.label, x.dataset, x.num_labels, x.alpha, x.seed) for x in paper} == expected_paper
    assert len(paper) == len(expected_paper)
    embedded = generate.family_specs("embedded")
    assert {(x.label, x.dataset, x.num_labels, x.alpha, x.seed) for x in embedded} == {
        (lab, "digits", 40, a, s) for lab in labels for a in _alphas(lab) for s in (0, 1, 2)}
    fashion = generate.family_specs("fashion")
    assert {(x.label, x.dataset, x.num_labels, x.alpha, x.seed) for x in fashion} == {
        (lab, "fashion_mnist", 40, a, s) for lab in ("supervised", "fixmatch", "flexmatch", "freematch", "softmatch",
                                                     "openmatch", "iomatch", "rsmatch", "rsmatch_filter",
                                                     "rs_softmatch", "rs_freematch", "rsmatch_oracle",
                                                     "rsmatch_filter_oracle")
        for a in _alphas(lab) for s in range(5)}
    assert len(fashion) == 185 and len(generate.select("fashion")) == 185
    # The RS study: six methods at alpha 1 and two at alpha 0, five seeds each.
    study = {(x.label, x.alpha) for x in generate.select("fashion_study")}
    assert study == {(lab, 1.0) for lab in ("fixmatch", "rsmatch", "rsmatch_oracle", "rsmatch_filter", "softmatch",
                                            "rs_softmatch")} | {("fixmatch", 0.0), ("rsmatch", 0.0)}
    assert len(generate.select("fashion_study")) == 40
    names = [(x.config["save_dir"], x.config["save_name"]) for x in paper + embedded + fashion]
    assert len(set(names)) == len(names)


def test_fashion_grid_keys():
    """The fashion grid: the digits grid's CPU net at Fashion-MNIST's native 28x28, 10k real unlabeled, three
    mixed generators; RSMatch's settings are the digits grid's (chosen on digits and the validation split)."""
    specs = {(s.label, s.alpha, s.seed): s.config for s in generate.family_specs("fashion")}
    digits = {(s.label, s.alpha, s.seed): s.config for s in generate.family_specs("embedded")}
    for (label, alpha, seed), cfg in specs.items():
        assert (cfg["net"], cfg["img_size"], cfg["ulb_num_labels"], cfg["num_labels"]) == ("resnet_tiny", 28, 10000, 40)
        assert cfg["synthetic_source"] == list(generate.FASHION_SOURCES) and len(cfg["synthetic_source"]) == 3
        assert "eval_split" not in cfg  # the benchmark evaluates on the test split (the default)
        assert cfg["num_train_iter"] == generate.FASHION_ITERATIONS and cfg["save_dir"] == "./saved_models/fashion_grid"
        if label.startswith("rsmatch"):
            # The digits grid runs three seeds and the fashion grid five: compare with seed 0's settings.
            # The digits grid pins the detector input its committed results were run with.
            assert cfg["detector_input"] == generate.RSMATCH_DEFAULTS["detector_input"] == "rgb+npr"
            assert digits[(label, alpha, 0)]["detector_input"] == "rgb"
            same = {k: v for k, v in digits[(label, alpha, 0)].items()
                    if k not in ("detector_input", "seed", "save_dir", "save_name", "load_path", "num_train_iter", "num_eval_iter",
                                 "num_log_iter", "img_size", "dataset", "synthetic_source")}
            assert {k: cfg[k] for k in same} == same
    assert specs[("rsmatch_filter", 1.0, 0)]["use_dummy_head"] is False
    # The oracle diagnostics: RSMatch's settings, routing by the ground truth (and the filter's likewise).
    assert specs[("rsmatch_oracle", 1.0, 0)]["detector_oracle"] is True
    assert "detector_oracle" not in specs[("rsmatch", 1.0, 0)]
    oracle_filter = specs[("rsmatch_filter_oracle", 0.5, 0)]
    assert oracle_filter["detector_oracle"] is True and oracle_filter["use_dummy_head"] is False
    # RS-SoftMatch: SoftMatch's own keys, RSMatch's settings (the digits grid's).
    rs_soft, soft, rs = (specs[(label, 1.0, 0)] for label in ("rs_softmatch", "softmatch", "rsmatch"))
    assert (rs_soft["algorithm"], rs_soft["base_algorithm"]) == ("rsmatch", "softmatch")
    assert all(rs_soft[k] == soft[k] for k in ("hard_label", "T", "dist_align", "dist_uniform", "per_class", "ema_p",
                                               "n_sigma", "uratio", "ulb_loss_ratio"))
    assert all(rs_soft[k] == rs[k] for k in ("detector_width", "queue_size", "queue_min_fill", "use_detector",
                                             "use_dummy_head", "use_queue"))
    # RS-FreeMatch likewise, with FreeMatch's keys.
    rs_free, free = specs[("rs_freematch", 1.0, 0)], specs[("freematch", 1.0, 0)]
    assert (rs_free["algorithm"], rs_free["base_algorithm"]) == ("rsmatch", "freematch")
    assert all(rs_free[k] == free[k] for k in ("hard_label", "T", "ema_p", "ent_loss_ratio", "uratio"))
    assert rs_free.get("ulb_loss_ratio", 1.0) == free.get("ulb_loss_ratio", 1.0)  # the train command's default: 1.0
    assert all(rs_free[k] == rs[k] for k in ("detector_width", "queue_size", "queue_min_fill", "use_detector",
                                             "use_dummy_head", "use_queue"))
    assert specs[("openmatch", 1.0, 0)]["start_fix"] == generate.FASHION_ITERATIONS // 5
    assert generate.FAMILIES["fashion"].results == "docs/results/fashion/results.csv"


def test_named_grids():
    main = generate.select("embedded")
    assert {x.label for x in main} == {"supervised", "fixmatch", "flexmatch", "freematch", "softmatch",
                                       "rsmatch", "rsmatch_filter", "rsmatch_oracle", "rsmatch_filter_oracle"}
    assert len(main) == 7 * 3 * 3 + 2 * 2 * 3  # the oracle rows at alpha 0.5 and 1
    robust = generate.select("embedded_robust")
    assert {(x.label, x.alpha) for x in robust} == {(lab, a) for lab in ("openmatch", "iomatch") for a in (0.0, 1.0)}
    assert len(robust) == 2 * 2 * 3
    assert len(generate.select("embedded_full")) == len(generate.family_specs("embedded"))


def test_generated_keys():
    for spec in generate.all_specs():
        cfg = spec.config
        assert cfg["save_name"] == generate.save_name(spec.label, spec.dataset, spec.num_labels, spec.alpha, spec.seed)
        assert cfg["resume"] is True
        assert cfg["load_path"] == f"{cfg['save_dir']}/{cfg['save_name']}/latest_model.pth"
        assert cfg["synthetic_ratio"] == spec.alpha and cfg["seed"] == spec.seed
        assert cfg["benchmark_label"] == spec.label == generate.label_of(dict(cfg, benchmark_label=None))
        # The final evaluation must be a logged one (the report's final accuracy).
        assert cfg["num_train_iter"] % cfg["num_eval_iter"] == 0
        assert cfg["num_train_iter"] % cfg["epoch"] == 0
        if spec.family == "paper":
            assert (cfg["num_train_iter"], cfg["batch_size"], cfg["lr"], cfg["ema_m"]) == (2 ** 20, 64, 0.03, 0.999)
            assert cfg["weight_decay"] == {"cifar10": 5e-4, "cifar100": 1e-3, "tiny_imagenet": 1e-3,
                                           "imagenet": 3e-4}[spec.dataset]
            assert cfg["synthetic_source"] == {"cifar10": "./data/synthetic/cifar10_sd14",
                                               "cifar100": "./data/synthetic/cifar100_sd14",
                                               "tiny_imagenet": "./data/synthetic/tiny_imagenet_sd14",
                                               "imagenet": "./data/synthetic/imagenet100_sd14"}[spec.dataset]
        elif spec.family == "embedded":
            assert (cfg["net"], cfg["img_size"], cfg["synthetic_source"], cfg["num_workers"]) == \
                ("resnet_tiny", 16, "bundled", 0)
    by_label = {s.label: s.config for s in generate.family_specs("paper") if s.dataset == "cifar10"}
    assert by_label["rsmatch_filter"]["algorithm"] == "rsmatch" and by_label["rsmatch_filter"]["use_dummy_head"] is False
    assert by_label["rsmatch_noqueue"]["algorithm"] == "rsmatch" and by_label["rsmatch_noqueue"]["use_queue"] is False
    assert by_label["rsmatch"]["use_dummy_head"] is True and by_label["rsmatch"]["use_queue"] is True
    assert by_label["fixmatch"]["uratio"] == 7 and by_label["fixmatch"]["p_cutoff"] == 0.95


def test_embedded_rsmatch_matches_the_demo_config():
    """The embedded grid's RSMatch settings are those of the RSMatch demo config, where it exists."""
    from semilearn.core.utils import ALGORITHMS

    from rsmatch_usb.config import load_yaml

    demo_path = os.path.join(REPO, "benchmark_configs", "embedded", "rsmatch_digits.yaml")
    if not os.path.isfile(demo_path):
        pytest.skip("no RSMatch demo config")
    demo = load_yaml(demo_path)
    spec = [s for s in generate.select("embedded") if s.label == "rsmatch"][0]
    defaults = {a.name.lstrip("-"): a.default for a in ALGORITHMS["rsmatch"].get_argument()}
    effective = {k: spec.config.get(k, v) for k, v in defaults.items()}
    differ = {k: (demo[k], effective[k]) for k in defaults if k in demo and demo[k] != effective[k]}
    assert not differ, f"demo vs grid: {differ}"


def test_class_list_is_imagenet100():
    from data_tools.folders import read_class_list

    path = os.path.join(REPO, "benchmark_configs", "paper", "imagenet100_classes.txt")
    ids = read_class_list(path)
    assert len(ids) == 100 and ids[0] == "n02869837" and ids[-1] == "n02090622"


def test_committed_configs_are_current():
    assert generate.stale_files() == [], "run python -m benchmark_configs.generate and commit the result"


def test_plugin_algorithms_are_registered():
    from semilearn.core.utils import ALGORITHMS

    import rsmatch_usb  # noqa: F401

    # Every algorithm of semilearn's registry and of the plugin has configs, and nothing else.
    assert set(ALGORITHMS.keys()) == set(generate.USB_ALGORITHMS) | set(generate.PLUGIN_ALGORITHMS)


@pytest.mark.slow
def test_every_config_loads_through_the_train_parser():
    from semilearn.core.utils import ALGORITHMS

    from rsmatch_usb.config import base_parser, get_config, load_yaml

    known = {a.dest for a in base_parser()._actions}
    files = sorted(glob.glob(os.path.join(REPO, "benchmark_configs", "paper", "*", "*.yaml"))
                   + glob.glob(os.path.join(REPO, "benchmark_configs", "embedded", "grid", "*", "*.yaml"))
                   + glob.glob(os.path.join(REPO, "benchmark_configs", "fashion", "grid", "*", "*.yaml")))
    assert len(files) == len(generate.all_specs())
    problems = []
    for path in files:
        values = load_yaml(path)
        args = get_config(["--c", path])
        own = {a.name.lstrip("-") for a in ALGORITHMS[values["algorithm"]].get_argument()}
        unknown = set(values) - known - own - {"benchmark_label"}
        if unknown:
            problems.append(f"{path}: keys no parser reads: {sorted(unknown)}")
        changed = [k for k, v in values.items() if getattr(args, k) != v]
        if changed:
            problems.append(f"{path}: parsed values differ for {changed}")
    assert not problems, "\n".join(problems[:10])


def test_generate_check_cli(capsys):
    assert generate.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


# ---------------------------------------------------------------- fake runs
T0 = datetime(2024, 1, 1, 12, 0, 0)


def _line(ts, text, level="INFO"):
    return f"[{ts.strftime('%Y-%m-%d %H:%M:%S')},{ts.microsecond // 1000:03d} {level}] {text}\n"


def write_log(run_dir, args, evals, result=None, start=T0, step=timedelta(seconds=10), append=False):
    """A log.txt as rsmatch-train writes it. ``evals``: (iteration, acc, extra eval dict)."""
    os.makedirs(run_dir, exist_ok=True)
    ts = start
    lines = [_line(ts, "Use device: cpu (gpu None) for training"),
             _line(ts, "Arguments: Namespace(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")")]
    best, best_it = -1.0, 0
    for it, acc, extra in evals:
        ts += step
        lines.append(_line(ts, f"{it - 1} iteration USE_EMA: True, train/sup_loss: 0.5000, lr: 0.0300 "))
        if acc > best:
            best, best_it = acc, it
        body = ", ".join(f"{k}: {v:.4f}" for k, v in {"train/sup_loss": 0.4, "eval/loss": 1.0,
                                                      "eval/top-1-acc": acc, **extra}.items())
        lines.append(_line(ts, "validating..."))
        lines.append(_line(ts, f"{it} iteration, USE_EMA: True, {body} BEST_EVAL_ACC: {best:.4f}, at {best_it} iters"))
    if result is not None:
        lines.append(_line(ts, f"Model result - eval/best_acc : {result}"))
        lines.append(_line(ts, f"Model result - eval/best_it : {best_it - 1}"))
    with open(os.path.join(run_dir, "log.txt"), "a" if append else "w") as f:
        f.writelines(lines)
    return ts


def run_args(label, alpha, seed, dataset="digits", num_labels=40, **extra):
    algorithm, switches = generate.VARIANTS.get(label, (label, {}))
    args = dict(algorithm=algorithm, dataset=dataset, num_labels=num_labels, synthetic_ratio=alpha, seed=seed,
                num_train_iter=300, save_name=generate.save_name(label, dataset, num_labels, alpha, seed))
    args.update(switches)
    args.update(extra)
    return args


ACC = {  # (label, alpha) -> final accuracy per seed; best = final + 0.01
    ("fixmatch", 0.0): [0.80, 0.82, 0.84],
    ("fixmatch", 1.0): [0.60, 0.66, 0.63],
    ("rsmatch_filter", 0.0): [0.79, 0.81, 0.83],
    ("rsmatch_filter", 1.0): [0.70, 0.72, 0.74],
}


@pytest.fixture
def fake_runs(tmp_path):
    root = tmp_path / "runs"
    for (label, alpha), accs in ACC.items():
        for seed, acc in enumerate(accs):
            # rsmatch_filter runs carry no benchmark_label: the report derives it from use_dummy_head.
            args = run_args(label, alpha, seed)
            extra = {"eval/detector_auroc": 0.9 + seed / 100, "eval/detector_auroc/ddim": 0.95 + seed / 100,
                     "eval/detector_auroc/gan": 0.8} if label.startswith("rsmatch") and alpha > 0 else {}
            write_log(str(root / args["save_name"]), args,
                      [(100, acc + 0.01, extra), (200, acc - 0.05, extra), (300, acc, extra)], result=acc + 0.01)
    # An unfinished run: listed, not aggregated.
    args = run_args("fixmatch", 0.5, 0, benchmark_label="fixmatch")
    write_log(str(root / args["save_name"]), args, [(100, 0.1, {})])
    # A run interrupted after 200 iterations and resumed from its 200-iteration checkpoint 1 hour later.
    args = run_args("rsmatch", 1.0, 0, benchmark_label="rsmatch")
    folder = str(root / args["save_name"])
    end = write_log(folder, args, [(100, 0.5, {}), (200, 0.6, {"eval/detector_auroc": 0.7})])
    write_log(folder, args, [(300, 0.55, {"eval/detector_auroc": 0.8})], result=0.6,
              start=end + timedelta(hours=1), append=True)
    return root


def _csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_rows(fake_runs, tmp_path):
    out = tmp_path / "report"
    assert report.main(["--runs", str(fake_runs), "--out", str(out)]) == 0
    rows = {r["save_name"]: r for r in _csv_rows(out / "runs.csv")}
    assert len(rows) == 12 + 2
    r = rows["rsmatch_filter_digits_40_alpha1_2"]
    assert (r["label"], r["algorithm"], r["dataset"], r["num_labels"], r["alpha"], r["seed"]) == \
        ("rsmatch_filter", "rsmatch", "digits", "40", "1.0", "2")
    assert float(r["best_acc"]) == pytest.approx(0.75) and float(r["final_acc"]) == pytest.approx(0.74)
    assert (r["final_it"], r["best_it"], r["iterations"], r["finished"]) == ("300", "100", "300", "True")
    assert float(r["detector_auroc"]) == pytest.approx(0.92) and r["auroc_key"] == "eval/detector_auroc"
    assert r["auroc_by_source"] == "ddim=0.9700;gan=0.8000"
    assert float(r["wall_time_s"]) == 30.0
    assert rows["fixmatch_digits_40_alpha0_0"]["detector_auroc"] == ""
    unfinished = rows["fixmatch_digits_40_alpha0.5_0"]
    assert unfinished["finished"] == "False" and float(unfinished["best_acc"]) == pytest.approx(0.1)
    resumed = rows["rsmatch_digits_40_alpha1_0"]
    # Wall time leaves out the hour between interruption and resume; the resume's evaluation is the final one.
    assert float(resumed["wall_time_s"]) == 30.0
    assert float(resumed["final_acc"]) == pytest.approx(0.55) and float(resumed["detector_auroc"]) == pytest.approx(0.8)
    assert float(resumed["best_acc"]) == pytest.approx(0.6)
    assert (out / "acc_vs_alpha.png").stat().st_size > 1000


def _cell(mean, std):
    return f"{mean:.2f} ± {std:.2f}"


def _table(md, title):
    block = md.split(f"## {title}\n\n", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()
    return lines[0], {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}


def test_report_tables(fake_runs, tmp_path):
    out = tmp_path / "report"
    report.main(["--runs", str(fake_runs), "--out", str(out)])
    md = (out / "tables.md").read_text()
    assert "1 unfinished run(s) left out" in md
    header, best = _table(md, "digits (embedded): best accuracy")
    assert header == "| algorithm | 40 labels, α=0 | 40 labels, α=1 |"
    _, final = _table(md, "digits (embedded): final accuracy")
    for (label, alpha), accs in ACC.items():
        final_cell = _cell(100 * statistics.fmean(accs), 100 * statistics.stdev(accs))
        best_cell = _cell(100 * statistics.fmean(accs) + 1, 100 * statistics.stdev(accs))
        assert final_cell in final[label] and best_cell in best[label]
    # Bold: the best mean of each column (fixmatch at alpha 0, rsmatch_filter at alpha 1).
    assert final["fixmatch"].split(" | ")[1] == "**82.00 ± 2.00**"
    assert final["rsmatch_filter"].split(" | ")[1] == "81.00 ± 2.00"
    assert final["rsmatch_filter"].split(" | ")[2].startswith("**72.00 ± 2.00**")
    # The single resumed rsmatch run: one seed, no std, its n shown.
    assert final["rsmatch"].split(" | ")[1] == "–" and "55.00 (n=1)" in final["rsmatch"]
    _, auroc = _table(md, "digits (embedded): detector AUROC (synthetic vs real unlabeled, last evaluation)")
    assert "0.910 ± 0.010" in auroc["rsmatch_filter"]
    assert list(final) == ["fixmatch", "rsmatch_filter", "rsmatch"]  # the generator's row order
    _, ddim = _table(md, "digits (embedded): detector AUROC, source ddim vs real")
    assert "0.960 ± 0.010" in ddim["rsmatch_filter"]
    _, gan = _table(md, "digits (embedded): detector AUROC, source gan vs real")
    assert "0.800 ± 0.000" in gan["rsmatch_filter"]
    # Paired differences: rsmatch_filter minus fixmatch at the same seed (final: -1, -1, -1 at alpha 0;
    # +10, +6, +11 at alpha 1), so the seed spread of each method (2 points) cancels; 95% t-intervals
    # (t = 4.303 at 2 degrees of freedom; half-width 4.303 * sqrt(7) / sqrt(3) = 6.57 at alpha 1).
    header, paired = _table(md, "digits (embedded): final accuracy, paired difference to FixMatch")
    assert header == "| algorithm | 40 labels, α=0 | 40 labels, α=1 |"
    assert paired["rsmatch_filter"] == ("| rsmatch_filter | -1.00 [-1.00, -1.00]* (n=3) "
                                        "| +9.00 [+2.43, +15.57]* (n=3) |")
    assert "fixmatch" not in paired
    # The resumed rsmatch run (seed 0, alpha 1) pairs with fixmatch seed 0: 55 - 60; one seed, no interval.
    assert paired["rsmatch"].endswith("| -5.00 (n=1) |")
    _, paired_best = _table(md, "digits (embedded): best accuracy, paired difference to FixMatch")
    assert paired_best["rsmatch_filter"].split(" | ")[1] == "-1.00 [-1.00, -1.00]* (n=3)"
    # Contamination effect: each method at alpha 1 minus itself at alpha 0, same seed (fixmatch: -20, -16,
    # -21; rsmatch_filter: -9 each); the rsmatch run has no alpha-0 partner and is left out.
    header, effect = _table(md, "digits (embedded): final accuracy, contamination effect (α − α=0)")
    assert header == "| algorithm | 40 labels, α=1 |"
    assert effect["fixmatch"] == "| fixmatch | -19.00 [-25.57, -12.43]* (n=3) |"
    assert effect["rsmatch_filter"] == "| rsmatch_filter | -9.00 [-9.00, -9.00]* (n=3) |"
    assert "rsmatch" not in effect


def test_paired_table_gives_t_intervals_and_marks_only_resolved_differences(tmp_path):
    """A crafted runs.csv: five seeds, differences to FixMatch known by hand."""
    import csv

    fix = [0.70, 0.72, 0.74, 0.76, 0.78]
    diffs = {"rsmatch": [1, 2, 0, 1, 1], "rsmatch_filter": [1, -1, 2, -2, 0]}  # points
    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=report.CSV_FIELDS)
        writer.writeheader()
        for label, accs in [("fixmatch", fix)] + [(k, [a + d / 100 for a, d in zip(fix, v)]) for k, v in diffs.items()]:
            for seed, acc in enumerate(accs):
                writer.writerow({"label": label, "algorithm": label.split("_")[0], "dataset": "fashion_mnist",
                                 "num_labels": 40, "alpha": 1.0, "seed": seed, "best_acc": acc, "final_acc": acc,
                                 "finished": True, "save_name": f"{label}_fashion_mnist_40_alpha1_{seed}"})
    out = tmp_path / "report"
    assert report.main(["--results", str(path), "--out", str(out)]) == 0
    _, paired = _table((out / "tables.md").read_text(), "Fashion-MNIST: final accuracy, paired difference to FixMatch")
    # rsmatch: mean 1, sd sqrt(0.5), t(0.975, 4) = 2.776: half-width 0.878, the interval excludes 0.
    assert paired["rsmatch"] == "| rsmatch | +1.00 [+0.12, +1.88]* (n=5) |"
    # rsmatch_filter: mean 0, sd sqrt(2.5): half-width 1.963, not resolved (no mark).
    assert paired["rsmatch_filter"] == "| rsmatch_filter | +0.00 [-1.96, +1.96] (n=5) |"
    assert report.resolved(report.mean_interval([1, 2, 0, 1, 1])) and not report.resolved(report.mean_interval([3]))


@pytest.mark.parametrize("line", [
    "RSMatch: every class sub-queue holds >= 8 images at iteration 150; the detector now routes unlabeled samples",
    "RSMatch: 7 of 10 class sub-queues hold >= 8 images at iteration 150; the detector now routes unlabeled samples"])
def test_report_reads_the_trust_line_of_old_and_new_logs(line):
    assert report.TRUSTED_RE.search(line).group("it") == "150"


def test_report_rsmatch_routing(tmp_path):
    """Trust iteration and the last logged step's routing values reach runs.csv and the routing table."""
    root = tmp_path / "runs"
    routing = {0: ("0.3000", "0.6000", "8.0000"), 1: ("0.0000", "0.9980", "3.0000")}
    for seed, (share, threshold, fill) in routing.items():
        args = run_args("rsmatch", 1.0, seed, benchmark_label="rsmatch")
        folder = root / args["save_name"]
        extra = {"train/syn_ratio": float(share), "train/routing_threshold": float(threshold),
                 "train/queue_fill_min": float(fill)}
        end = write_log(str(folder), args, [(100, 0.5, {}), (300, 0.6, extra)], result=0.6)
        if seed == 0:
            with open(folder / "log.txt", "a") as f:
                f.write(_line(end, "RSMatch: every class sub-queue holds >= 8 images at iteration 150; "
                                   "the detector now routes unlabeled samples"))
    out = tmp_path / "report"
    assert report.main(["--runs", str(root), "--out", str(out)]) == 0
    rows = {int(r["seed"]): r for r in _csv_rows(out / "runs.csv")}
    assert rows[0]["trusted_it"] == "150" and rows[1]["trusted_it"] == ""
    assert (float(rows[0]["judged_share"]), float(rows[1]["routing_threshold"]), float(rows[1]["queue_fill_min"])) \
        == (0.3, 0.998, 3.0)
    md = (out / "tables.md").read_text()
    _, table = _table(md, "digits (embedded): RSMatch routing at the last logged step")
    assert table["rsmatch"] == "| rsmatch | trusted 1/2; judged synthetic 0.15; threshold 0.799; min fill 5.5 |"


def test_report_error_metric(fake_runs, tmp_path):
    out = tmp_path / "report"
    report.main(["--runs", str(fake_runs), "--out", str(out), "--metric", "error", "--include-unfinished"])
    md = (out / "tables.md").read_text()
    assert "error rate (%), lower is better" in md and "left out" not in md
    _, final = _table(md, "digits (embedded): final error")
    assert final["fixmatch"].split(" | ")[1] == "**18.00 ± 2.00**"
    assert "**90.00** (n=1)" in final["fixmatch"]  # the unfinished alpha-0.5 run, kept on request (alone: best)


def test_report_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        report.main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        report.main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "no runs" in capsys.readouterr().err


# -------------------------------------------------------------------- runner
def _config(tmp_path, name, save_dir, num_train_iter=300):
    path = tmp_path / "configs" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"algorithm: fixmatch\nsave_dir: {save_dir}\nsave_name: {name}\nnum_train_iter: {num_train_iter}\n")
    return str(path)


@pytest.fixture
def run_states(tmp_path):
    """Four configs: finished (log), finished (checkpoint), interrupted at 200 iterations, new."""
    save_dir = tmp_path / "saved"
    configs = {name: _config(tmp_path, name, save_dir) for name in ("done_log", "done_ckpt", "interrupted", "new")}
    write_log(str(save_dir / "done_log"), {"save_name": "done_log"}, [(300, 0.9, {})], result=0.9)
    for name, it in (("done_ckpt", 300), ("interrupted", 200)):
        write_log(str(save_dir / name), {"save_name": name}, [(it, 0.9, {})])
        torch.save({"model": {}, "it": it, "best_eval_acc": 0.85, "best_it": it - 51},
                   save_dir / name / "latest_model.pth")
    return configs, save_dir


def test_runner_dry_run(run_states, tmp_path):
    configs, save_dir = run_states
    out = io.StringIO()
    assert run.main([os.path.join(tmp_path, "configs", "*.yaml"), "--dry-run"], out=out) == 0
    text = out.getvalue()
    assert text.startswith("4 run(s): 2 finished (skipped), 1 to resume, 1 to start")
    interrupted = text.split("resume@200  interrupted\n", 1)[1].splitlines()[0]
    assert f"--resume True --load_path {save_dir / 'interrupted' / 'latest_model.pth'}" in interrupted
    assert "--resume False" in text.split(" new\n", 1)[1].splitlines()[0]


class FakeLaunch:
    """Stands in for Runner.launch: records commands, fails the runs named in ``fail``."""

    def __init__(self, fail=()):
        self.commands, self.fail = [], set(fail)

    def __call__(self, cmd, env, log_path, pass_fds=()):  # set on the class as an instance: not bound to the Runner
        self.commands.append(cmd)
        return 1 if os.path.basename(log_path).split(".")[0] in self.fail else 0


def test_runner_skips_finished_and_resumes_interrupted(run_states, tmp_path, monkeypatch):
    configs, save_dir = run_states
    launch = FakeLaunch()
    monkeypatch.setattr(run.Runner, "launch", launch)
    out = io.StringIO()
    assert run.main([os.path.join(tmp_path, "configs", "*.yaml"), "--jobs", "2", "--", "--device", "cpu"],
                    out=out) == 0
    by_config = {cmd[cmd.index("--c") + 1]: cmd for cmd in launch.commands}
    assert set(by_config) == {configs["interrupted"], configs["new"]}
    resumed = by_config[configs["interrupted"]]
    assert resumed[resumed.index("--load_path") + 1] == str(save_dir / "interrupted" / "latest_model.pth")
    assert resumed[resumed.index("--resume") + 1] == "True" and resumed[-2:] == ["--device", "cpu"]
    fresh = by_config[configs["new"]]
    assert fresh[fresh.index("--resume") + 1] == "False" and "--load_path" not in fresh
    assert fresh[1:3] == ["-m", "rsmatch_usb.train"]
    assert "summary: 2 run(s) completed, 0 failed, 2 skipped as finished" in out.getvalue()


def test_runner_failure_and_save_dir_override(run_states, tmp_path, monkeypatch):
    configs, save_dir = run_states
    launch = FakeLaunch(fail={"new"})
    monkeypatch.setattr(run.Runner, "launch", launch)
    other = tmp_path / "elsewhere"
    out = io.StringIO()
    # Nothing exists under the override: all four start afresh there, and one fails.
    assert run.main([os.path.join(tmp_path, "configs", "*.yaml"), "--save-dir", str(other)], out=out) == 1
    assert len(launch.commands) == 4
    assert all(cmd[cmd.index("--save_dir") + 1] == str(other) for cmd in launch.commands)
    assert "3 run(s) completed, 1 failed" in out.getvalue() and "FAILED (exit 1" in out.getvalue()


def test_runner_named_grid_dry_run(tmp_path):
    out = io.StringIO()
    # A results file of its own: the committed one records these runs.
    assert run.main(["--grid", "embedded_robust", "--save-dir", str(tmp_path), "--dry-run",
                     "--results", str(tmp_path / "results.csv")], out=out) == 0
    assert out.getvalue().startswith("12 run(s): 0 finished (skipped), 0 to resume, 12 to start")
    assert "openmatch_digits_40_alpha1_2" in out.getvalue() and "alpha0.5" not in out.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["--grid", "nope"], "unknown grid 'nope'"),
    (["no/such/*.yaml"], "no config file matches"),
    ([], "nothing to run"),
    (["--grid", "embedded", "--jobs", "0"], "--jobs 0"),
    (["--grid", "embedded", "--gpus", "a,b"], "--gpus"),
])
def test_runner_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(argv + ["--dry-run"], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0]


def test_runner_refuses_two_configs_with_one_run_folder(tmp_path, capsys):
    a = _config(tmp_path, "same", tmp_path / "saved")
    b = tmp_path / "configs" / "copy.yaml"
    b.write_text(open(a).read())
    with pytest.raises(SystemExit) as exc:
        run.main([a, str(b), "--dry-run"], out=io.StringIO())
    assert exc.value.code == 2 and "write the same run folder" in capsys.readouterr().err


def test_runner_runs_a_real_command(tmp_path, monkeypatch):
    """The launch path itself: output lands in the runner log; the exit code is passed through."""
    runner = run.Runner(jobs=1, gpus=[], train_args=[], out=io.StringIO())
    log = tmp_path / "x.runner.log"
    import sys

    assert runner.launch([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], dict(os.environ),
                         str(log)) == 3
    assert "hello" in log.read_text()


def test_save_name_round_trip():
    for label, ds, n, a, s in itertools.product(("fixmatch", "rsmatch_filter"), ("cifar10", "tiny_imagenet"),
                                                (40, 13000), (0.0, 0.5, 1.0), (0, 2)):
        parsed = report._from_save_name(generate.save_name(label, ds, n, a, s))
        assert parsed == {"benchmark_label": label, "dataset": ds, "num_labels": n, "synthetic_ratio": a, "seed": s}
        assert not math.isnan(parsed["synthetic_ratio"])


class LoggingLaunch(FakeLaunch):
    """A launch that 'trains': writes the run's finished log (with a fixed accuracy) into its run folder."""

    def __call__(self, cmd, env, log_path, pass_fds=()):
        code = super().__call__(cmd, env, log_path)
        if code == 0:
            name = os.path.basename(log_path).split(".")[0]
            save_dir = cmd[cmd.index("--save_dir") + 1]
            write_log(os.path.join(save_dir, name), run_args("fixmatch", 0.0, 0, save_name=name, num_train_iter=300),
                      [(300, 0.7, {"eval/synthetic_auroc": 0.6})], result=0.7)
        return code


def test_runner_records_results_and_skips_recorded_runs(run_states, tmp_path, monkeypatch):
    """Each finished run lands in the results file; a later runner (another machine: nothing on disk) skips it."""
    configs, save_dir = run_states
    results = tmp_path / "docs" / "results" / "grid" / "results.csv"
    launch = LoggingLaunch(fail={"new"})
    monkeypatch.setattr(run.Runner, "launch", launch)
    pattern = os.path.join(tmp_path, "configs", "*.yaml")
    out = io.StringIO()
    assert run.main([pattern, "--results", str(results)], out=out) == 1
    rows = {r["save_name"]: r for r in _csv_rows(results)}
    # done_log was finished on disk before: recorded too; so was done_ckpt, whose log lost its result line
    # (its best accuracy comes from its checkpoint); new failed.
    assert set(rows) == {"done_log", "done_ckpt", "interrupted"}
    assert float(rows["interrupted"]["best_acc"]) == pytest.approx(0.7) and rows["interrupted"]["machine"]
    assert rows["interrupted"]["num_train_iter"] == "300" and list(rows["done_log"]) == report.RESULT_FIELDS
    assert float(rows["done_ckpt"]["best_acc"]) == 0.85 and rows["done_ckpt"]["best_it"] == "250"
    assert rows["done_ckpt"]["finished"] == "True"
    # Each recorded run's log is kept beside the file, for the report and as evidence.
    for name in ("done_log", "done_ckpt", "interrupted"):
        kept = results.parent / "logs" / name / "log.txt"
        assert kept.read_text() == (save_dir / name / "log.txt").read_text()
    assert not (results.parent / "logs" / "new").exists()
    # A fresh machine: no run folders at all, only the committed results file.
    launch = LoggingLaunch()
    monkeypatch.setattr(run.Runner, "launch", launch)
    out = io.StringIO()
    assert run.main([pattern, "--results", str(results), "--save-dir", str(tmp_path / "fresh")], out=out) == 0
    ran = {cmd[cmd.index("--c") + 1] for cmd in launch.commands}
    assert ran == {configs["new"]}
    assert out.getvalue().startswith(f"4 run(s): 3 finished (skipped, 3 recorded in {results}), 0 to resume, "
                                     "1 to start")
    assert set(r["save_name"] for r in _csv_rows(results)) == {"done_log", "interrupted", "done_ckpt", "new"}
    # A recorded run of another length (the grid's iteration count changed) is run again.
    text = results.read_text().replace(",300,True,", ",999,True,", 1)
    results.write_text(text)
    out = io.StringIO()
    assert run.main([pattern, "--results", str(results), "--save-dir", str(tmp_path / "fresh2"), "--dry-run"],
                    out=out) == 0
    assert out.getvalue().startswith(f"4 run(s): 3 finished (skipped, 3 recorded in {results}), 0 to resume, "
                                     "1 to start")


def test_report_reads_the_results_file(fake_runs, tmp_path):
    first = tmp_path / "first"
    report.main(["--runs", str(fake_runs), "--out", str(first)])
    out = tmp_path / "from_results"
    assert report.main(["--results", str(first / "runs.csv"), "--out", str(out)]) == 0
    assert (out / "tables.md").read_text() == (first / "tables.md").read_text()


def test_fashion_grid_uses_its_committed_results_file(tmp_path):
    out = io.StringIO()
    assert run.main(["--grid", "fashion", "--save-dir", str(tmp_path), "--dry-run"], out=out) == 0
    assert out.getvalue().startswith("185 run(s): ")
    assert run.default_results("fashion") == os.path.join(REPO, "docs", "results", "fashion", "results.csv")
    assert run.default_results("embedded") == os.path.join(REPO, "docs", "results", "embedded", "results.csv")
    assert run.default_results("embedded_robust") == run.default_results("embedded")
    assert run.default_results("paper") is None
