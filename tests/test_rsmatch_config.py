"""RSMatchConfig: the one source of RSMatch's keys, defaults and help (the exported ones in keys.py), each key's
rule (config.py), and everything that reads them."""
import dataclasses
import inspect
import math

import pytest

from rsmatch_usb.algorithms.rsmatch import config
from rsmatch_usb.algorithms.rsmatch.config import RSMatchConfig

FIELDS = {f.name: f for f in dataclasses.fields(RSMatchConfig)}
RULES = {name: config.rule_of(f) for name, f in FIELDS.items()}
NUMERIC = [name for name in FIELDS if "range" in RULES[name]]
EXPORTED = [f.name for f in dataclasses.fields(config.keys.RSMatchConfig)]


def test_every_setting_has_help_and_every_number_a_range():
    assert all(f.metadata["help"] for f in FIELDS.values())
    assert set(NUMERIC) == {name for name, f in FIELDS.items() if f.type in (int, float)}
    assert set(config.ranges()) == set(NUMERIC)
    assert RSMatchConfig().problems() == []
    # The exported keys come first, each with its rule in RULES; the plugin's own carry theirs.
    assert list(FIELDS)[:len(EXPORTED)] == EXPORTED and set(config.RULES) == set(EXPORTED)


def test_the_argument_list_is_the_config():
    from semilearn.algorithms.utils import str2bool

    from rsmatch_usb.algorithms.rsmatch.plugin import rs_arguments

    arguments = rs_arguments(diagnostic=True)
    assert [a.name for a in arguments] == [f"--{name}" for name in FIELDS]
    # The algorithm's own list (the USB export's) leaves the diagnostic keys out; the plugin's has them.
    diagnostic = [name for name in FIELDS if RULES[name]["diagnostic"]]
    assert config.diagnostic_keys() == tuple(diagnostic) == ("detector_oracle", "queue_workers",
                                                             "detector_eval_samples")
    assert [a.name for a in rs_arguments()] == [f"--{name}" for name in FIELDS if name not in diagnostic]
    for argument in arguments:
        f = FIELDS[argument.name[2:]]
        assert argument.default == f.default and argument.help.startswith(f.metadata["help"])
        assert argument.type is (str2bool if f.type is bool else f.type)


def test_component_defaults_are_the_config():
    from rsmatch_usb.algorithms.rsmatch.detector import Detector
    from rsmatch_usb.algorithms.rsmatch.router import Router
    from rsmatch_usb.algorithms.rsmatch.trainer import DetectorTrainer

    keys = {Detector: dict(width="detector_width", lr="detector_lr", weight_decay="detector_wd",
                           ema_m="detector_ema_m", ema_warmup="detector_ema_warmup"),
            Router: dict(detector_threshold="detector_threshold", calib_quantile="detector_calib_quantile",
                         queue_min_score="queue_min_score", queue_min_fill="queue_min_fill",
                         queue_gate_share="queue_gate_share"),
            DetectorTrainer: dict(use_queue="use_queue", pu_mass="pu_mass", pu_pos_weight="pu_pos_weight",
                                  ulb_real="detector_ulb_real")}
    for component, names in keys.items():
        parameters = inspect.signature(component).parameters
        for parameter, key in names.items():
            assert parameters[parameter].default == FIELDS[key].default, (component.__name__, parameter)


def test_the_config_generator_reads_the_config():
    from benchmark_configs import generate

    assert generate.RSMATCH_DEFAULTS == config.defaults()
    _, keys = generate.algorithm_keys("rsmatch", "digits", 40, "embedded")
    assert all(keys[k] == FIELDS[k].default for k in ("use_detector", "use_dummy_head", "use_queue"))
    assert generate.label_of({"algorithm": "rsmatch"}) == "rsmatch"
    with pytest.raises(ValueError, match="queue_sise"):
        config.settings(queue_sise=8)
    with pytest.raises(ValueError, match="queue_min_fill"):
        config.settings(queue_size=8, queue_min_fill=9)


def test_the_base_algorithms_are_the_variants():
    from semilearn.core.utils import ALGORITHMS

    from semilearn.algorithms.fixmatch import FixMatch

    from rsmatch_usb.algorithms.rsmatch import RSMatch, RSMixin, plugin

    assert tuple(plugin.RS_VARIANTS) == RULES["base_algorithm"]["choices"]
    # The exported RSMatch is RSMatch on FixMatch; the plugin registers the exported mixin on every base, with
    # its own features. Only its arguments have the plugin's keys (the diagnostic ones among them).
    assert ALGORITHMS["rsmatch"] is plugin.RSMatch and issubclass(plugin.RS_VARIANTS["fixmatch"], RSMatch)
    assert all(issubclass(variant, RSMixin) for variant in plugin.RS_VARIANTS.values())
    exported = [a.name[2:] for a in RSMatch.get_argument()]
    assert exported[:len(EXPORTED)] == EXPORTED
    assert set(exported) - set(EXPORTED) == {a.name[2:] for a in FixMatch.get_argument()}
    registered = [a.name[2:] for a in plugin.RSMatch.get_argument()]
    assert set(config.diagnostic_keys()) <= set(registered) - set(exported)
    assert not set(config.diagnostic_keys()) & set(exported) and "base_algorithm" not in exported
    assert registered[:len(FIELDS)] == list(FIELDS)  # RSMatch's keys first, in the config's order


@pytest.mark.parametrize("name", NUMERIC)
def test_each_number_out_of_its_range_is_a_problem_naming_it(name):
    lo, hi, open_ends = config.ranges()[name]
    integer = FIELDS[name].type is int
    bad = [float("nan"), "1", True, lo - 1]
    if hi != math.inf:
        bad.append(hi + 1)
    if "lo" in open_ends:
        bad.append(lo)
    if integer:
        bad.append(lo + 0.5)
    else:
        bad.append(math.inf)
    for value in bad:
        problems = dataclasses.replace(RSMatchConfig(queue_min_fill=0), **{name: value}).problems()
        assert len(problems) == 1 and problems[0].startswith(f"{name}: "), (value, problems)
    good = [lo if "lo" not in open_ends else lo + 0.5] + ([hi] if hi != math.inf else [])
    for value in good:
        cfg = dataclasses.replace(RSMatchConfig(queue_min_fill=0, queue_size=100_000), **{name: value})
        assert cfg.problems() == [], value


def test_choices_and_the_fill_bound_are_checked():
    assert RSMatchConfig(dummy_pseudo_label="both").problems() == ["dummy_pseudo_label: 'both' is not one of "
                                                                   "real, dummy"]
    assert RSMatchConfig(queue_size=8, queue_min_fill=9).problems()[0].startswith("queue_min_fill: ")
    assert RSMatchConfig(queue_size=8, queue_min_fill=8).problems() == []


def test_from_args_reads_every_key_and_lower_cases_the_choices():
    import argparse

    args = argparse.Namespace(**dict(config.defaults(), base_algorithm="SoftMatch", queue_size=7))
    cfg = RSMatchConfig.from_args(args)
    assert cfg.base_algorithm == "softmatch" and cfg.queue_size == 7
    with pytest.raises(AttributeError):
        RSMatchConfig.from_args(argparse.Namespace(queue_size=7))
    # A run of the exported algorithm has no diagnostic keys: they keep their defaults.
    training = {k: v for k, v in config.defaults().items() if k not in config.diagnostic_keys()}
    assert RSMatchConfig.from_args(argparse.Namespace(**dict(training, queue_size=7))) == RSMatchConfig(queue_size=7)
