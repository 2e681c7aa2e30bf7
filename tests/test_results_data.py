"""The runner and the report neither lose nor misread a run: cut logs, reruns, one seed twice."""
import io
import os

import pytest
import torch

from test_benchmark_tools import _csv_rows, run_args, write_log

from benchmark_configs import report, run


def _config(root, name, save_dir, num_train_iter=300):
    path = root / "configs" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"algorithm: fixmatch\nsave_dir: {save_dir}\nsave_name: {name}\nnum_train_iter: {num_train_iter}\n")
    return str(path)


def _cut(path, marker, keep):
    """Cut ``path`` inside its line holding ``marker``, ``keep`` characters after the marker's start."""
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[:text.index(marker) + keep])


def test_a_finished_run_whose_log_was_cut_mid_line_is_recorded(tmp_path):
    config = _config(tmp_path, "cut", tmp_path / "saved")
    folder = tmp_path / "saved" / "cut"
    write_log(str(folder), run_args("fixmatch", 0.0, 0, save_name="cut"), [(150, 0.6, {}), (300, 0.8, {})],
              result=0.8)
    _cut(folder / "log.txt", "Model result - eval/best_acc", 20)  # killed while writing the result line
    torch.save({"model": {}, "it": 300, "best_eval_acc": 0.8, "best_it": 299}, folder / "latest_model.pth")
    results = tmp_path / "results" / "results.csv"
    out = io.StringIO()
    assert run.main([config, "--results", str(results)], out=out) == 0
    (row,) = _csv_rows(results)  # was: skipped for ever, never recorded
    assert (row["save_name"], row["finished"], row["best_it"]) == ("cut", "True", "300")
    assert float(row["best_acc"]) == pytest.approx(0.8) and float(row["final_acc"]) == pytest.approx(0.8)
    assert "recorded 1 finished run(s)" in out.getvalue()


def test_a_rerun_replaces_the_kept_log(tmp_path, monkeypatch):
    config = _config(tmp_path, "again", tmp_path / "saved", num_train_iter=300)
    folder = tmp_path / "saved" / "again"
    write_log(str(folder), run_args("fixmatch", 0.0, 0, save_name="again"), [(300, 0.7, {})], result=0.7)
    results = tmp_path / "results" / "results.csv"
    assert run.main([config, "--results", str(results)], out=io.StringIO()) == 0
    kept = results.parent / "logs" / "again" / "log.txt"
    assert "eval/best_acc : 0.7" in kept.read_text()

    # The grid's settings changed (600 iterations): the run trains again and its new log replaces the kept one.
    config = _config(tmp_path, "again", tmp_path / "saved", num_train_iter=600)

    def train(self, cmd, env, log_path, pass_fds=()):
        write_log(str(folder), run_args("fixmatch", 0.0, 0, save_name="again", num_train_iter=600),
                  [(600, 0.9, {})], result=0.9)
        return 0

    monkeypatch.setattr(run.Runner, "launch", train)
    os.remove(folder / "log.txt")  # the train command clears the folder of a new run
    assert run.main([config, "--results", str(results)], out=io.StringIO()) == 0
    (row,) = _csv_rows(results)
    assert row["num_train_iter"] == "600" and float(row["best_acc"]) == pytest.approx(0.9)
    assert kept.read_text() == (folder / "log.txt").read_text()  # was: the old log, so the report showed 0.7


def test_two_runs_of_one_setting_and_seed_are_an_error_not_two_seeds(tmp_path, capsys):
    for name in ("first_try", "second_try"):
        write_log(str(tmp_path / "runs" / name), run_args("fixmatch", 0.0, 0, save_name=name), [(300, 0.7, {})],
                  result=0.7)
    with pytest.raises(SystemExit) as exc:
        report.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert "runs first_try and second_try are the same setting and seed" in err[0] and "seed 0" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_log_cut_inside_its_result_line_does_not_report_zero(tmp_path):
    folder = tmp_path / "runs" / "fixmatch_digits_40_alpha0_0"
    write_log(str(folder), run_args("fixmatch", 0.0, 0), [(150, 0.6, {}), (300, 0.71, {})], result=0.71)
    _cut(folder / "log.txt", "Model result - eval/best_acc : 0.71", len("Model result - eval/best_acc : 0"))
    row = report.run_record(str(folder))
    assert row["finished"] is False  # a cut result line is no result
    assert row["best_acc"] == pytest.approx(0.71)  # the last evaluation's best, not the cut "0"
    out = tmp_path / "out"
    assert report.main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--include-unfinished"]) == 0
    assert "71.00" in (out / "tables.md").read_text() and "0.00" not in (out / "tables.md").read_text()


def test_include_unfinished_with_a_log_cut_inside_its_arguments_line(tmp_path, capsys):
    write_log(str(tmp_path / "runs" / "mine"), run_args("fixmatch", 0.0, 0, save_name="mine"), [])
    _cut(tmp_path / "runs" / "mine" / "log.txt", "Arguments: Namespace(", 60)
    write_log(str(tmp_path / "runs" / "fixmatch_digits_40_alpha0_0"), run_args("fixmatch", 0.0, 0),
              [(300, 0.7, {})], result=0.7)
    out = tmp_path / "out"
    assert report.main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--include-unfinished"]) == 0
    tables = (out / "tables.md").read_text()
    assert "1 run(s) left out whose log does not say their dataset and label count" in tables
    assert "**70.00**" in tables
    assert {r["save_name"] for r in _csv_rows(out / "runs.csv")} == {"mine", "fixmatch_digits_40_alpha0_0"}
