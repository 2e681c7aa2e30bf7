"""Numeric config values checked against a range: one error line naming the key, its value and the range.

The machinery only; the train command's table of keys and ranges is
:data:`rsmatch_usb.config.NUMERIC_KEYS`. Like :mod:`data_tools.errors` it
imports nothing of the project beyond it, so the grid runner checks a
config's counts without loading semilearn.
"""
import argparse
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .errors import UserError, shown


@dataclass(frozen=True)
class NumberRange:
    """The valid values of one numeric key: its type and bounds (``None``: unbounded on that side).

    ``low_open`` / ``high_open`` exclude the bound itself; ``none_ok``: the
    key may be null (an optional key); ``nan_ok``: NaN is a value. Infinite
    values are never valid (every bound is finite or absent, and no key
    means "infinity").
    """
    kind: type  # int or float
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    none_ok: bool = False
    nan_ok: bool = False


def describe_range(rule: NumberRange) -> str:
    """``an integer in [1, 65536]``, ``a number in (0, 1]``, ``a number >= 0``: the valid values in words."""
    what = "an integer" if rule.kind is int else "a number"

    def show(bound):
        return f"{int(bound)}" if rule.kind is int or float(bound).is_integer() else f"{bound:g}"

    if rule.low is not None and rule.high is not None:
        left, right = "(" if rule.low_open else "[", ")" if rule.high_open else "]"
        text = f"{what} in {left}{show(rule.low)}, {show(rule.high)}{right}"
    elif rule.low is not None:
        text = f"{what} {'>' if rule.low_open else '>='} {show(rule.low)}"
    elif rule.high is not None:
        text = f"{what} {'<' if rule.high_open else '<='} {show(rule.high)}"
    else:
        text = what
    return text + (" or null" if rule.none_ok else "")


def _as_number(value: Any, kind: type) -> Any:
    """``value`` as ``kind``, or None when it is not a number of that kind (an integral float is an int)."""
    if isinstance(value, bool):
        return None  # YAML's true/false are not counts
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
        except ValueError:
            return None
    if isinstance(value, int):
        if kind is int:
            return value
        try:
            return float(value)
        except OverflowError:  # an int beyond any float: out of every range
            return math.inf
    if isinstance(value, float):
        if kind is float:
            return value
        return int(value) if value.is_integer() else None
    return None


def check_number(key: str, value: Any, rule: NumberRange) -> Any:
    """``value`` converted to ``rule.kind``, or a UserError naming ``key``, the value and the valid range."""
    if value is None and rule.none_ok:
        return None
    number = _as_number(value, rule.kind)
    ok = number is not None
    if ok and isinstance(number, float) and math.isnan(number):
        ok = rule.nan_ok
    elif ok:
        ok = math.isfinite(number) if isinstance(number, float) else True
        if ok and rule.low is not None:
            ok = number > rule.low if rule.low_open else number >= rule.low
        if ok and rule.high is not None:
            ok = number < rule.high if rule.high_open else number <= rule.high
    if not ok:
        raise UserError(f"{key}: {shown(value)} is not valid; give {describe_range(rule)}")
    return number


def check_numbers(args: argparse.Namespace, table: Mapping[str, NumberRange]) -> argparse.Namespace:
    """Check every key of ``table`` that ``args`` has, converting each value to its type in place."""
    for key, rule in table.items():
        if hasattr(args, key):
            setattr(args, key, check_number(key, getattr(args, key), rule))
    return args
