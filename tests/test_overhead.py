"""benchmark_configs/overhead.py: the step-time comparison and RSMatch's per-component breakdown, on CPU."""
import json

import pytest

from benchmark_configs import overhead


@pytest.mark.slow
def test_overhead_reports_ratio_and_breakdown(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    # Trusted from the first step, so the queue draws and pushes are timed too.
    assert overhead.main(["--device", "cpu", "--steps", "3", "--rounds", "2", "--warmup", "2", "--batches", "2",
                          "--no-memory", "--breakdown", "--json", str(out),
                          "--candidate-set", "queue_min_fill=0", "queue_min_score=0.0",
                          "detector_calib_per_class=0", "queue_workers=0"]) == 0
    result = json.loads(out.read_text())
    assert set(result["step_time_s"]) == {"fixmatch", "rsmatch"}
    assert result["ratio_of_medians"] > 0
    parts = result["breakdown_ms"]
    labels = {label for label, _, _ in overhead.BREAKDOWN}
    assert set(parts) - {"whole step"} <= labels
    for must in ("detector scoring", "detector training step", "queue update",
                 "queue draw on the training thread (take)"):
        assert any(label.startswith(must) and parts[label] > 0 for label in parts), must
    inside = sum(ms for label, ms in parts.items() if label != "whole step" and not label.startswith("  "))
    assert 0 < inside < parts["whole step"]
    printed = capsys.readouterr().out
    assert "with a timer around each addition" in printed and "queue update" in printed


def test_breakdown_times_what_the_algorithm_has_and_restores_it():
    class Queue:
        def update(self):
            return "pushed"

    class Alg:
        detector = None  # a base algorithm, or RSMatch with use_detector False
        csqueue = Queue()

    class Stepper:
        alg = Alg()
        calls = []

        def step(self):
            self.calls.append(self.alg.csqueue.update())

    stepper = Stepper()
    parts = overhead.time_components(stepper, "cpu", 2)
    assert stepper.calls == ["pushed", "pushed"]
    assert list(parts) == ["whole step", "queue update (push the top-scoring samples)"]
    assert 0 < parts["queue update (push the top-scoring samples)"] <= parts["whole step"]
    assert "update" not in vars(stepper.alg.csqueue)  # the timer is gone: the class's own method again
