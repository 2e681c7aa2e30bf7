"""Run a grid of configs with ``rsmatch-train``: skip finished runs, resume interrupted ones.

    python -m benchmark_configs.run --grid embedded                 # one run at a time
    python -m benchmark_configs.run --grid embedded_robust --jobs 2 # two at a time
    python -m benchmark_configs.run 'benchmark_configs/paper/fixmatch/*_cifar10_40_*' --gpus 0,1 --jobs 2
    python -m benchmark_configs.run --grid embedded --dry-run       # what would run, and how
    python -m benchmark_configs.run --grid embedded -- --device cpu # flags after -- go to every run

Each run is ``python -m rsmatch_usb.train --c <config>`` in a subprocess. A run
is finished when its ``log.txt`` has USB's ``Model result - eval/best_acc``
line or its newest readable checkpoint has reached ``num_train_iter``; it is
resumed (``--resume True --load_path <run>/latest_model.pth``, or
``model_best.pth`` when the latest cannot be loaded) when a readable checkpoint
exists, started afresh (``--resume False``; the train command clears what a
run that died before its first checkpoint left, where the config's
``overwrite`` allows it, True by default) when there is none, and left alone
(reported, counted as failed) when its checkpoint files exist but none can be
loaded safely. A run's console output goes to ``<save_dir>/<save_name>.runner.log``.

That decision is taken again when a run's turn comes, under the run folder's
lock (:func:`data_tools.run_folder.locked`), which the runner holds until the
training (which takes the lock over) and its recording end: a run another
runner has finished since start-up is skipped, one that another process holds
is left to it (reported, counted as not run), so two runners on one grid never
train a run twice nor clear a finished folder.

With a results file (``--results FILE``; a grid with a committed one, such as
``fashion``, uses ``docs/results/<grid>/results.csv`` by default) a run it
records (same ``save_name`` and ``num_train_iter``) is finished too, and the
runner writes each finished run's result there (the report's row, the machine
and the time), also for runs it finds finished on disk (a run whose log lost
its result line to a kill takes its best accuracy from its checkpoint), and
keeps each such run's ``log.txt`` and ``metrics.jsonl`` under ``logs/<save_name>/``
beside the file (a rerun's replace them), so a grid that spans machines and sessions continues
where the last one stopped once the file is committed. Runners sharing the file
merge their rows (:class:`Results`); a damaged row is one error line.

Each run starts in its own session (process group). SIGTERM or SIGINT to the
runner (``kill``, ``timeout``, a job scheduler, Ctrl-C) is forwarded to every
running training's process group, data-loader and DDP workers included; the
runner waits for them (SIGKILL after 30 s) and exits 128 + the signal number
(143 for SIGTERM, 130 for SIGINT). Rerun the same command to resume.
Exit code: 0 when every run finished, 1 when any failed or was in use by another
process, 2 for bad input, 130 or 143 when interrupted.
"""
import argparse
import contextlib
import csv
import fcntl
import glob
import math
import os
import platform
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark_configs import generate, report
from data_tools import processes, run_folder, run_metrics
from data_tools.atomic import atomic_write
from data_tools.config_files import load_yaml
from data_tools.errors import InputError, UserError, command_name
from data_tools.number_ranges import NumberRange, check_number
from data_tools.run_folder import CHECKPOINTS, log_has_result

REPO = os.path.dirname(generate.HERE)
# A finished run's files kept beside the results file (logs/<save_name>/): the evidence behind its row.
KEPT_FILES = ("log.txt", run_metrics.FILE_NAME)


class Stopped(Exception):
    """The runner received ``signum`` (SIGTERM or SIGINT) and stopped its trainings."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Run:
    """One config to run and what was found of it on disk."""
    config: str
    save_dir: str
    save_name: str
    num_train_iter: int
    status: str = "new"        # new | resume | finished | recorded (in the results file) | unreadable
    done_iters: int = 0
    checkpoint: str = ""       # the checkpoint a resume loads
    note: str = ""             # why a checkpoint was skipped, if one was

    @property
    def folder(self):
        return os.path.join(self.save_dir, self.save_name)

    @property
    def runner_log(self):
        return os.path.join(self.save_dir, self.save_name + ".runner.log")


def read_config(path):
    """The YAML mapping of a config file, read by the train command's loader."""
    return load_yaml(path)


def inspect(run, recorded=None):
    """Set ``run.status``: recorded (in ``recorded``, the results file's rows by save_name), finished (log
    result line, or checkpoint at num_train_iter), resume, new, or unreadable.

    Checkpoints are read with ``weights_only=True`` (a crafted file is refused,
    never run); an unreadable ``latest_model.pth`` falls back to ``model_best.pth``.
    """
    row = (recorded or {}).get(run.save_name)
    if row is not None and report._int(row.get("num_train_iter")) == run.num_train_iter:
        run.status, run.done_iters = "recorded", run.num_train_iter
        return run
    if log_has_result(run.folder):
        run.status, run.done_iters = "finished", run.num_train_iter
        return run
    problems = []
    for name in CHECKPOINTS:
        path = os.path.join(run.folder, name)
        if not os.path.isfile(path):
            continue
        # Imported here: importing the plugin loads semilearn, which only a checkpoint to read needs.
        from rsmatch_usb import checkpoint as checkpoints

        try:
            iters = checkpoints.iterations(path)
        except checkpoints.CheckpointError as exc:
            problems.append(f"{name} {exc}")
            continue
        run.checkpoint, run.done_iters = path, iters
        run.status = "finished" if iters >= run.num_train_iter else "resume"
        run.note = f"{'; '.join(problems)}; resuming from {name}" if problems else ""
        return run
    if problems:
        run.status, run.done_iters = "unreadable", 0
        run.note = (f"{'; '.join(problems)}; replace or remove the file(s) in {run.folder} "
                    "to resume or start it afresh")
        return run
    run.status, run.done_iters = "new", 0
    return run


def collect(grid, patterns, save_dir):
    """The Runs of a named grid and/or config globs, in order, without duplicates."""
    paths = []
    if grid:
        if grid not in generate.GRIDS:
            raise InputError(f"--grid: unknown grid {grid!r}; use one of: {', '.join(generate.GRIDS)}")
        specs = generate.select(grid)
        paths += [os.path.join(generate.HERE, s.path) for s in specs]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise InputError(f"--grid {grid}: {len(missing)} config file(s) missing, e.g. {missing[0]}; "
                             "run python -m benchmark_configs.generate")
    for pattern in patterns:
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else (
            [pattern] if os.path.isfile(pattern) else [])
        matched = [m for m in matched if m.endswith((".yaml", ".yml"))]
        if not matched:
            raise InputError(f"no config file matches {pattern!r}")
        paths += matched
    if not paths:
        raise InputError("nothing to run: give --grid NAME or config files/globs")
    runs, seen, folders = [], set(), {}
    for path in paths:
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        cfg = read_config(path)
        for needed in ("save_name", "num_train_iter"):
            if needed not in cfg:
                raise InputError(f"config {path} has no {needed!r} key")
        try:
            run_dir = run_folder.run_path(save_dir or cfg.get("save_dir", "./saved_models"), cfg["save_name"])
            iters = check_number("num_train_iter", cfg["num_train_iter"], NumberRange(int, 1))
        except UserError as exc:
            raise InputError(f"config {path}: {exc}") from None
        run = Run(path, os.path.dirname(run_dir), os.path.basename(run_dir), iters)
        folder = os.path.abspath(run.folder)
        if folder in folders:
            raise InputError(f"configs {folders[folder]} and {path} write the same run folder {run.folder}")
        folders[folder] = path
        runs.append(run)
    return runs


class Results:
    """The results file: one row per finished run (``report.RESULT_FIELDS``), kept sorted by save_name.

    Several runners may share one file (the embedded grids do). Each write
    holds an exclusive ``flock`` on the file's folder, re-reads the file as it
    is on disk then, replaces only its own run's row, and goes through a
    temporary file of its own (:func:`data_tools.atomic.atomic_write`): no
    runner writes from a stale copy, and rows and columns it does not know (a
    user's own) stay with their values. A row that is not whole (torn, not
    UTF-8) stops the runner with one error line naming its line
    (:func:`report.read_result_rows`) rather than being dropped by the next write.
    """

    def __init__(self, path):
        if os.path.isdir(path):
            raise InputError(f"--results {path} is a folder; give the path of a CSV file (it is created if "
                             "missing)")
        self.path = path
        self.lock = threading.Lock()
        self.rows = self.read()

    def read(self):
        """The file's rows on disk now, typed, by save_name ({} when there is no file yet)."""
        if not os.path.exists(self.path):
            return {}
        return {r["save_name"]: r for r in report.read_results(self.path)}

    @property
    def log_dir(self):
        """Where finished runs' logs are kept beside the file: ``<its folder>/logs/<save_name>/log.txt``, and
        their structured metrics beside each log (``metrics.jsonl``).

        The report reads them (``--runs``) for what the file's row does not hold;
        committed with the file, they are the evidence behind every table.
        """
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), "logs")

    def keep_log(self, run, replace=False):
        """Copy ``run``'s log and metrics beside the file (each unless a copy is there and not ``replace``);
        True when any was copied.

        A ``replace`` by a run without metrics (trained by an older version)
        removes the kept metrics, which the report would read before the new log.
        """
        copied = False
        for name in KEPT_FILES:
            source = os.path.join(run.folder, name)
            target = os.path.join(self.log_dir, run.save_name, name)
            if replace and not os.path.isfile(source) and os.path.isfile(target):
                os.remove(target)
            if (os.path.isfile(target) and not replace) or not os.path.isfile(source):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(source, "rb") as src, atomic_write(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            copied = True
        return copied

    @contextlib.contextmanager
    def _file_locked(self):
        """An exclusive flock on the results file's folder (the file itself is replaced, so it cannot hold one)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def record(self, run):
        """Add ``run``'s result and keep its log; False when the run has no final result to record.

        The result comes from the log's result line; a run that finished (its
        checkpoint reached ``num_train_iter``) but whose log lost that line
        (cut by a kill or a full disk) takes its best accuracy from the checkpoint.
        """
        if log_has_result(run.folder):
            row = report.run_record(run.folder)
        elif run.status == "finished" and run.checkpoint and os.path.isfile(os.path.join(run.folder, "log.txt")):
            row = finished_from_checkpoint(run)
        else:
            return False
        row.update(machine=machine(), recorded=time.strftime("%Y-%m-%d %H:%M:%S"))
        if row.get("num_train_iter") in (None, ""):  # a log without the Arguments line: the config's
            row["num_train_iter"] = run.num_train_iter
        with self.lock, self._file_locked():
            columns, rows = report.read_result_rows(self.path) if os.path.exists(self.path) else ([], [])
            by_name = {r["save_name"]: r for r in rows}
            extra = [c for c in columns if c not in report.RESULT_FIELDS]
            kept = by_name.get(run.save_name, {})
            by_name[run.save_name] = {**{c: kept.get(c, "") for c in extra},
                                      **{k: report.csv_cell(row.get(k, "")) for k in report.RESULT_FIELDS}}
            with atomic_write(self.path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=report.RESULT_FIELDS + extra)
                writer.writeheader()
                for name in sorted(by_name):
                    writer.writerow(by_name[name])
            # The rerun's log replaces the kept one: the report reads it beside the row.
            self.keep_log(run, replace=True)
            self.rows = {name: report.typed_row(r) for name, r in by_name.items()}
        return True


def finished_from_checkpoint(run):
    """The results row of a finished run whose log has no result line: its log, and the checkpoint's best."""
    # Imported here: importing the plugin loads semilearn, which only a checkpoint to read needs.
    from rsmatch_usb import checkpoint as checkpoints

    row = report.run_record(run.folder)
    state = checkpoints.load(run.checkpoint)
    best_it = state.get("best_it")
    row.update(best_acc=float(state.get("best_eval_acc", math.nan)), finished=True,
               best_it=None if best_it is None else int(best_it) + 1)  # as the log's eval/best_it, + 1
    return row


def machine():
    """The machine a run finished on, for the results file: CPU model, cores, and the GPU if one is visible."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except Exception:  # no torch or a broken driver: the CPU is still worth recording
        pass
    return text


def default_results(grid):
    """The committed results file of a named grid's family, or None."""
    if not grid or grid not in generate.GRIDS:
        return None
    path = generate.FAMILIES[generate.GRIDS[grid][0]].results
    return os.path.join(REPO, path) if path else None


def command(run, train_args=()):
    """The rsmatch-train command line of a run."""
    cmd = [sys.executable, "-m", "rsmatch_usb.train", "--c", run.config, "--save_dir", run.save_dir]
    if run.status == "resume":
        cmd += ["--resume", "True", "--load_path", run.checkpoint]
    else:
        # No checkpoint: a folder left by a run that died before its first checkpoint holds
        # only a partial log, which the train command clears where the config allows it
        # (overwrite: True, its default); the runner re-checked under the run's lock that
        # the folder holds no finished run.
        cmd += ["--resume", "False"]
    return cmd + list(train_args)


def _fmt(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Runner:
    """Runs commands N at a time; each job gets a slot (and a GPU when --gpus is given)."""

    def __init__(self, jobs, gpus, train_args, out=sys.stdout, results=None):
        self.jobs, self.gpus, self.train_args, self.out = jobs, gpus, list(train_args), out
        self.results = results
        self.slots = queue.Queue()
        for slot in range(jobs):
            self.slots.put(slot)
        self.procs = {}
        # Reentrant: the signal handler runs in the main thread, which may hold it already.
        self.lock = threading.RLock()
        self.stopping = False
        self.start = time.monotonic()
        self.count = 0
        self.total = 0

    def say(self, text):
        with self.lock:
            print(f"[{_fmt(time.monotonic() - self.start):>9}] {text}", file=self.out, flush=True)

    def env(self, slot):
        env = dict(os.environ)
        # N torch processes that each start one thread per core oversubscribe the CPU.
        if self.jobs > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        return env

    def launch(self, cmd, env, log_path, pass_fds=()):
        """Start one command with its output appended to ``log_path``; returns its exit code.

        The command gets its own session, so a signal meant for the runner reaches
        it only through :meth:`stop`, which signals its whole process group.
        ``pass_fds``: open files the command inherits (the run folder's lock).
        Returns None when the runner is stopping and nothing was started.
        """
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
            log.flush()
            # Started under the lock: stop() either sees this child or stops it from starting.
            with self.lock:
                if self.stopping:
                    return None
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, pass_fds=pass_fds)
                self.procs[proc.pid] = proc
            try:
                return proc.wait()
            finally:
                with self.lock:
                    self.procs.pop(proc.pid, None)

    def run_one(self, run):
        """Train ``run`` unless, checked again under its folder's lock, it is finished or another run holds it.

        Returns ``(run, outcome, seconds)``: the exit code, None when stopped,
        ``"busy"`` / ``"finished"`` / ``"unreadable"`` when nothing was started, or
        ``"error"`` (its folder could not be locked, or its result not recorded).
        The lock is held from the check until the training and its recording
        end (the training takes it over, :func:`data_tools.run_folder.hand_lock_env`),
        so two runners on the same runs never train one twice nor clear a finished one.
        """
        if self.stopping:
            return run, None, 0.0
        slot = self.slots.get()
        try:
            with contextlib.ExitStack() as stack:
                try:
                    fd = stack.enter_context(run_folder.locked(run.folder))
                except UserError as exc:
                    self.say(f"[-/{self.total}] not run: {exc}")
                    return run, "busy", 0.0
                except OSError as exc:  # save_dir not writable: the train command would say the same
                    self.say(f"[-/{self.total}] error: {run.save_name}: cannot create or lock {run.folder} "
                             f"({exc.strerror})")
                    return run, "error", 0.0
                before = run.status
                inspect(run, self.results.read() if self.results is not None else None)
                if run.status in ("finished", "recorded"):
                    self.say(f"[-/{self.total}] {run.status} meanwhile (another runner?), skipped: {run.save_name}")
                    if run.status == "finished" and self.results is not None and self.results.record(run):
                        self.say(f"[-/{self.total}] recorded in {self.results.path}")
                    return run, "finished", 0.0
                if run.status == "unreadable":
                    self.say(f"[-/{self.total}] error: {run.save_name}: {run.note}")
                    return run, "unreadable", 0.0
                if run.status != before:
                    self.say(f"[-/{self.total}] {run.save_name} changed since start-up: {before} -> {run.status}")
                return self._train(run, slot, fd)
        except UserError as exc:  # the results file turned unreadable while running
            self.say(f"[-/{self.total}] error: {run.save_name}: {exc}")
            return run, "error", 0.0
        finally:
            self.slots.put(slot)

    def _train(self, run, slot, lock_fd):
        with self.lock:
            self.count += 1
            index = self.count
        how = f"resume at iteration {run.done_iters}" if run.status == "resume" else "start"
        if run.note:
            how += f" ({run.note})"
        gpu = f" on GPU {self.gpus[slot % len(self.gpus)]}" if self.gpus else ""
        self.say(f"[{index}/{self.total}] {how:>9}{gpu}: {run.save_name}")
        began = time.monotonic()
        # The training takes over the folder's lock, and dies with the runner even when SIGKILL gives no
        # chance to forward a signal.
        env = {**self.env(slot), **run_folder.hand_lock_env(lock_fd, run.folder),
               **processes.child_dies_with_me_env()}
        code = self.launch(command(run, self.train_args), env, run.runner_log, pass_fds=(lock_fd,))
        took = time.monotonic() - began
        if self.stopping:
            state = "stopped"
        else:
            state = "done" if code == 0 else f"FAILED (exit {code}; see {run.runner_log})"
        self.say(f"[{index}/{self.total}] {state}: {run.save_name} in {_fmt(took)}")
        if code == 0 and not self.stopping and self.results is not None:
            inspect(run)  # finished now: by its log's result line, or by its checkpoint if the log lost that line
            if self.results.record(run):
                self.say(f"[{index}/{self.total}] recorded in {self.results.path}")
        return run, code, took

    def signal_children(self, signum):
        """Send ``signum`` to the process group of every running child; returns those children."""
        with self.lock:
            self.stopping = True
            procs = list(self.procs.values())
        for proc in procs:
            try:
                os.killpg(proc.pid, signum)  # the child leads its own group (start_new_session)
            except ProcessLookupError:
                pass  # already gone
        return procs

    def stop(self, signum=signal.SIGTERM, grace=30.0):
        """Forward ``signum`` to the children's process groups, wait for them, SIGKILL after ``grace`` s."""
        procs = self.signal_children(signum)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()

    def run_all(self, runs):
        self.total = len(runs)
        results = []
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = []
            try:
                futures += [pool.submit(self.run_one, run) for run in runs]
                for future in as_completed(futures):
                    results.append(future.result())
            except Stopped as exc:
                self.say(f"{exc}: stopping the running trainings")
                for future in futures:
                    future.cancel()
                self.stop(exc.signum)
                raise
        return results

    @contextlib.contextmanager
    def stopped_by_signals(self, signums=(signal.SIGTERM, signal.SIGINT)):
        """While inside, the first SIGTERM/SIGINT raises :class:`Stopped` in the main thread.

        A repeated signal is forwarded to the children while :meth:`stop` waits.
        Outside the main thread (where Python cannot take signals) nothing is installed.
        """
        def handler(signum, frame):
            if self.stopping:
                self.signal_children(signum)
                return
            self.stopping = True  # no new child starts, and a second signal does not raise again
            raise Stopped(signum)

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, handler) for s in signums}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def build_parser():
    p = argparse.ArgumentParser(
        prog=command_name("rsmatch-bench-run", "benchmark_configs.run"),
        description="Run benchmark configs with rsmatch-train: skips finished runs, resumes interrupted ones. "
                    "Arguments after '--' are passed to every rsmatch-train command.")
    p.add_argument("configs", nargs="*", help="config files or globs (quote globs)")
    p.add_argument("--grid", help=f"a named grid: {', '.join(generate.GRIDS)}")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--save-dir", help="put every run under this folder instead of each config's save_dir")
    p.add_argument("--gpus", help="comma-separated GPU ids; job slot k uses GPU k mod len (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--dry-run", action="store_true", help="list each run's state and command; run nothing")
    p.add_argument("--results", help="results CSV that records finished runs and whose runs are skipped "
                                     "(default for --grid fashion: docs/results/fashion/results.csv; "
                                     "for the embedded grids: docs/results/embedded/results.csv)")
    return p


def main(argv=None, out=sys.stdout):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise InputError(f"--jobs {args.jobs}: give 1 or more")
        gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else []
        if args.gpus is not None and (not gpus or not all(g.isdigit() for g in gpus)):
            raise InputError(f"--gpus {args.gpus!r}: give comma-separated GPU ids such as 0,1")
        path = args.results or default_results(args.grid)
        record_file = Results(path) if path else None
        runs = [inspect(run, record_file.rows if record_file else None)
                for run in collect(args.grid, args.configs, args.save_dir)]
    except UserError as exc:  # InputError, or a config file the loader refuses
        parser.exit(2, f"{parser.prog}: error: {exc}\n")

    todo = [r for r in runs if r.status in ("new", "resume")]
    unreadable = [r for r in runs if r.status == "unreadable"]
    finished = len(runs) - len(todo) - len(unreadable)
    resumed = sum(r.status == "resume" for r in todo)
    recorded = sum(r.status == "recorded" for r in runs)
    print(f"{len(runs)} run(s): {finished} finished (skipped"
          f"{f', {recorded} recorded in ' + record_file.path if recorded else ''}), {resumed} to resume, "
          f"{len(todo) - resumed} to start" + (f", {len(unreadable)} with no readable checkpoint (not run)"
                                               if unreadable else ""), file=out, flush=True)
    for run in unreadable:
        print(f"error: {run.save_name}: {run.note}", file=out, flush=True)
    if record_file is not None and not args.dry_run:
        # Runs finished on this machine before (or without) the results file: record them now.
        try:
            late = [r for r in runs if r.status == "finished" and record_file.record(r)]
        except UserError as exc:  # the file was damaged since start-up
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        if late:
            print(f"recorded {len(late)} finished run(s) in {record_file.path}", file=out, flush=True)
        # Runs recorded before logs were kept: their logs too, where this machine has them.
        for run in runs:
            if run.status in ("finished", "recorded"):
                record_file.keep_log(run)
    if args.dry_run:
        for run in runs:
            state = {"finished": "finished ", "recorded": "recorded ", "resume": f"resume@{run.done_iters}",
                     "new": "new      ", "unreadable": "unreadable"}[run.status]
            line = f"{state:>10}  {run.save_name}"
            if run.status in ("new", "resume"):
                if run.note:
                    line += f"\n            ({run.note})"
                line += f"\n            {shlex.join(command(run, train_args))}"
            print(line, file=out)
        return 0
    if not todo and not unreadable:
        return 0

    runner = Runner(args.jobs, gpus, train_args, out=out, results=record_file)
    results = []
    try:
        if todo:
            with runner.stopped_by_signals():
                results = runner.run_all(todo)
    except Stopped as exc:
        print(f"interrupted by {exc}; rerun the same command to resume", file=out, flush=True)
        return 128 + exc.signum
    why_not = {"unreadable": "not run: no readable checkpoint",
               "error": "not run or not recorded: see its error line above",
               "busy": "not run: its folder is in use by another run"}
    failed = [(run, why_not.get(code, code)) for run, code, _ in results if code not in (0, None, "finished")]
    failed += [(run, why_not["unreadable"]) for run in unreadable]
    took = sum(t for _, _, t in results)
    completed = sum(code == 0 for _, code, _ in results)
    finished += sum(code == "finished" for _, code, _ in results)
    print(f"summary: {completed} run(s) completed, {len(failed)} failed, {finished} skipped as "
          f"finished; {_fmt(time.monotonic() - runner.start)} wall, {_fmt(took)} of training", file=out)
    for run, code in failed:
        why = f"exit {code}" if isinstance(code, int) else code
        print(f"  failed ({why}): {run.config} -> {run.runner_log}", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
