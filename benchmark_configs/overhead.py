"""RSMatch's training cost over FixMatch: step-time ratio and peak memory on the same data, net and batch.

    python benchmark_configs/overhead.py                       # embedded digits, this machine's device
    python -m benchmark_configs.overhead --device cpu --steps 20 --rounds 10
    python -m benchmark_configs.overhead --config benchmark_configs/paper/fixmatch/fixmatch_cifar10_40_alpha0.5_0.yaml

Both algorithms are built from one config through the train command's own
machinery (``get_config`` + ``prepare``, then what ``main_worker`` does), with
only ``algorithm`` changed, so net, data, batch size and uratio are identical.
A step is what USB's training loop does per iteration: ``before_train_step``
hooks, ``train_step`` on a batch, ``after_train_step`` hooks (backward pass and
parameter update, EMA, and RSMatch's detector update); evaluation, checkpoints
and log lines are pushed beyond the measured iterations. Batches are drawn
once and reused, so data loading (identical for both) is not timed.

Timing: both algorithms live in this process; after a warm-up they alternate
in rounds of ``--steps`` steps (the order flips every round) so that drift in
machine load hits both alike. Reported: median step time of each, and the
median and range of the per-round ratios.

Breakdown (``--breakdown``): after the timed rounds, ``--steps`` more steps of
the candidate with a timer around each of RSMatch's additions (detector
scoring, the detector's training step and, inside it, its EMA update, the
queue update, the queue draw on the training thread); what is left is the
base's own work. On CUDA each timed call synchronizes the device.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` around the steps; on CPU
the peak resident set size (VmHWM, reset before the steps), measured in a
fresh process per algorithm, because a shared process's allocator would reuse
the first algorithm's freed memory for the second.
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_tools.errors import InputError, UserError  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded", "grid", "fixmatch",
                              "fixmatch_digits_40_alpha0.5_0.yaml")


def build(config, algorithm, device, extra, save_dir, horizon):
    """An algorithm object built as ``rsmatch-train`` builds it, ready to step (nothing written).

    ``horizon`` (more than the steps that will be taken) becomes num_train_iter and
    the evaluation/log intervals, so no evaluation, checkpoint or log line falls
    in the measurement. Not larger: USB's samplers draw num_train_iter batches of
    indices up front.
    """
    from rsmatch_usb import runtime
    from rsmatch_usb.config import get_config
    from rsmatch_usb.train import build_algorithm, prepare

    argv = ["--c", config, *extra, "--algorithm", algorithm, "--device", device, "--save_dir", save_dir,
            "--save_name", algorithm, "--resume", "False", "--num_train_iter", str(horizon),
            "--num_eval_iter", str(horizon), "--num_log_iter", str(horizon), "--epoch", "1",
            "--multiprocessing_distributed", "False", "--world_size", "1", "--use_tensorboard", "False"]
    args = prepare(get_config(argv))
    runtime.activate(args.device)
    if args.device == "cuda":
        args.gpu = 0
    logger = logging.getLogger(f"overhead.{algorithm}")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return build_algorithm(args, 1, logger)


def trainable_parameters(alg):
    """Parameters updated by any optimizer of the algorithm (backbone, extra heads, RSMatch's detector)."""
    import torch

    seen = {}
    for value in vars(alg).values():
        if isinstance(value, torch.optim.Optimizer):
            for group in value.param_groups:
                for p in group["params"]:
                    seen[id(p)] = p.numel()
    return sum(seen.values())


class Stepper:
    """USB's per-iteration work on a fixed set of batches."""

    def __init__(self, alg, num_batches):
        self.alg = alg
        # The start of AlgorithmBase.train(), in its order.
        alg.model.train()
        alg.call_hook("before_run")
        alg.epoch = 0
        alg.call_hook("before_train_epoch")
        self.batches = []
        for data_lb, data_ulb in zip(alg.loader_dict["train_lb"], alg.loader_dict["train_ulb"]):
            self.batches.append({**data_lb, **data_ulb})
            if len(self.batches) == num_batches:
                break
        self.i = 0
        # Training-thread time of RSMatch's queue draw per step (ms), from its log, once it draws.
        self.draw_ms = []

    def step(self):
        alg = self.alg
        alg.call_hook("before_train_step")
        alg.out_dict, alg.log_dict = alg.train_step(**alg.process_batch(**self.batches[self.i % len(self.batches)]))
        alg.call_hook("after_train_step")
        if alg.log_dict.get("train/detector_trusted") and "train/queue_draw_ms" in alg.log_dict:
            self.draw_ms.append(alg.log_dict["train/queue_draw_ms"])
        alg.it += 1
        self.i += 1


# RSMatch's additions to its base's step: (label, attribute of the algorithm holding the method or None, method).
BREAKDOWN = (
    ("detector scoring (EMA copy: the unlabeled batch, held-out labeled images)", "detector", "score"),
    ("detector training step (forward, backward, Adam, EMA)", "detector", "step"),
    ("  of which the EMA update and its BatchNorm refresh", "detector", "update_ema"),
    ("queue update (push the top-scoring samples)", "csqueue", "update"),
    ("queue draw on the training thread (take)", "trainer", "take"),
    ("queue draw on the training thread (request)", "trainer", "request"),
    ("dummy head loss", None, "dummy_head_loss"),
)


def time_components(stepper, device, steps):
    """Milliseconds per step: the whole step and each of :data:`BREAKDOWN`'s methods the algorithm has."""
    alg = stepper.alg
    spent, patched = {}, []
    for label, owner, method in BREAKDOWN:
        obj = getattr(alg, owner, None) if owner else alg
        if obj is None or not hasattr(obj, method):
            continue

        def timed(*args, _fn=getattr(obj, method), _label=label, **kwargs):
            _sync(device)
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                _sync(device)
                spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - start

        setattr(obj, method, timed)  # an instance attribute over the class's method
        patched.append((obj, method, label))
    try:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            stepper.step()
        _sync(device)
        total = time.perf_counter() - start
    finally:
        for obj, method, _ in patched:
            delattr(obj, method)
    out = {"whole step": 1000 * total / steps}
    out.update({label: 1000 * spent.get(label, 0.0) / steps for _, _, label in patched})
    return out


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_rounds(steppers, device, steps, rounds):
    """Seconds per step of each stepper, one value per round, rounds interleaved with alternating order."""
    names = list(steppers)
    per_round = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                steppers[name].step()
            _sync(device)
            per_round[name].append((time.perf_counter() - start) / steps)
    return per_round


def _read_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(config, algorithm, device, extra, steps, warmup, num_batches):
    """Peak memory of ``steps`` steps of one algorithm in this process: a dict of bytes."""
    import semilearn  # noqa: F401  (the import cost is common to both: measured before building)
    import torch

    import rsmatch_usb  # noqa: F401

    imports = torch.cuda.memory_allocated() if device == "cuda" else _read_status("VmRSS")
    with tempfile.TemporaryDirectory() as save_dir:
        alg = build(config, algorithm, device, extra, save_dir, horizon=warmup + steps + 100)
        stepper = Stepper(alg, num_batches)
        for _ in range(warmup):
            stepper.step()
        _sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            for _ in range(steps):
                stepper.step()
            _sync(device)
            return {"kind": "cuda max_memory_allocated", "imports": imports, "static": before,
                    "peak": torch.cuda.max_memory_allocated()}
        before = _read_status("VmRSS")
        exact = _reset_peak_rss()
        for _ in range(steps):
            stepper.step()
        peak = _read_status("VmHWM")
        kind = "peak RSS (VmHWM)" if exact else "peak RSS of the whole process (VmHWM could not be reset)"
        return {"kind": kind, "imports": imports, "static": before, "peak": peak}


def memory_in_child(args, algorithm):
    """Run :func:`measure_memory` for one algorithm in a fresh interpreter; its result dict."""
    cmd = [sys.executable, "-m", "benchmark_configs.overhead", "--memory-child", algorithm, "--config", args.config,
           "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--batches", str(args.batches)]
    if args.set:
        cmd += ["--set", *args.set]
    if args.candidate_set:
        cmd += ["--candidate-set", *args.candidate_set]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.getcwd(),
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                             p for p in (repo, os.environ.get("PYTHONPATH")) if p)))
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"memory measurement of {algorithm} failed (exit {out.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _mb(num_bytes):
    return f"{num_bytes / 2 ** 20:,.1f} MiB"


def _extra_flags(pairs):
    """``key=value`` pairs from --set as train-command flags."""
    flags = []
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set {pair!r}: use key=value, e.g. --set batch_size=64")
        flags += [f"--{key}", value]
    return flags


def build_parser():
    p = argparse.ArgumentParser(prog="python -m benchmark_configs.overhead",
                                description="Step time and peak memory of RSMatch relative to FixMatch.")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="config giving data, net and batch (default: embedded digits, alpha 0.5)")
    p.add_argument("--baseline", default="fixmatch", help="reference algorithm (default fixmatch)")
    p.add_argument("--candidate", default="rsmatch", help="algorithm to compare (default rsmatch)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--steps", type=int, default=20, help="steps per timed round (default 20)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per algorithm (default 10)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per algorithm first (default 10)")
    p.add_argument("--batches", type=int, default=8, help="distinct batches drawn and cycled (default 8)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides for both, e.g. batch_size=64")
    p.add_argument("--candidate-set", nargs="*", metavar="KEY=VALUE",
                   help="config overrides for the candidate only, e.g. queue_workers=0")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--breakdown", action="store_true",
                   help="also time each of RSMatch's additions in --steps more steps of the candidate")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    try:
        if not os.path.isfile(args.config):
            raise InputError(f"--config {args.config} does not exist")
        for name in ("steps", "rounds", "batches"):
            if getattr(args, name) < 1:
                raise InputError(f"--{name} must be at least 1")
        if args.warmup < 0:
            raise InputError("--warmup must be 0 or more")
        extra = _extra_flags(args.set)
        candidate_extra = extra + _extra_flags(args.candidate_set)
        from semilearn.core.utils import ALGORITHMS

        import rsmatch_usb  # noqa: F401  (registers the plugin's algorithms)
        from data_tools.devices import resolve_device

        for name in (args.baseline, args.candidate):
            if name not in ALGORITHMS:
                raise InputError(f"algorithm {name!r} is not registered; known: {', '.join(sorted(ALGORITHMS.keys()))}")
        device = resolve_device(args.device, setting="--device")
    except UserError as exc:  # InputError, or a bad device request
        p.exit(2, f"{p.prog}: error: {exc}\n")
    args.device = device

    if args.memory_child:
        own = candidate_extra if args.memory_child == args.candidate else extra
        print(json.dumps(measure_memory(args.config, args.memory_child, device, own, args.steps, args.warmup,
                                        args.batches)))
        return 0

    import torch

    horizon = args.warmup + args.rounds * args.steps + 100
    with tempfile.TemporaryDirectory() as save_dir:
        names = [args.baseline, args.candidate] if args.candidate != args.baseline else [args.baseline]
        algs = {name: build(args.config, name, device, candidate_extra if name == args.candidate else extra,
                            save_dir, horizon) for name in names}
        steppers = {name: Stepper(alg, args.batches) for name, alg in algs.items()}
        if len(names) == 1:  # the dry path: the baseline against itself, as two identical objects
            names.append(args.baseline + "#2")
            algs[names[1]] = build(args.config, args.baseline, device, extra, save_dir, horizon)
            steppers[names[1]] = Stepper(algs[names[1]], args.batches)
        for stepper in steppers.values():
            for _ in range(args.warmup):
                stepper.step()
        per_round = time_rounds(steppers, device, args.steps, args.rounds)
        breakdown = time_components(steppers[names[1]], device, args.steps) if args.breakdown else None

    base, cand = names
    a0 = algs[base].args
    ratios = [c / b for b, c in zip(per_round[base], per_round[cand])]
    med = {n: statistics.median(per_round[n]) for n in names}
    result = {
        "device": device, "torch_threads": torch.get_num_threads(), "config": args.config,
        "dataset": a0.dataset, "net": a0.net, "batch_size": a0.batch_size, "uratio": a0.uratio,
        "img_size": a0.img_size, "steps_per_round": args.steps, "rounds": args.rounds,
        "step_time_s": med, "ratio_of_medians": med[cand] / med[base],
        "round_ratio_median": statistics.median(ratios), "round_ratio_min": min(ratios),
        "round_ratio_max": max(ratios),
        "trainable_parameters": {n: trainable_parameters(algs[n]) for n in names},
        "queue_draw_ms": {n: statistics.median(steppers[n].draw_ms) for n in names if steppers[n].draw_ms},
    }
    print(f"{cand} vs {base}: {a0.dataset}, net {a0.net}, batch {a0.batch_size} labeled + "
          f"{a0.batch_size * a0.uratio} unlabeled, img {a0.img_size}, device {device} "
          f"({torch.get_num_threads()} torch threads)")
    print(f"step time (median of {args.rounds} rounds x {args.steps} steps, after {args.warmup} warm-up steps):")
    for n in names:
        print(f"  {n:<12} {1000 * med[n]:8.2f} ms/step   trainable parameters {result['trainable_parameters'][n]:,}")
    print(f"  ratio {cand}/{base}: {result['ratio_of_medians']:.3f} (per-round ratios: median "
          f"{result['round_ratio_median']:.3f}, range {result['round_ratio_min']:.3f}-{result['round_ratio_max']:.3f})")
    for n, ms in result["queue_draw_ms"].items():
        print(f"  {n}: queue draw on the training thread {ms:.2f} ms/step (median over the steps that drew)")
    if breakdown is not None:
        result["breakdown_ms"] = breakdown
        print(f"{cand}'s step, {args.steps} more steps with a timer around each addition (ms/step):")
        for label, ms in breakdown.items():
            print(f"  {ms:8.2f}  {label}")

    if not args.no_memory:
        memory = {}
        for n in names:
            memory[n] = memory_in_child(args, n.split("#")[0]) if device == "cpu" else None
        if device == "cuda":  # exact per-algorithm figures in-process; free the timing objects first
            del algs, steppers
            torch.cuda.empty_cache()
            memory = {n: measure_memory(args.config, n.split("#")[0], device,
                                        candidate_extra if n == args.candidate else extra, args.steps, args.warmup,
                                        args.batches) for n in names}
        result["memory_bytes"] = memory
        kind = memory[base]["kind"]
        print(f"peak memory ({kind}, {'separate process per algorithm' if device == 'cpu' else 'per algorithm'}):")
        for n in names:
            m = memory[n]
            print(f"  {n:<12} peak {_mb(m['peak'])} = {_mb(m['imports'])} after imports + "
                  f"{_mb(m['peak'] - m['imports'])} for training (before the steps {_mb(m['static'] - m['imports'])})")
        training = {n: memory[n]["peak"] - memory[n]["imports"] for n in names}
        result["memory_ratio"] = memory[cand]["peak"] / memory[base]["peak"]
        result["training_memory_ratio"] = training[cand] / training[base] if training[base] > 0 else None
        print(f"  ratio {cand}/{base}: peak {result['memory_ratio']:.3f}, training part "
              + (f"{result['training_memory_ratio']:.3f}" if result["training_memory_ratio"] else "n/a"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
