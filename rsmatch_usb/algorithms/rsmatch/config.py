"""RSMatch's settings: one typed dataclass, the single source of their keys, defaults, ranges and help.

USB's argument list (``rs_arguments`` in :mod:`.rsmatch`), the components'
constructor defaults (:class:`~.detector.Detector`, :class:`~.router.Router`,
:class:`~.trainer.DetectorTrainer`), the benchmark config generator and the
USB export all read :class:`RSMatchConfig`, so a default cannot drift between
them. Each numeric field carries its valid range as field metadata
(``metadata["range"] = (lo, hi)``, both ends included unless named in
``metadata["open"]``), which :meth:`RSMatchConfig.problems` checks and from
which a command-line front end can take its table of numeric keys
through :func:`ranges`. Upper bounds are sanity limits, as in that table: far above
any setting that makes sense, below what exhausts memory (``queue_size``)
or turns the model to NaN within a few steps (learning rates, loss weights).
Keys marked ``metadata["diagnostic"]`` are for analysis, not training
(:func:`diagnostic_keys`): RSMatch's own argument list leaves them out and a
run without them keeps their defaults; exported configs never set them.

Standard library only: the config generator loads this file without torch.
"""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

INF = math.inf


def _setting(default: Any, help_text: str, bounds: Optional[Tuple[float, float]] = None,
             open_ends: Tuple[str, ...] = (), choices: Optional[Tuple[str, ...]] = None,
             diagnostic: bool = False) -> Any:
    metadata = {"help": help_text, "diagnostic": diagnostic}
    if bounds is not None:
        metadata["range"] = bounds
        metadata["open"] = open_ends
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RSMatchConfig:
    """Every key RSMatch adds to its base algorithm's, with its default (the paper gives none; ours)."""

    base_algorithm: str = _setting("fixmatch", "the USB algorithm RSMatch extends",
                                   choices=("fixmatch", "flexmatch", "freematch", "softmatch"))
    # ablation switches
    use_detector: bool = _setting(True, "False: every unlabeled sample is real (the base)")
    use_dummy_head: bool = _setting(True, "False: samples judged synthetic are discarded (the filter baseline)")
    use_queue: bool = _setting(True, "False: the detector trains on labeled vs unlabeled (PU) throughout")
    # losses and routing
    lambda_syn: float = _setting(1.0, "weight of the dummy head's unlabeled loss", bounds=(0, 10_000))
    dummy_pseudo_label: str = _setting(
        "real", "dummy head targets: 'real' head's or the 'dummy' head's own weak-view prediction",
        choices=("real", "dummy"))
    p_cutoff: float = _setting(
        0.95, "confidence threshold of pseudo-labels (FixMatch, FlexMatch; the dummy head's own targets)",
        bounds=(0, 1))
    detector_threshold: float = _setting(
        0.5, "score at or above which a sample is synthetic (raised by the calibration images' scores)",
        bounds=(0, 1))
    detector_calib_per_class: int = _setting(
        1, "labeled images per class held out of the detector's training to calibrate its threshold",
        bounds=(0, 1_000_000))
    detector_calib_quantile: float = _setting(
        1.0, "the floor is this quantile of the held-out images' scores (1: their maximum)", bounds=(0, 1))
    # detector
    detector_width: int = _setting(16, "detector widths are w, 2w, 4w", bounds=(1, 1024))
    detector_input: str = _setting(
        "rgb+npr", "what the detector sees: rgb (the image), highpass, npr (residuals keeping up-sampling traces), "
               "spectrum, or several joined by '+' (rgb+npr)",
        choices=("rgb", "highpass", "npr", "spectrum", "rgb+npr", "rgb+highpass"))
    detector_lr: float = _setting(3e-3, "detector Adam learning rate", bounds=(0, 10), open_ends=("lo",))
    detector_wd: float = _setting(5e-3, "detector Adam weight decay (keeps it from memorizing the few labeled "
                                        "images)", bounds=(0, 1))
    detector_ema_m: float = _setting(0.99, "EMA momentum of the scoring copy of the detector (0: the detector "
                                           "itself)", bounds=(0, 1))
    detector_ulb_real: int = _setting(
        0, "the detector also trains on this many lowest-scoring unlabeled samples (of those judged real) as real",
        bounds=(0, 1_000_000))
    detector_oracle: bool = _setting(
        False, "diagnostic, not SSL: route by the unlabeled set's ground-truth synthetic flags from the first "
               "step (the detector still trains and is evaluated); the dummy head's ceiling", diagnostic=True)
    detector_ema_warmup: bool = _setting(
        True, "EMA momentum min(detector_ema_m, 1 - 1/(t+1)) at detector step t: early scores follow the detector")
    pu_mass: float = _setting(
        1 / 3, "bootstrap mass of the unlabeled ('possibly synthetic') side relative to the labeled side",
        bounds=(0, 10_000), open_ends=("lo",))
    pu_pos_weight: float = _setting(
        0.0, "bootstrap weight of each unlabeled sample, overriding pu_mass; 0: pu_mass * num_lb / num_ulb",
        bounds=(0, 10_000))
    # CSQueue
    queue_size: int = _setting(128, "K: capacity of each class sub-queue", bounds=(1, 100_000))
    queue_push_classes: int = _setting(5, "P: classes served per step", bounds=(1, 100_000))
    queue_push_per_class: int = _setting(4, "Q: top-scoring images pushed per served class", bounds=(1, 100_000))
    queue_min_score: float = _setting(0.5, "only samples scoring at least this are pushed", bounds=(0, 1))
    queue_min_fill: int = _setting(
        16, "bootstrap ends once queue_gate_share of the sub-queues hold this many images (at most queue_size)",
        bounds=(0, 100_000))
    queue_gate_share: float = _setting(
        1.0, "share of the class sub-queues that must hold queue_min_fill images to end the bootstrap",
        bounds=(0, 1), open_ends=("lo",))
    queue_workers: int = _setting(
        1, "processes reading the next step's queue images ahead (0: read on the training thread)", bounds=(0, 64),
        diagnostic=True)
    # analysis
    detector_eval_samples: int = _setting(4000, "unlabeled images scored at each evaluation (0: all)",
                                          bounds=(0, 10 ** 9), diagnostic=True)

    @classmethod
    def from_args(cls, args: Any) -> "RSMatchConfig":
        """The settings of a run's ``args`` (an argparse namespace); the choice keys lower-cased, as USB's are.

        A diagnostic key ``args`` lacks keeps its default (the algorithm does not take it as an argument).
        """
        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(args, f.name, f.default) if f.metadata["diagnostic"] else getattr(args, f.name)
            values[f.name] = str(value).lower() if "choices" in f.metadata else value
        return cls(**values)

    def problems(self) -> List[str]:
        """One ``key: problem (got value)`` line per setting out of its range or choices; empty when valid."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                out.append(f"{f.name}: {value!r} is not one of {', '.join(f.metadata['choices'])}")
            elif "range" in f.metadata:
                problem = _range_problem(value, f.type, f.metadata["range"], f.metadata["open"])
                if problem:
                    out.append(f"{f.name}: {problem} (got {value!r})")
        if not out and self.queue_min_fill > self.queue_size:
            out.append(f"queue_min_fill: must lie in [0, queue_size={self.queue_size}] (got {self.queue_min_fill})")
        return out


def _range_problem(value: Any, kind: Any, bounds: Tuple[float, float], open: Tuple[str, ...]) -> Optional[str]:
    """What is wrong with ``value`` for a numeric field of type ``kind``, or None."""
    lo, hi = bounds
    integer = kind in (int, "int")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        return f"must be {'an integer' if integer else 'a number'}"
    above = value > lo if "lo" in open else value >= lo
    below = value < hi if "hi" in open else value <= hi
    # NaN fails both comparisons, infinity the upper one (every range is finite or open at infinity).
    if above and below and not math.isinf(value):
        return None
    if hi == INF:
        return f"must be {'>' if 'lo' in open else '>='} {lo:g}"
    return f"must lie in {'(' if 'lo' in open else '['}{lo:g}, {hi:g}{')' if 'hi' in open else ']'}"


def ranges() -> Dict[str, Tuple[float, float, Tuple[str, ...]]]:
    """``{key: (lo, hi, open ends)}`` of every numeric setting, for a central range table."""
    return {f.name: (*f.metadata["range"], f.metadata["open"])
            for f in dataclasses.fields(RSMatchConfig) if "range" in f.metadata}


def diagnostic_keys() -> Tuple[str, ...]:
    """The keys for analysis, not for training (``diagnostic`` in their metadata): never in an exported config."""
    return tuple(f.name for f in dataclasses.fields(RSMatchConfig) if f.metadata["diagnostic"])


def defaults() -> Dict[str, Any]:
    """``{key: default}`` of every setting, in the argument list's order."""
    return dataclasses.asdict(RSMatchConfig())


def settings(**overrides: Any) -> Dict[str, Any]:
    """``overrides`` checked against :class:`RSMatchConfig` (known keys, valid values); returns them unchanged.

    For tables of RSMatch keys kept elsewhere (the benchmark config generator),
    so that a misspelt key or a value out of range fails where it is written.
    """
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(RSMatchConfig)})
    if unknown:
        raise ValueError(f"not RSMatch settings: {', '.join(unknown)}")
    problems = dataclasses.replace(RSMatchConfig(), **overrides).problems()
    if problems:
        raise ValueError("; ".join(problems))
    return dict(overrides)
