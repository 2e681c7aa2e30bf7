"""Test-made USB trees: the installed semilearn 0.3.2, copied and reshaped where USB's GitHub main differs.

Main's differences that matter to the plugin and its export, made here by
editing the copy (no file of USB's main is used):

- the registry's algorithm list holds algorithms 0.3.2 lacks (each given a
  stand-in package here, a FixMatch registered under main's name), and spans
  another line;
- ``BasicDataset.__init__`` takes ``medium_transform`` before
  ``strong_transform`` and keeps it as ``self.medium_transform``.

Only the signature changes: 0.3.2's own dataset builders, which pass
arguments by position, are not used by the tests that run in such a tree.
"""
import importlib.util
import shutil
from pathlib import Path

MAIN_ONLY_ALGORITHMS = ("sequencematch", "refixmatch", "multimatch")
REGISTRY = "semilearn/core/utils/registry.py"
DATASETBASE = "semilearn/datasets/cv_datasets/datasetbase.py"

_STAND_IN = '''"""Stands in for USB main's {name} in a test-made tree: FixMatch under that name."""
from semilearn.algorithms.fixmatch import FixMatch
from semilearn.core.utils import ALGORITHMS


@ALGORITHMS.register("{name}")
class StandIn(FixMatch):
    pass
'''


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path} no longer has {old!r} once: the installed semilearn is not 0.3.2"
    path.write_text(text.replace(old, new), encoding="utf-8")


def installed_semilearn() -> Path:
    return Path(importlib.util.find_spec("semilearn").origin).parent


def usb_tree(root: Path, main_shaped: bool = True) -> Path:
    """``root`` holding a copy of the installed semilearn (reshaped like USB main unless told not to)."""
    shutil.copytree(installed_semilearn(), root / "semilearn", ignore=shutil.ignore_patterns("__pycache__"))
    if not main_shaped:
        return root
    _replace_once(root / REGISTRY, "'freematch', 'defixmatch']),",
                  "'freematch', 'defixmatch',\n                              "
                  + ", ".join(f"'{name}'" for name in MAIN_ONLY_ALGORITHMS) + "]),")
    for name in MAIN_ONLY_ALGORITHMS:
        package = root / "semilearn" / "algorithms" / name
        package.mkdir()
        (package / "__init__.py").write_text(_STAND_IN.format(name=name), encoding="utf-8")
    datasetbase = root / DATASETBASE
    _replace_once(datasetbase, "                 strong_transform=None,\n",
                  "                 medium_transform=None,\n                 strong_transform=None,\n")
    stored = "        self.strong_transform = strong_transform\n"
    _replace_once(datasetbase, stored, stored + "        self.medium_transform = medium_transform\n")
    return root


def snapshot(root: Path) -> dict:
    """``{relative path: bytes}`` of every file under ``root`` (``None`` for a folder), to compare before/after."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}
