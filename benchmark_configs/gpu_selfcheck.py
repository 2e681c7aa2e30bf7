"""GPU self-check: does training work on this machine's CUDA GPU, and what does it cost?

    python benchmark_configs/gpu_selfcheck.py --out selfcheck/     # a few minutes on one GPU

Runs, each in its own process through the train command's own entry point
(``rsmatch_usb.train.cli`` on a generated config, as ``rsmatch-train --c``):

- a few iterations of FixMatch, RSMatch, OpenMatch and IOMatch on CUDA with
  ``amp`` off and on: the embedded digits with the bundled synthetic digits
  (``synthetic_ratio: 1.0``, nothing to download) upscaled to 32 px, USB's
  ``wrn_28_2``, batch 64, ``uratio`` 7 (USB's classic-CV setting), so the step
  time is that of a real USB net; per run the median step time after warm-up
  and the peak GPU memory (``torch.cuda.max_memory_allocated``, one process
  per run so the counter starts at zero);
- the step-time ratio RSMatch / FixMatch from those runs;
- a checkpoint written by a CPU run, resumed on CUDA with ``amp`` on (the
  runner's auto-resume of a run that started on a CPU machine);
- two-GPU DDP with NCCL (``multiprocessing_distributed``), when two GPUs are
  visible: both ranks must end with the same parameters.

Inside each run it also checks what a silent GPU defect would break: the
model is on the GPU, cuDNN autotuning is on, RSMatch's detector scores are
fp32 under ``amp``, the CUDA generator is not reseeded during training, the
losses stay finite. It prints a table, writes ``selfcheck.md`` and
``selfcheck.json`` into ``--out`` (with each check's log tail), and exits 1
when any check fails (every check runs regardless), 2 on bad input or when
no CUDA GPU is visible. ``--allow-cpu`` runs the same checks on the CPU with
whatever net and sizes are given (the test suite does, with a tiny net).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, REPO)

from data_tools.errors import InputError, report  # noqa: E402

ALGORITHMS = ("fixmatch", "rsmatch", "openmatch", "iomatch")
PROG = "gpu_selfcheck"


# ------------------------------------------------------------------ configs
def run_config(opts, algorithm, device, amp, save_dir, save_name, iters, **overrides):
    """The config of one check run: embedded contaminated digits, the requested net and batch."""
    cfg = {
        "algorithm": algorithm, "net": opts.net, "dataset": "digits", "num_classes": 10, "num_labels": 40,
        "synthetic_source": "bundled", "synthetic_ratio": 1.0,
        "img_size": opts.img_size, "crop_ratio": 0.875, "batch_size": opts.batch_size, "uratio": opts.uratio,
        "eval_batch_size": 256, "num_train_iter": iters, "num_eval_iter": iters, "num_log_iter": iters,
        "epoch": 1, "optim": "SGD", "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "ema_m": 0.999,
        "amp": amp, "use_cat": True, "num_workers": opts.num_workers, "seed": 0,
        "device": device, "gpu": 0 if device == "cuda" else None,
        "save_dir": save_dir, "save_name": save_name, "resume": False, "overwrite": True,
        "use_tensorboard": False, "world_size": 1, "rank": 0, "multiprocessing_distributed": False,
    }
    if algorithm == "openmatch":  # its FixMatch part and inlier selection start within the run
        cfg.update(start_fix=iters // 2, select_interval=iters)
    if algorithm == "rsmatch":  # the queue-trained (steady-state) detector path starts within the run
        cfg.update(queue_min_fill=2, queue_min_score=0.0, detector_calib_per_class=0)
    cfg.update(overrides)
    return cfg


def write_json_config(path, cfg):
    """JSON is valid YAML: the train command reads it with its YAML loader, and no YAML writer is needed."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)


# ------------------------------------------------------------------ child side: one training run
class StepRecorder:
    """Hooks timing each train step (device-synchronized) and watching for GPU defects.

    ``StepStart`` runs first in ``before_train_step`` (after the batch is
    fetched), ``StepEnd`` last in ``after_train_step`` (after the backward
    pass, the optimizer and EMA updates and RSMatch's detector step), so a step
    time is compute only, without data loading.
    """

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        self.times, self.losses, self.its = [], [], []
        self.alg = None
        self.score_dtypes = set()
        self.cuda_reseeds = 0
        self.in_training = False
        self._t0 = None

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def attach(self, alg):
        from semilearn.core.hooks import Hook

        recorder = self

        class StepStart(Hook):
            def before_train_step(self, algorithm):
                recorder.in_training = True
                recorder.its.append(algorithm.it)
                recorder.sync()
                recorder._t0 = time.perf_counter()

        class StepEnd(Hook):
            def after_train_step(self, algorithm):
                recorder.sync()
                recorder.times.append(time.perf_counter() - recorder._t0)
                loss = algorithm.log_dict.get("train/total_loss")
                recorder.losses.append(float(loss) if loss is not None else float("nan"))

        self.alg = alg
        alg.register_hook(StepStart(), "SelfCheckStepStart", "HIGHEST")
        alg.register_hook(StepEnd(), "SelfCheckStepEnd", "LOWEST")
        if getattr(alg, "detector", None) is not None:  # RSMatch's Detector component
            scores = alg.detector.score

            def recorded_scores(x):
                out = scores(x)
                self.score_dtypes.add(str(out.dtype).replace("torch.", ""))
                return out
            alg.detector.score = recorded_scores
        return alg

    def count_cuda_reseeds(self):
        """Count ``torch.cuda.manual_seed_all`` calls made during training (torch.manual_seed makes one)."""
        torch = self.torch
        original = torch.cuda.manual_seed_all

        def counted(seed):
            if self.in_training:
                self.cuda_reseeds += 1
            return original(seed)
        torch.cuda.manual_seed_all = counted


def child_train(config_path, expect_device, warmup, result_path):
    """Train one config through ``rsmatch_usb.train.cli``; write what was observed to ``result_path``."""
    import torch

    from rsmatch_usb import train as train_mod

    recorder = StepRecorder(expect_device)
    recorder.count_cuda_reseeds()
    build = train_mod.build_algorithm

    def build_and_record(*args, **kwargs):
        return recorder.attach(build(*args, **kwargs))
    train_mod.build_algorithm = build_and_record

    start = time.perf_counter()
    code = train_mod.cli(["--c", config_path])
    wall = time.perf_counter() - start
    recorder.in_training = False
    alg = recorder.alg
    problems = []
    if code != 0:
        problems.append(f"rsmatch-train exited {code}")
    result = {"exit_code": code, "wall_s": round(wall, 2), "steps": len(recorder.times),
              "first_it": recorder.its[0] if recorder.its else None,
              "final_it": getattr(alg, "it", None), "final_loss": recorder.losses[-1] if recorder.losses else None}
    if recorder.times:
        # The last step also evaluates and saves a checkpoint: left out of the median.
        timed = recorder.times[warmup:-1] or recorder.times
        result["median_step_ms"] = round(1000 * statistics.median(timed), 2)
        result["timed_steps"] = len(timed)
    bad = [x for x in recorder.losses if not x == x or abs(x) == float("inf")]
    if bad:
        problems.append(f"{len(bad)} of {len(recorder.losses)} step losses are not finite")
    if alg is not None:
        param = next(alg.model.parameters())
        result["model_device"] = param.device.type
        if param.device.type != expect_device:
            problems.append(f"model is on {param.device.type}, expected {expect_device}")
        result["amp"] = bool(alg.use_amp)
        result["loss_scaler_enabled"] = bool(alg.loss_scaler.is_enabled())
        if alg.use_amp and alg.loss_scaler.is_enabled():
            scale = float(alg.loss_scaler.get_scale())
            result["loss_scale"] = scale
            if not 0 < scale < float("inf"):
                problems.append(f"loss scale {scale} is not a positive finite number")
    if expect_device == "cuda":
        result["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        result["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        if not torch.backends.cudnn.benchmark:
            problems.append("cudnn.benchmark is off (USB's train.py turns it on)")
    if recorder.score_dtypes:
        result["detector_score_dtypes"] = sorted(recorder.score_dtypes)
        if recorder.score_dtypes != {"float32"}:
            problems.append(f"detector scores in {sorted(recorder.score_dtypes)}, expected float32")
    result["cuda_reseeds_during_training"] = recorder.cuda_reseeds
    if recorder.cuda_reseeds:
        problems.append(f"torch.cuda.manual_seed_all called {recorder.cuda_reseeds} times during training")
    result["problems"] = problems
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


# ------------------------------------------------------------------ parent side: the checks
def _child_env(extra=None):
    """The environment of a child: this one, with the repository on PYTHONPATH (first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


class Checker:
    """Runs checks one by one, each isolated in child processes with a timeout; collects table rows."""

    def __init__(self, opts, device, work, out):
        self.opts, self.device, self.work, self.out = opts, device, work, out
        self.rows = []
        self.start = time.perf_counter()
        os.makedirs(os.path.join(out, "logs"), exist_ok=True)

    def remaining(self):
        return self.opts.budget - (time.perf_counter() - self.start)

    def child(self, name, argv, env=None):
        """Run this script with ``argv`` in a child; (exit code or None on timeout, stderr tail). Log kept."""
        timeout = max(1.0, min(self.opts.timeout, self.remaining()))
        cmd = [sys.executable, os.path.abspath(__file__), *argv]
        log_path = os.path.join(self.out, "logs", f"{name}.log")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env(env),
                                  cwd=self.work)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = None
            stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            stderr += f"\n[{PROG}: timed out after {timeout:.0f} s]"
        with open(log_path, "w", encoding="utf-8") as f:
            f.write(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
        return code, " | ".join(tail)[-400:]

    def train(self, name, cfg, expect_device, env=None):
        """One training run in a child; the observations dict (with 'problems')."""
        folder = os.path.join(self.work, name)
        os.makedirs(folder, exist_ok=True)
        config_path = os.path.join(folder, "config.yaml")
        write_json_config(config_path, cfg)
        shutil.copy(config_path, os.path.join(self.out, "logs", f"{name}.config.yaml"))
        result_path = os.path.join(folder, "result.json")
        code, tail = self.child(name, ["--child-train", config_path, "--child-device", expect_device,
                                       "--child-result", result_path, "--warmup", str(self.opts.warmup)], env)
        if code is None:
            return {"problems": [f"timed out ({tail})"]}
        if code != 0 or not os.path.isfile(result_path):
            return {"problems": [f"child exited {code}: {tail}"]}
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        if result["problems"] and result.get("exit_code"):
            result["problems"].append(tail)
        return result

    def add(self, check, status, detail="", **fields):
        row = {"check": check, "status": status, "detail": detail, **fields}
        self.rows.append(row)
        print(format_row(row), flush=True)
        return row

    def guarded(self, check, fn, skip=None):
        """Run ``fn`` (which adds rows); an exception or an exhausted budget becomes a FAIL row.

        ``skip``: the reason the check does not apply here (a SKIP row), or None.
        """
        if skip:
            self.add(check, "SKIP", skip)
            return
        if self.remaining() <= 0:
            self.add(check, "FAIL", f"not run: the {self.opts.budget:.0f} s budget is spent")
            return
        try:
            fn()
        except Exception as exc:  # one broken check must not hide the others
            self.add(check, "FAIL", f"{type(exc).__name__}: {exc}")

    # -------------------------------------------------------------- the checks
    def check_run(self, algorithm, amp):
        name = f"{algorithm}_amp_{'on' if amp else 'off'}"
        cfg = run_config(self.opts, algorithm, self.device, amp, os.path.join(self.work, "runs"), name,
                         self.opts.iters)
        r = self.train(name, cfg, self.device)
        if r.get("steps") is not None and r["steps"] != self.opts.iters and not r["problems"]:
            r["problems"].append(f"{r['steps']} steps taken, expected {self.opts.iters}")
        self.add(f"train {algorithm}", "FAIL" if r["problems"] else "PASS", "; ".join(r["problems"]),
                 algorithm=algorithm, amp=amp, steps=r.get("steps"), median_step_ms=r.get("median_step_ms"),
                 peak_mem_mib=r.get("peak_mem_mib"), final_loss=r.get("final_loss"), wall_s=r.get("wall_s"),
                 observed=r)

    def check_ratio(self, amp):
        rows = {row.get("algorithm"): row for row in self.rows
                if row["check"].startswith("train ") and row.get("amp") == amp}
        base, cand = rows.get("fixmatch"), rows.get("rsmatch")
        if not (base and cand and base.get("median_step_ms") and cand.get("median_step_ms")):
            self.add("step time rsmatch / fixmatch", "FAIL", "a run it needs did not report step times", amp=amp)
            return
        ratio = cand["median_step_ms"] / base["median_step_ms"]
        self.add("step time rsmatch / fixmatch", "PASS",
                 f"{cand['median_step_ms']:.1f} / {base['median_step_ms']:.1f} ms per step", amp=amp,
                 ratio=round(ratio, 3))

    def check_resume(self):
        """A checkpoint written on the CPU resumed on this device with amp on (an enabled GradScaler)."""
        small = dict(batch_size=min(self.opts.batch_size, 16), uratio=min(self.opts.uratio, 2))
        first, total = 3, 6
        runs = os.path.join(self.work, "runs")
        cpu_cfg = run_config(self.opts, "rsmatch", "cpu", False, runs, "resume_cpu_part", first, **small)
        r = self.train("resume_cpu_part", cpu_cfg, "cpu")
        ckpt = os.path.join(runs, "resume_cpu_part", "latest_model.pth")
        if r["problems"] or not os.path.isfile(ckpt):
            self.add("resume CPU checkpoint", "FAIL", "CPU part: " + ("; ".join(r["problems"]) or "no checkpoint"))
            return
        dev_cfg = run_config(self.opts, "rsmatch", self.device, True, runs, "resume_device_part", total,
                             resume=True, load_path=ckpt, **small)
        r = self.train("resume_device_part", dev_cfg, self.device)
        problems = list(r["problems"])
        if not problems and (r.get("first_it"), r.get("final_it")) != (first, total):
            problems.append(f"resumed at iteration {r.get('first_it')} and ended at {r.get('final_it')}, "
                            f"expected {first} and {total}")
        self.add("resume CPU checkpoint", "FAIL" if problems else "PASS",
                 "; ".join(problems) or f"CPU iterations 1-{first}, {self.device} {first + 1}-{total} with amp",
                 amp=True, steps=r.get("steps"), peak_mem_mib=r.get("peak_mem_mib"),
                 final_loss=r.get("final_loss"), observed=r)

    def check_ddp(self):
        name = "ddp_rsmatch"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        two = ",".join(visible.split(",")[:2]) if visible else "0,1"
        cfg = run_config(self.opts, "rsmatch", "cuda", False, os.path.join(self.work, "runs"), name,
                         self.opts.ddp_iters, multiprocessing_distributed=True, gpu=None, dist_backend="nccl",
                         num_workers=min(self.opts.num_workers, 2))
        folder = os.path.join(self.work, name)
        os.makedirs(folder, exist_ok=True)
        config_path = os.path.join(folder, "config.yaml")
        write_json_config(config_path, cfg)
        code, tail = self.child(name, ["--child-cli", config_path], env={"CUDA_VISIBLE_DEVICES": two})
        with open(os.path.join(self.out, "logs", f"{name}.log"), encoding="utf-8") as f:
            log = f.read()
        from rsmatch_usb.fingerprints import logged_fingerprints

        fingerprints = logged_fingerprints(log, "training is FINISHED; parameter fingerprint")
        problems = []
        if code != 0:
            problems.append(f"exit {code}: {tail}")
        elif sorted(fingerprints) != ["0", "1"]:
            problems.append(f"ranks reporting: {sorted(fingerprints)}, expected 0 and 1")
        elif len(set(fingerprints.values())) != 1:
            problems.append(f"ranks ended with different parameters: {fingerprints}")
        self.add("DDP 2 GPUs (nccl)", "FAIL" if problems else "PASS",
                 "; ".join(problems) or f"{self.opts.ddp_iters} iterations, both ranks' parameters equal",
                 algorithm="rsmatch", steps=self.opts.ddp_iters)


# ------------------------------------------------------------------ output
COLUMNS = (("check", "check"), ("algorithm", "algorithm"), ("amp", "amp"), ("status", "status"),
           ("steps", "steps"), ("median_step_ms", "median step (ms)"), ("ratio", "ratio"),
           ("peak_mem_mib", "peak GPU mem (MiB)"), ("final_loss", "final loss"), ("detail", "detail"))


def _cell(key, value):
    if value is None or value == "":
        return ""
    if key == "amp":
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.4g}" if key == "final_loss" else f"{value:,.1f}" if key != "ratio" else f"{value:.3f}"
    return str(value).replace("|", "/")


def format_row(row):
    return "  ".join(f"{title}={_cell(key, row.get(key))}" for key, title in COLUMNS if _cell(key, row.get(key)))


def markdown(header, rows):
    lines = [f"# GPU self-check", ""] + [f"- {k}: {v}" for k, v in header.items()] + [""]
    lines.append("| " + " | ".join(title for _, title in COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(_cell(key, row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def environment(device):
    import torch

    header = {"device": device, "python": platform.python_version(), "torch": torch.__version__}
    try:
        import importlib.metadata

        import semilearn  # noqa: F401  (importable: what the runs need)
        try:
            header["semilearn"] = importlib.metadata.version("semilearn")
        except importlib.metadata.PackageNotFoundError:  # on the path without its metadata
            header["semilearn"] = "importable (version unknown)"
    except Exception as exc:  # reported, and every run will fail with the reason in its log
        header["semilearn"] = f"not importable ({type(exc).__name__}: {exc})"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        header["gpus"] = f"{gpus} x {torch.cuda.get_device_name(0)}"
        header["cuda"] = torch.version.cuda
    return header, gpus


# ------------------------------------------------------------------ command line
def build_parser():
    p = argparse.ArgumentParser(prog=PROG, description="Check training on this machine's CUDA GPU in a few minutes.")
    p.add_argument("--out", help="folder for selfcheck.md, selfcheck.json and the logs (created)")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is visible (tests)")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS,
                   help="algorithms trained (default: all four)")
    p.add_argument("--amp", nargs="+", default=["off", "on"], choices=("off", "on"), help="amp settings (default both)")
    p.add_argument("--net", default="wrn_28_2", help="USB net (default wrn_28_2)")
    p.add_argument("--img-size", type=int, default=32, help="image size (default 32)")
    p.add_argument("--batch-size", type=int, default=64, help="labeled batch (default 64)")
    p.add_argument("--uratio", type=int, default=7, help="unlabeled/labeled batch ratio (default 7)")
    p.add_argument("--iters", type=int, default=40, help="iterations per run (default 40)")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the median step time (default 10)")
    p.add_argument("--ddp-iters", type=int, default=20, help="iterations of the DDP run (default 20)")
    p.add_argument("--num-workers", type=int, default=4, help="data loader workers (default 4)")
    p.add_argument("--timeout", type=float, default=150, help="seconds per child process (default 150)")
    p.add_argument("--budget", type=float, default=290, help="seconds for everything; checks not started "
                                                           "by then fail (default 290)")
    p.add_argument("--work", help="folder for the runs' files (default: a temporary folder, removed)")
    p.add_argument("--child-train", help=argparse.SUPPRESS)
    p.add_argument("--child-device", help=argparse.SUPPRESS)
    p.add_argument("--child-result", help=argparse.SUPPRESS)
    p.add_argument("--child-cli", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    p = build_parser()
    opts = p.parse_args(argv)
    if opts.child_train:
        return child_train(opts.child_train, opts.child_device, opts.warmup, opts.child_result)
    if opts.child_cli:
        from rsmatch_usb.train import cli
        return cli(["--c", opts.child_cli])
    try:
        if not opts.out:
            raise InputError("--out is required: the folder that receives selfcheck.md and selfcheck.json")
        for name in ("img_size", "batch_size", "uratio", "iters", "ddp_iters"):
            if getattr(opts, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if opts.warmup < 0 or opts.num_workers < 0:
            raise InputError("--warmup and --num-workers must be 0 or more")
        import torch
        if torch.cuda.is_available():
            device = "cuda"
        elif opts.allow_cpu:
            device = "cpu"
        else:
            raise InputError("no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run it on a "
                             "GPU machine, or pass --allow-cpu to check the CPU path")
        if os.path.exists(opts.out) and not os.path.isdir(opts.out):
            raise InputError(f"--out {opts.out} exists and is not a folder")
    except InputError as exc:
        return report(exc, PROG)

    os.makedirs(opts.out, exist_ok=True)
    header, gpus = environment(device)
    header["command"] = " ".join([os.path.basename(sys.executable), *sys.argv]) if argv is None else \
        f"gpu_selfcheck {' '.join(argv)}"
    header["settings"] = (f"{opts.net} at {opts.img_size} px, batch {opts.batch_size} + {opts.batch_size * opts.uratio}"
                          f" unlabeled (uratio {opts.uratio}), {opts.iters} iterations per run, median step time "
                          f"of steps {opts.warmup + 1}-{opts.iters - 1}")
    print(f"{PROG}: " + "; ".join(f"{k} {v}" for k, v in header.items() if k != "command"), flush=True)
    work = opts.work or tempfile.mkdtemp(prefix="gpu_selfcheck_")
    os.makedirs(work, exist_ok=True)
    checker = Checker(opts, device, os.path.abspath(work), os.path.abspath(opts.out))
    try:
        amps = [a == "on" for a in opts.amp]
        for amp in amps:  # FixMatch and RSMatch first: the ratio is the headline
            for algorithm in [a for a in ("fixmatch", "rsmatch") if a in opts.algorithms]:
                checker.guarded(f"train {algorithm}", lambda: checker.check_run(algorithm, amp))
            if {"fixmatch", "rsmatch"} <= set(opts.algorithms):
                checker.guarded("step time rsmatch / fixmatch", lambda: checker.check_ratio(amp))
        for algorithm in [a for a in opts.algorithms if a not in ("fixmatch", "rsmatch")]:
            for amp in amps:
                checker.guarded(f"train {algorithm}", lambda: checker.check_run(algorithm, amp))
        checker.guarded("resume CPU checkpoint", checker.check_resume)
        checker.guarded("DDP 2 GPUs (nccl)", checker.check_ddp,
                        skip="needs CUDA" if device != "cuda" else f"{gpus} GPU visible, needs 2" if gpus < 2 else None)
    finally:
        if not opts.work:
            shutil.rmtree(work, ignore_errors=True)
    header["wall time"] = f"{time.perf_counter() - checker.start:.0f} s"
    failed = [row["check"] for row in checker.rows if row["status"] == "FAIL"]
    header["result"] = f"{len(failed)} of {len(checker.rows)} checks failed" if failed else \
        f"all {len(checker.rows)} checks passed or were skipped"
    text = markdown(header, checker.rows)
    with open(os.path.join(opts.out, "selfcheck.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(opts.out, "selfcheck.json"), "w", encoding="utf-8") as f:
        json.dump({"header": header, "rows": checker.rows}, f, indent=1)
    print()
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
