"""Structured metrics of every training run: :class:`MetricsHook` writes ``save_dir/save_name/metrics.jsonl``.

USB's LoggingHook turns ``algorithm.log_dict`` into log prose; this hook,
registered right after it for every algorithm (:func:`with_metrics_hook`,
installed by :func:`rsmatch_usb.runtime.activate`, so ``rsmatch-train`` and
``rsmatch-usb-train`` both have it), writes the same values as records
(format: :mod:`data_tools.run_metrics`): one per log step and per
evaluation, a ``run_start`` event at each start or resume with the run's
arguments, one-off events the log states only in prose, and the final
result. Only a node's main process writes, as only it logs.
"""
import math
import os
from typing import TYPE_CHECKING, Callable, Dict, Optional

from data_tools import run_metrics
from semilearn.core.hooks import Hook

if TYPE_CHECKING:
    from semilearn.core.algorithmbase import AlgorithmBase

# Logged 0/1 flags whose turn to 1 is a one-off event: RSMatch's trust line
# ("K of C class sub-queues hold >= N images at iteration I") as a record.
EVENT_FLAGS: Dict[str, str] = {"train/detector_trusted": "detector_trusted"}


def _is_main(algorithm) -> bool:
    """Whether this process logs (LoggingHook's test)."""
    return not algorithm.distributed or algorithm.rank % algorithm.ngpus_per_node == 0


class MetricsHook(Hook):
    """Appends the run's log and evaluation values, events and result to its ``metrics.jsonl``.

    Records carry ``it`` as the log lines count iterations (completed ones).
    A step that evaluated is an ``eval`` record (USB's EvaluationHook also
    evaluates at the last iteration, whether or not the log prints it), with
    ``BEST_EVAL_ACC`` and ``best_it`` as the log's evaluation line has them;
    another step at the ``num_log_iter`` cadence is a ``log`` record.
    """

    def __init__(self):
        super().__init__()
        self.writer: Optional[run_metrics.MetricsWriter] = None
        self.flags: Dict[str, bool] = {}

    def before_run(self, algorithm) -> None:
        if not _is_main(algorithm):
            return
        path = run_metrics.path_in(os.path.join(algorithm.save_dir, algorithm.save_name))
        # A resumed run whose earlier part saw an event up to its checkpoint does not report it again.
        earlier = run_metrics.read_records(path) if os.path.exists(path) else []
        self.flags = {key: any(r.get("event") == event and r.get("it", math.inf) <= algorithm.it for r in earlier)
                      for key, event in EVENT_FLAGS.items()}
        self.writer = run_metrics.MetricsWriter(path)
        self.writer.write("event", algorithm.it, event="run_start",
                          args=run_metrics.plain_values(vars(algorithm.args)))

    def after_train_step(self, algorithm) -> None:
        if self.writer is None:
            return
        it, values = algorithm.it + 1, algorithm.log_dict
        for key, event in EVENT_FLAGS.items():
            if key in values:
                on = bool(float(values[key]))
                if on and not self.flags[key]:
                    self.writer.write("event", it, event=event)
                self.flags[key] = on
        if any(key.startswith("eval/") for key in values):
            self.writer.write("eval", it, {**values, "BEST_EVAL_ACC": algorithm.best_eval_acc,
                                           "best_it": algorithm.best_it + 1})
        elif self.every_n_iters(algorithm, algorithm.num_log_iter):
            self.writer.write("log", it, values)

    def after_run(self, algorithm) -> None:
        if self.writer is None:
            return
        # EvaluationHook.after_run (higher priority, so before this) has set the result, keyed as the
        # log's "Model result - <key> : <value>" lines (eval/best_it is USB's 0-based index).
        self.writer.write("result", algorithm.it, getattr(algorithm, "results_dict", None) or {})
        self.writer.close()
        self.writer = None


def with_metrics_hook(set_hooks: Callable) -> Callable:
    """``AlgorithmBase.set_hooks`` that also registers :class:`MetricsHook`, after USB's LoggingHook.

    Every algorithm's ``set_hooks`` calls the base's first, so each gets the
    hook; at the lowest priority, registered after LoggingHook, it runs after
    every hook that fills ``log_dict``.
    """
    def set_hooks_with_metrics(self):
        set_hooks(self)
        self.register_hook(MetricsHook(), "MetricsHook", "LOWEST")
    return set_hooks_with_metrics
