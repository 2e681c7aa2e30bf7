"""Structured metrics: every training writes metrics.jsonl; the report reads it and gives the log's row."""
import io
import json
import math
import os
import shutil

import pytest

from conftest import run_train, tiny_config
from test_benchmark_tools import _csv_rows, run_args, write_log

from benchmark_configs import report, run
from data_tools import run_metrics

# Two RSMatch iterations on the contaminated digits: a log line at 1 and 2, an evaluation at 2, trusted at 1.
RSMATCH = dict(algorithm="rsmatch", detector_width=4, synthetic_source="bundled", synthetic_ratio=1.0, queue_size=4,
               queue_min_fill=0, queue_min_score=0.0, detector_calib_per_class=0, queue_workers=0)


@pytest.fixture(scope="module")
def rsmatch_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("metrics")
    code, run_dir = run_train(tmp_path, tiny_config(tmp_path, name="rs", **RSMATCH))
    assert code == 0
    return run_dir


def _records(run_dir):
    return run_metrics.read_records(run_metrics.path_in(run_dir))


def test_a_training_writes_its_log_and_evaluation_values_events_and_result(rsmatch_run):
    records = _records(rsmatch_run)
    assert [(r["kind"], r["it"], r.get("event")) for r in records] == [
        ("event", 0, "run_start"), ("event", 1, "detector_trusted"), ("log", 1, None), ("eval", 2, None),
        ("result", 2, None)]
    start, _, logged, evaluated, result = records
    assert start["args"]["algorithm"] == "rsmatch" and start["args"]["num_train_iter"] == 2
    assert {"train/sup_loss", "train/syn_ratio", "train/routing_threshold", "train/queue_fill_min",
            "lr"} <= set(logged)
    assert {"train/sup_loss", "eval/top-1-acc", "eval/detector_auroc", "eval/queue_purity"} <= set(evaluated)
    assert all(isinstance(r["time"], float) for r in records)
    assert set(result) - {"kind", "it", "time"} == {"eval/best_acc", "eval/best_it"}
    # Keys and values as in the log: its evaluation line, to the 4 decimals the log prints.
    logged_eval = report.parse_log(os.path.join(rsmatch_run, "log.txt"))["evals"][2]
    assert set(evaluated) - set(run_metrics.RECORD_KEYS) == set(logged_eval)
    assert all(evaluated[k] == pytest.approx(v, abs=5e-5) for k, v in logged_eval.items())
    assert result["eval/best_acc"] == evaluated["BEST_EVAL_ACC"] and result["eval/best_it"] == 1  # USB logs it - 1


def test_the_report_row_from_metrics_is_the_row_from_the_log(rsmatch_run, tmp_path):
    from_metrics = report.run_record(rsmatch_run)
    assert report.parse_metrics(run_metrics.path_in(rsmatch_run)) is not None  # the row above came from it
    only_log = tmp_path / os.path.basename(rsmatch_run)
    only_log.mkdir()
    shutil.copy(os.path.join(rsmatch_run, "log.txt"), only_log)
    from_log = report.run_record(str(only_log))
    assert from_metrics["trusted_it"] == from_log["trusted_it"] == 1
    assert from_metrics["finished"] and from_metrics["detector_auroc"] > 0
    for field in report.CSV_FIELDS:
        if field in ("run_dir", "wall_time_s"):
            continue
        ours, theirs = from_metrics[field], from_log[field]
        if isinstance(theirs, float):  # the log rounds to 4 decimals
            assert ours == pytest.approx(theirs, abs=5e-5, nan_ok=True), field
        else:
            assert ours == theirs, field
    # The log counts from the command's first line, the metrics from the start of training.
    assert 0 < from_metrics["wall_time_s"] <= from_log["wall_time_s"] + 0.1


def test_a_resumed_run_appends_and_its_later_records_win(tmp_path):
    cfg = tiny_config(tmp_path, name="resumed", num_train_iter=2)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    code, _ = run_train(tmp_path, dict(cfg, num_train_iter=4, num_eval_iter=2), "--resume", "True", "--load_path",
                        os.path.join(run_dir, "latest_model.pth"))
    assert code == 0
    records = _records(run_dir)
    starts = [r["it"] for r in records if r.get("event") == "run_start"]
    assert starts == [0, 2]
    assert [r["it"] for r in records if r["kind"] == "eval"] == [2, 4]
    row = report.run_record(run_dir)
    assert (row["final_it"], row["iterations"], row["num_train_iter"], row["finished"]) == (4, 4, 4, True)


def _write(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _fake_records(acc_at_2=0.5):
    args = run_args("fixmatch", 0.0, 0)
    return [{"kind": "event", "it": 0, "time": 100.0, "event": "run_start", "args": args},
            {"kind": "log", "it": 1, "time": 101.0, "train/sup_loss": 1.0},
            {"kind": "eval", "it": 2, "time": 102.0, "train/sup_loss": 0.9, "eval/top-1-acc": acc_at_2,
             "BEST_EVAL_ACC": acc_at_2, "best_it": 2}]


def test_a_truncated_last_line_is_ignored_and_cut_before_a_resume_appends(tmp_path):
    folder = tmp_path / "cut"
    folder.mkdir()
    path = run_metrics.path_in(str(folder))
    _write(path, _fake_records())
    with open(path, "a") as f:
        f.write('{"kind": "eval", "it": 4, "time": 104.0, "eval/top-1-acc": 0.')  # killed mid-record
    parsed = report.parse_metrics(path)
    assert sorted(parsed["evals"]) == [2] and parsed["iterations"] == 2
    row = report.run_record(str(folder))
    assert (row["final_acc"], row["final_it"], row["best_acc"], row["finished"]) == (0.5, 2, 0.5, False)
    # A resume's writer cuts the torn line, so its records start on a line of their own.
    writer = run_metrics.MetricsWriter(path)
    writer.write("event", 2, event="run_start", args=run_args("fixmatch", 0.0, 0))
    writer.write("eval", 4, {"eval/top-1-acc": 0.75, "BEST_EVAL_ACC": 0.75, "best_it": 4, "eval/loss": math.nan})
    writer.close()
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 5 and all(json.loads(line) for line in lines)
    parsed = report.parse_metrics(path)
    assert parsed["evals"][4]["eval/top-1-acc"] == 0.75 and math.isnan(parsed["evals"][4]["eval/loss"])


def test_a_later_record_wins_for_its_iteration_and_a_resumed_file_falls_back_to_the_log(tmp_path):
    folder = tmp_path / "fixmatch_digits_40_alpha0_0"
    folder.mkdir()
    path = run_metrics.path_in(str(folder))
    resumed = [{"kind": "event", "it": 1, "time": 200.0, "event": "run_start", "args": run_args("fixmatch", 0.0, 0)},
               {"kind": "eval", "it": 2, "time": 201.0, "eval/top-1-acc": 0.6, "BEST_EVAL_ACC": 0.6, "best_it": 2},
               {"kind": "result", "it": 2, "time": 202.0, "eval/best_acc": 0.6, "eval/best_it": 1}]
    _write(path, _fake_records() + resumed)
    parsed = report.parse_metrics(path)
    assert parsed["evals"][2]["eval/top-1-acc"] == 0.6 and parsed["results"]["eval/best_acc"] == 0.6
    assert parsed["wall_time_s"] == pytest.approx(2.0 + 2.0)  # the hour between the two starts is not counted
    # A file begun by a resume (the run's first part trained without metrics): the log holds both parts.
    _write(path, resumed)
    assert report.parse_metrics(path) is None
    write_log(str(folder), run_args("fixmatch", 0.0, 0), [(2, 0.4, {})], result=0.4)
    assert report.run_record(str(folder))["final_acc"] == pytest.approx(0.4)


def test_the_runner_keeps_the_metrics_beside_the_log_and_the_report_reads_them(tmp_path):
    saved = tmp_path / "saved"
    folder = saved / "kept"
    write_log(str(folder), run_args("fixmatch", 0.0, 0, save_name="kept", num_train_iter=2), [(2, 0.5, {})],
              result=0.5)
    records = _fake_records(acc_at_2=0.625)
    records[0]["args"].update(save_name="kept", num_train_iter=2)
    records.append({"kind": "result", "it": 2, "time": 103.0, "eval/best_acc": 0.625, "eval/best_it": 1})
    _write(run_metrics.path_in(str(folder)), records)
    config = tmp_path / "kept.yaml"
    config.write_text(f"algorithm: fixmatch\nsave_dir: {saved}\nsave_name: kept\nnum_train_iter: 2\n")
    results = tmp_path / "results" / "results.csv"
    assert run.main([str(config), "--results", str(results)], out=io.StringIO()) == 0
    kept = results.parent / "logs" / "kept"
    assert (kept / "metrics.jsonl").read_bytes() == (folder / "metrics.jsonl").read_bytes()
    (row,) = _csv_rows(results)
    assert float(row["best_acc"]) == 0.625  # the row came from the metrics, not the log's 0.5
    out = tmp_path / "report"
    assert report.main(["--runs", str(results.parent / "logs"), "--out", str(out)]) == 0
    assert float(_csv_rows(out / "runs.csv")[0]["final_acc"]) == 0.625
