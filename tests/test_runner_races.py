"""Runners at once: no run trained twice, no finished folder cleared, no results row lost or misread."""
import csv
import io
import os
import re
import subprocess
import sys
import threading

import pytest

from conftest import REPO
from test_benchmark_tools import run_args, write_log

from benchmark_configs import report, run
from data_tools import run_folder

# Stands in for rsmatch-train: takes the run folder's lock as the train command does for a new run
# (handed over by the runner, else refused), notes its start, and writes a finished log after a while.
FAKE_TRAIN = """
import os, shutil, sys, time
from data_tools.run_folder import locked
folder, template, starts = sys.argv[1:4]
with locked(folder, clear=True):
    with open(starts, "a") as f:
        f.write(os.path.basename(folder) + "\\n")
    time.sleep(0.5)
    shutil.copyfile(template, os.path.join(folder, "log.txt"))
"""


def _config(root, name, save_dir):
    path = root / "configs" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"algorithm: fixmatch\nsave_dir: {save_dir}\nsave_name: {name}\nnum_train_iter: 300\n")
    return str(path)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.multiprocess
def test_two_runners_on_the_same_runs_train_each_once_and_lose_no_row(tmp_path, monkeypatch):
    """The probe: two runners on one grid trained every run twice (the second clearing the first's finished
    folder) and, sharing a results file, lost rows. Here each run starts once and every row is kept."""
    names = [f"run{i}" for i in range(4)]
    save_dir = tmp_path / "saved"
    for name in names:
        _config(tmp_path, name, save_dir)
        write_log(str(tmp_path / "templates" / name), run_args("fixmatch", 0.0, names.index(name), save_name=name),
                  [(300, 0.7, {})], result=0.7)
    starts = tmp_path / "starts.txt"

    def fake_command(r, train_args=()):
        return [sys.executable, "-c", FAKE_TRAIN, r.folder, str(tmp_path / "templates" / r.save_name / "log.txt"),
                str(starts)]

    monkeypatch.setattr(run, "command", fake_command)
    monkeypatch.setenv("PYTHONPATH", REPO)
    results = tmp_path / "results" / "results.csv"
    codes, outs = {}, {}

    # In opposite orders: they meet half-way, where one finds a run the other is training or has just finished.
    order = {"a": names, "b": names[::-1]}

    def runner(key):
        outs[key] = io.StringIO()
        configs = [str(tmp_path / "configs" / f"{name}.yaml") for name in order[key]]
        codes[key] = run.main(configs + ["--results", str(results)], out=outs[key])

    threads = [threading.Thread(target=runner, args=(key,)) for key in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    text = outs["a"].getvalue() + outs["b"].getvalue()
    assert sorted(starts.read_text().split()) == names, text  # each run started once
    assert set(codes.values()) <= {0, 1}, text  # 1: a run was in use by the other runner when this one came to it
    assert sorted(r["save_name"] for r in _rows(results)) == names
    for name in names:  # every finished folder kept its log
        assert report.parse_log(str(save_dir / name / "log.txt"))["results"]["eval/best_acc"] == 0.7
    assert not [n for n in os.listdir(results.parent) if n.endswith(".tmp")]


def test_a_run_finished_since_start_up_is_not_run_again(tmp_path, monkeypatch):
    """Runner B inspected the run as new at start-up; runner A has finished it since: B must not clear it."""
    config = _config(tmp_path, "late", tmp_path / "saved")
    stale = run.inspect(run.collect(None, [config], None)[0])
    assert stale.status == "new"
    write_log(stale.folder, run_args("fixmatch", 0.0, 0, save_name="late"), [(300, 0.7, {})], result=0.7)
    before = open(os.path.join(stale.folder, "log.txt")).read()
    launched = []
    monkeypatch.setattr(run.Runner, "launch", lambda *a, **k: launched.append(a) or 0)
    runner = run.Runner(1, [], [], out=io.StringIO())
    runner.total = 1
    _, outcome, _ = runner.run_one(stale)
    assert outcome == "finished" and not launched
    assert open(os.path.join(stale.folder, "log.txt")).read() == before


HOLD_LOCK = """
import sys, time
from data_tools.run_folder import locked
with locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.multiprocess
def test_a_run_in_use_elsewhere_is_left_alone(tmp_path, monkeypatch):
    config = _config(tmp_path, "busy", tmp_path / "saved")
    target = run.inspect(run.collect(None, [config], None)[0])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, target.folder], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        launched = []
        monkeypatch.setattr(run.Runner, "launch", lambda *a, **k: launched.append(a) or 0)
        out = io.StringIO()
        runner = run.Runner(1, [], [], out=out)
        runner.total = 1
        assert runner.run_one(target)[1] == "busy" and not launched
        assert f"in use by another run (pid {holder.pid})" in out.getvalue()
    finally:
        holder.kill()
        holder.wait()


def _finished_run(tmp_path, name, acc=0.7, seed=0):
    cfg = _config(tmp_path, name, tmp_path / "saved")
    r = run.inspect(run.collect(None, [cfg], None)[0])
    write_log(r.folder, run_args("fixmatch", 0.0, seed, save_name=name), [(300, acc, {})], result=acc)
    return run.inspect(r)


def test_results_writes_merge_with_the_file_on_disk_and_keep_unknown_columns(tmp_path):
    path = tmp_path / "results" / "results.csv"
    first = run.Results(str(path))
    first.record(_finished_run(tmp_path, "a"))
    # A user's own column, with a value on the row of run a.
    rows = _rows(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["reviewed_by"])
        writer.writeheader()
        writer.writerow(dict(rows[0], reviewed_by="ana"))
    stale = run.Results(str(path))  # two runners' copies, both taken now
    other = run.Results(str(path))
    other.record(_finished_run(tmp_path, "b", seed=1))
    stale.record(_finished_run(tmp_path, "c", seed=2))  # writes from its copy: used to drop b and reviewed_by
    stale.record(_finished_run(tmp_path, "a", acc=0.8))  # a rerun of a keeps its reviewer
    rows = {r["save_name"]: r for r in _rows(path)}
    assert sorted(rows) == ["a", "b", "c"]
    assert rows["a"]["reviewed_by"] == "ana" and rows["b"]["reviewed_by"] == ""
    assert float(rows["a"]["best_acc"]) == pytest.approx(0.8)
    assert list(_rows(path)[0])[-1] == "reviewed_by"
    assert not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]


def test_concurrent_results_writes_lose_no_row(tmp_path):
    path = tmp_path / "results.csv"
    finished = [_finished_run(tmp_path, f"r{i:02d}", seed=i) for i in range(16)]
    writers = [run.Results(str(path)) for _ in range(4)]  # four runners, each with its own (empty) copy
    threads = [threading.Thread(target=lambda w=w, k=k: [w.record(r) for r in finished[k::4]])
               for k, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["save_name"] for r in _rows(path)) == [r.save_name for r in finished]


TORN = {
    "short row": lambda good: good + b"fixmatch,fixmatch,digits\n",
    "torn timestamp": lambda good: good + b"026-12-04 18:21:02\n",
    "NUL": lambda good: good.replace(b"fixmatch,fixmatch", b"fixmatch,fix\x00match", 1),
    "Latin-1": lambda good: good.replace(b"2 cores", b"2 c\xf6res", 1),
}


@pytest.fixture
def good_results(tmp_path):
    path = tmp_path / "results" / "results.csv"
    run.Results(str(path)).record(_finished_run(tmp_path, "a"))
    return path


@pytest.mark.parametrize("damage", list(TORN))
def test_a_damaged_results_row_is_one_error_line_for_runner_and_report(tmp_path, good_results, capsys, damage):
    good_results.write_bytes(TORN[damage](good_results.read_bytes()))
    before = sorted(os.listdir(good_results.parent)), good_results.read_bytes()
    config = _config(tmp_path, "b", tmp_path / "saved")
    with pytest.raises(SystemExit) as exc:
        run.main([config, "--results", str(good_results)], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert re.search(r"results\.csv: line [23] ", err[0]) and "repair or delete that line" in err[0], err
    assert (sorted(os.listdir(good_results.parent)), good_results.read_bytes()) == before  # nothing written
    with pytest.raises(SystemExit) as exc:
        report.main(["--results", str(good_results), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "repair or delete that line" in err[0], err


def test_results_pointing_at_a_folder_is_one_error_line(tmp_path, capsys):
    config = _config(tmp_path, "a", tmp_path / "saved")
    with pytest.raises(SystemExit) as exc:
        run.main([config, "--results", str(tmp_path)], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "is a folder; give the path of a CSV file" in err[0], err


def test_the_lock_is_handed_to_the_training(tmp_path):
    """What the runner does around a training: the child uses the lock the runner holds instead of being refused."""
    folder = str(tmp_path / "saved" / "handed")
    code = ("import sys\nfrom data_tools.run_folder import locked\n"
            "with locked(sys.argv[1], clear=True):\n    print('trained')\n")
    with run_folder.locked(folder) as fd:
        alone = subprocess.run([sys.executable, "-c", code, folder], cwd=REPO, capture_output=True, text=True)
        handed = subprocess.run([sys.executable, "-c", code, folder], cwd=REPO, capture_output=True, text=True,
                                pass_fds=(fd,), env={**os.environ, **run_folder.hand_lock_env(fd, folder)})
    assert "in use by another run" in alone.stderr
    assert handed.returncode == 0 and handed.stdout.strip() == "trained", handed.stderr
