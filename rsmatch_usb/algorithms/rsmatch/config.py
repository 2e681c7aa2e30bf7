"""RSMatch's settings as the plugin takes them: the exported keys (:mod:`.keys`), the plugin's own, and each one's rule.

:mod:`.keys` (exported to USB as ``config.py``) holds the keys, defaults and
help of the algorithm USB gets. The plugin adds the keys of its own features
(the other bases, the dummy head's own targets and their ``p_cutoff``, the
diagnostics) and, per key, its rule: the valid range of a number
(``(lo, hi)``, both ends included unless named in ``open``) or the choices of
a string, which :meth:`RSMatchConfig.problems` checks and from which the
train command's table of numeric keys (``rsmatch_usb.config.NUMERIC_KEYS``)
takes RSMatch's rows through :func:`ranges`. Upper bounds are sanity limits:
far above any setting that makes sense, below what exhausts memory
(``queue_size``) or turns the model to NaN within a few steps (learning
rates, loss weights). Keys marked ``diagnostic`` are for analysis, not
training (:func:`diagnostic_keys`): a run without them keeps their defaults,
and exported configs never set them.

Standard library only: the benchmark config generator loads this file by its
path, without torch, and :mod:`.keys` beside it likewise.
"""
import dataclasses
import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

INF = math.inf


def _keys_module() -> Any:
    if __package__:
        return importlib.import_module(".keys", __package__)
    # Loaded by path (benchmark_configs/generate.py): the sibling file, by path too.
    spec = importlib.util.spec_from_file_location("rsmatch_keys", os.path.join(os.path.dirname(__file__), "keys.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


keys = _keys_module()


def _setting(default: Any, help_text: str, bounds: Optional[Tuple[float, float]] = None,
             open_ends: Tuple[str, ...] = (), choices: Optional[Tuple[str, ...]] = None,
             diagnostic: bool = False) -> Any:
    """A plugin key, its rule in its metadata (an exported key's rule is in :data:`RULES`)."""
    return field(default=default, metadata=dict(help=help_text, **_rule(bounds, open_ends, choices, diagnostic)))


def _rule(bounds: Optional[Tuple[float, float]] = None, open_ends: Tuple[str, ...] = (),
          choices: Optional[Tuple[str, ...]] = None, diagnostic: bool = False) -> Dict[str, Any]:
    rule: Dict[str, Any] = {"diagnostic": diagnostic}
    if bounds is not None:
        rule.update(range=bounds, open=open_ends)
    if choices is not None:
        rule["choices"] = choices
    return rule


BASES = ("fixmatch", "flexmatch", "freematch", "softmatch")
DETECTOR_INPUTS = ("rgb", "highpass", "npr", "spectrum", "rgb+npr", "rgb+highpass")

# The rule of each exported key (those of :mod:`.keys`, which carries no ranges).
RULES: Dict[str, Dict[str, Any]] = {
    "use_detector": _rule(), "use_dummy_head": _rule(), "use_queue": _rule(),
    "lambda_syn": _rule((0, 10_000)),
    "detector_threshold": _rule((0, 1)),
    "detector_calib_per_class": _rule((0, 1_000_000)),
    "detector_calib_quantile": _rule((0, 1)),
    "detector_width": _rule((1, 1024)),
    "detector_input": _rule(choices=DETECTOR_INPUTS),
    "detector_lr": _rule((0, 10), ("lo",)),
    "detector_wd": _rule((0, 1)),
    "detector_ema_m": _rule((0, 1)),
    "detector_ema_warmup": _rule(),
    "detector_ulb_real": _rule((0, 1_000_000)),
    "pu_mass": _rule((0, 10_000), ("lo",)),
    "pu_pos_weight": _rule((0, 10_000)),
    "queue_size": _rule((1, 100_000)),
    "queue_push_classes": _rule((1, 100_000)),
    "queue_push_per_class": _rule((1, 100_000)),
    "queue_min_score": _rule((0, 1)),
    "queue_min_fill": _rule((0, 100_000)),
    "queue_gate_share": _rule((0, 1), ("lo",)),
}


@dataclass(frozen=True)
class RSMatchConfig(keys.RSMatchConfig):
    """The exported keys, then the plugin's own."""

    base_algorithm: str = _setting("fixmatch", "the USB algorithm RSMatch extends", choices=BASES)
    dummy_pseudo_label: str = _setting(
        "real", "dummy head targets: 'real' head's or the 'dummy' head's own weak-view prediction",
        choices=("real", "dummy"))
    p_cutoff: float = _setting(
        0.95, "confidence threshold of pseudo-labels (FixMatch, FlexMatch; the dummy head's own targets)",
        bounds=(0, 1))
    detector_oracle: bool = _setting(
        False, "diagnostic, not SSL: route by the unlabeled set's ground-truth synthetic flags from the first "
               "step (the detector still trains and is evaluated); the dummy head's ceiling", diagnostic=True)
    queue_workers: int = _setting(
        1, "processes reading the next step's queue images ahead (0: read on the training thread)", bounds=(0, 64),
        diagnostic=True)
    detector_eval_samples: int = _setting(4000, "unlabeled images scored at each evaluation (0: all)",
                                          bounds=(0, 10 ** 9), diagnostic=True)

    @classmethod
    def from_args(cls, args: Any) -> "RSMatchConfig":
        """The settings of a run's ``args`` (an argparse namespace); the choice keys lower-cased, as USB's are.

        A diagnostic key ``args`` lacks keeps its default (the algorithm does not take it as an argument).
        """
        values = {}
        for f in dataclasses.fields(cls):
            rule = rule_of(f)
            value = getattr(args, f.name, f.default) if rule["diagnostic"] else getattr(args, f.name)
            values[f.name] = str(value).lower() if "choices" in rule else value
        return cls(**values)

    def problems(self) -> List[str]:
        """One ``key: problem (got value)`` line per setting out of its range or choices; empty when valid."""
        out = []
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), rule_of(f)
            if "choices" in rule and value not in rule["choices"]:
                out.append(f"{f.name}: {value!r} is not one of {', '.join(rule['choices'])}")
            elif "range" in rule:
                problem = _range_problem(value, f.type, rule["range"], rule["open"])
                if problem:
                    out.append(f"{f.name}: {problem} (got {value!r})")
        if not out and self.queue_min_fill > self.queue_size:
            out.append(f"queue_min_fill: must lie in [0, queue_size={self.queue_size}] (got {self.queue_min_fill})")
        return out


def rule_of(f: dataclasses.Field) -> Mapping[str, Any]:
    """The rule of the setting ``f``: ``diagnostic``, and ``range`` and ``open``, or ``choices``, where it has them."""
    return RULES[f.name] if f.name in RULES else f.metadata


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
    return {f.name: (*rule_of(f)["range"], rule_of(f)["open"])
            for f in dataclasses.fields(RSMatchConfig) if "range" in rule_of(f)}


def diagnostic_keys() -> Tuple[str, ...]:
    """The keys for analysis, not for training (``diagnostic`` in their rule): never in an exported config."""
    return tuple(f.name for f in dataclasses.fields(RSMatchConfig) if rule_of(f)["diagnostic"])


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
