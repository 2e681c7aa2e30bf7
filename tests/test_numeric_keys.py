"""Every numeric key is checked by range in one table: a bad value is one error line, never a traceback or NaN model."""
import contextlib
import io
import math
import os
import pathlib
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, tiny_config, write_config

RSMATCH = dict(algorithm="rsmatch", detector_width=4, synthetic_source="bundled", synthetic_ratio=1.0, queue_size=4,
               queue_min_fill=0, queue_min_score=0.0, detector_calib_per_class=0)


def _train(cfg):
    """rsmatch-train on ``cfg`` in this process: (exit code, stderr text)."""
    from rsmatch_usb.train import cli

    with tempfile.TemporaryDirectory() as folder:
        path = write_config(pathlib.Path(folder), cfg, "config.yaml")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli(["--c", path])
    return code, err.getvalue()


def _error_lines(text):
    return [line for line in text.splitlines() if "error:" in line]


# The probes of issue 23 that trained nonsense (exit 0) or stopped with a traceback (exit 1).
PROBES = {
    "uratio 0": (dict(uratio=0), "uratio: 0 is not valid; give an integer in [1, 1024]"),
    "batch_size 0": (dict(batch_size=0), "batch_size: 0 is not valid; give an integer in [1, 65536]"),
    "num_train_iter 0": (dict(num_train_iter=0), "num_train_iter: 0 is not valid; give an integer in [1, "),
    "num_train_iter twelve": (dict(num_train_iter="twelve"), "num_train_iter: 'twelve' is not valid"),
    "img_size 0": (dict(img_size=0), "img_size: 0 is not valid; give an integer in [8, 4096]"),
    "detector_width 0": (dict(RSMATCH, detector_width=0),
                         "detector_width: 0 is not valid; give an integer in [1, 1024]"),
    "detector_lr nan": (dict(RSMATCH, detector_lr=math.nan), "detector_lr: nan is not valid; give a number in (0, 10]"),
    # Accepted by the table until its RSMatch rows came from RSMatchConfig, refused later when RSMatch was built.
    "detector_lr 0": (dict(RSMATCH, detector_lr=0), "detector_lr: 0 is not valid; give a number in (0, 10]"),
    "lambda_syn nan": (dict(RSMATCH, lambda_syn=math.nan), "lambda_syn: nan is not valid; give a number in [0, 10000]"),
    "lambda_syn inf": (dict(RSMATCH, lambda_syn=math.inf), "lambda_syn: inf is not valid"),
    # Allocated 160 GB before failing.
    "queue_size 2e9": (dict(RSMATCH, queue_size=2e9),
                       "queue_size: 2000000000.0 is not valid; give an integer in [1, 100000]"),
    # Trained with every unlabeled loss masked out, silently.
    "p_cutoff 2": (dict(p_cutoff=2), "p_cutoff: 2 is not valid; give a number in [0, 1]"),
    "ema_m -0.1": (dict(ema_m=-0.1), "ema_m: -0.1 is not valid; give a number in [0, 1]"),
    "seed -1": (dict(seed=-1), "seed: -1 is not valid; give an integer in [0, 4294967295]"),
    "batch_size true": (dict(batch_size=True), "batch_size: True is not valid"),
    "lr null": (dict(lr=None), "lr: None is not valid; give a number in [0, 10]"),
    # A key the table has no row for: a finite number of its type.
    "mixup_alpha nan": (dict(algorithm="mixmatch", mixup_alpha=math.nan), "mixup_alpha: nan is not valid; give a number"),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_a_numeric_key_out_of_range_is_one_error_line(tmp_path, capsys, probe):
    overrides, expected = PROBES[probe]
    cfg = tiny_config(tmp_path, name="probe", **overrides)
    from rsmatch_usb.train import cli

    assert cli(["--c", write_config(tmp_path, cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rsmatch-train: error: ") and expected in err[0], err
    assert not os.path.exists(cfg["save_dir"])


def test_a_flag_out_of_range_is_the_same_line(tmp_path, capsys):
    from rsmatch_usb.train import cli

    assert cli(["--c", write_config(tmp_path, tiny_config(tmp_path)), "--num_train_iter", "twelve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rsmatch-train: error: num_train_iter: 'twelve' is not valid; give an integer in [1, 10000000000]"]


def test_rsmatch_rows_are_the_ranges_of_its_config():
    """RSMatch's rows come from RSMatchConfig's field metadata; a key USB's algorithms share agrees with it."""
    import dataclasses

    from rsmatch_usb.algorithms.rsmatch.config import RSMatchConfig, ranges
    from rsmatch_usb.config import NUMERIC_KEYS, rsmatch_rows

    fields = {f.name: f for f in dataclasses.fields(RSMatchConfig)}
    assert set(rsmatch_rows()) == set(ranges()) == {k for k, f in fields.items() if f.type in (int, float)}
    for key, (low, high, open_ends) in ranges().items():
        rule = NUMERIC_KEYS[key]
        assert rule == rsmatch_rows()[key], key
        assert (rule.kind, rule.low, rule.high if rule.high is not None else math.inf) == (fields[key].type, low, high)
        assert (rule.low_open, rule.high_open) == ("lo" in open_ends, "hi" in open_ends)


def test_a_field_added_to_the_rsmatch_config_gets_its_row(monkeypatch):
    """A numeric field added to RSMatchConfig is checked by the table without a row written for it."""
    import dataclasses

    from rsmatch_usb import config
    from rsmatch_usb.algorithms.rsmatch import config as rs_config

    @dataclasses.dataclass(frozen=True)
    class Wider(rs_config.RSMatchConfig):
        detector_extra: int = rs_config._setting(3, "a new setting", bounds=(2, math.inf))

    from data_tools.number_ranges import NumberRange, check_number
    from rsmatch_usb.errors import UserError

    monkeypatch.setattr(rs_config, "RSMatchConfig", Wider)  # what ranges() reads
    monkeypatch.setattr(config, "RSMatchConfig", Wider)
    rows = config.rsmatch_rows()
    assert rows["detector_extra"] == NumberRange(int, 2, None)
    assert set(rows) - {"detector_extra"} == set(rs_config.ranges()) - {"detector_extra"}
    with pytest.raises(UserError, match=r"^detector_extra: 1 is not valid; give an integer >= 2$"):
        check_number("detector_extra", 1, rows["detector_extra"])


def test_every_usb_fixmatch_config_and_committed_config_is_in_range(tmp_path):
    """The table accepts what USB's own configs and this project's configs set."""
    import glob

    from data_tools.config_files import parse_yaml, load_yaml
    from data_tools.number_ranges import check_number
    from rsmatch_usb.config import NUMERIC_KEYS
    from rsmatch_usb.upstream.usb_configs import read_table

    checked = 0
    for name, items in read_table().items():
        for key, text in items:
            if key in NUMERIC_KEYS:
                check_number(key, parse_yaml(f"k: {text}")["k"], NUMERIC_KEYS[key])
                checked += 1
    for path in glob.glob(os.path.join(REPO, "benchmark_configs", "**", "*.yaml"), recursive=True):
        for key, value in load_yaml(path).items():
            if key in NUMERIC_KEYS:
                check_number(key, value, NUMERIC_KEYS[key])
                checked += 1
    assert checked > 10000


def _finite_model(run_dir):
    """Whether every floating tensor of the run's final checkpoint (model, EMA model, RSMatch's state) is finite."""
    state = torch.load(os.path.join(run_dir, "latest_model.pth"), map_location="cpu", weights_only=True)

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from tensors(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from tensors(v)

    found = [t for key in state if key not in ("optimizer", "resume_state") for t in tensors(state[key])
             if t.is_floating_point()]
    return found and all(torch.isfinite(t).all() for t in found)


# Values of every type and size: in range, at the edges, far out, not numbers at all.
VALUES = st.one_of(
    st.integers(min_value=-2, max_value=10),
    st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 63, 10 ** 400, 2e9, 0.5, 1.0, 1e-300, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=1.0),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


def _keys(cfg):
    """The table's keys the train command reads for ``cfg``'s algorithm."""
    from rsmatch_usb.config import NUMERIC_KEYS, get_config

    with tempfile.TemporaryDirectory() as folder:
        args = get_config(["--c", write_config(pathlib.Path(folder), cfg, "config.yaml")])
    return sorted(k for k in NUMERIC_KEYS if hasattr(args, k))


BASE = {"fixmatch": {}, "rsmatch": RSMATCH}
KEYS = {}


def _check_run_or_one_error_line(algorithm, changes):
    with tempfile.TemporaryDirectory() as folder:
        cfg = tiny_config(pathlib.Path(folder), name="prop", **BASE[algorithm])
        cfg.update(changes)
        code, err = _train(cfg)
        lines = _error_lines(err)
        assert "Traceback" not in err, err[-3000:]
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("rsmatch-train: error: ") and len(lines[0]) < 400, err
            assert not os.path.exists(os.path.join(cfg["save_dir"], "prop", "latest_model.pth"))
        else:
            assert code == 0 and not lines, err
            assert _finite_model(os.path.join(cfg["save_dir"], "prop"))


@pytest.mark.parametrize("algorithm", ["fixmatch", "rsmatch"])
@pytest.mark.timeout(120)
def test_random_values_of_numeric_keys_run_or_are_one_error_line(algorithm):
    """Property: whatever value of whatever type a numeric key gets, the train command either stops with one
    error line and exit 2, or trains (two iterations on the embedded digits) to a model without NaN."""
    KEYS.setdefault(algorithm, _keys(BASE[algorithm]))

    @settings(max_examples=10, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(st.dictionaries(st.sampled_from(KEYS[algorithm]), VALUES, min_size=1, max_size=2))
    def prop(changes):
        _check_run_or_one_error_line(algorithm, changes)

    prop()
