"""benchmark_configs/gpu_selfcheck.py on the CPU: its table, exit codes and check isolation."""
import json
import os
import subprocess
import sys

import pytest
import pytest
import torch

from conftest import REPO

SCRIPT = os.path.join(REPO, "benchmark_configs", "gpu_selfcheck.py")


def test_without_a_gpu_it_is_one_error_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from benchmark_configs import gpu_selfcheck

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_selfcheck.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu_selfcheck: error: no CUDA GPU is visible")
    assert not (tmp_path / "out").exists()


def test_a_failing_check_does_not_hide_the_others(tmp_path):
    from benchmark_configs import gpu_selfcheck

    opts = gpu_selfcheck.build_parser().parse_args(["--out", str(tmp_path)])
    checker = gpu_selfcheck.Checker(opts, "cpu", str(tmp_path), str(tmp_path))

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    checker.guarded("first", broken)
    checker.guarded("second", lambda: checker.add("second", "PASS"))
    checker.guarded("third", broken, skip="needs 2 GPUs")
    opts.budget = 0
    checker.guarded("fourth", lambda: checker.add("fourth", "PASS"))
    assert [(r["check"], r["status"]) for r in checker.rows] == [
        ("first", "FAIL"), ("second", "PASS"), ("third", "SKIP"), ("fourth", "FAIL")]
    assert "illegal memory access" in checker.rows[0]["detail"]
    assert "budget" in checker.rows[3]["detail"]


@pytest.mark.multiprocess
@pytest.mark.timeout(1560)
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(1500)
def test_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, SCRIPT, "--out", str(out), "--allow-cpu", "--net", "resnet_micro", "--img-size", "16",
           "--batch-size", "8", "--uratio", "2", "--iters", "4", "--warmup", "1", "--num-workers", "0",
           "--algorithms", "fixmatch", "rsmatch", "--amp", "off", "--timeout", "400", "--budget", "1200"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "selfcheck.json").read_text())
    rows = {row["check"]: row for row in report["rows"]}
    assert [(r["check"], r["status"]) for r in report["rows"]] == [
        ("train fixmatch", "PASS"), ("train rsmatch", "PASS"), ("step time rsmatch / fixmatch", "PASS"),
        ("resume CPU checkpoint", "PASS"), ("DDP 2 GPUs (nccl)", "SKIP")]
    for name in ("train fixmatch", "train rsmatch"):
        assert rows[name]["steps"] == 4 and rows[name]["median_step_ms"] > 0
        assert rows[name]["observed"]["cuda_reseeds_during_training"] == 0
    assert rows["train rsmatch"]["observed"]["detector_score_dtypes"] == ["float32"]
    ratio = rows["step time rsmatch / fixmatch"]["ratio"]
    assert abs(ratio - rows["train rsmatch"]["median_step_ms"] / rows["train fixmatch"]["median_step_ms"]) < 1e-2
    resumed = rows["resume CPU checkpoint"]["observed"]
    assert (resumed["first_it"], resumed["final_it"], resumed["steps"]) == (3, 6, 3)

    table = (out / "selfcheck.md").read_text()
    assert "| train rsmatch | rsmatch | off | PASS | 4 |" in table
    assert "| DDP 2 GPUs (nccl) |  |  | SKIP |" in table
    assert "all 5 checks passed or were skipped" in table
    assert table in proc.stdout
    assert sorted(os.listdir(out / "logs")) == sorted(
        f"{name}{ext}" for name in ("fixmatch_amp_off", "rsmatch_amp_off", "resume_cpu_part", "resume_device_part")
        for ext in (".log", ".config.yaml"))
