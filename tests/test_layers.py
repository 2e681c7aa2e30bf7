"""The layers point one way: errors at the bottom, data readers without semilearn, one bad-input exit code."""
import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

READ_NPZ = """
import json, sys
import numpy as np
from data_tools import mixing
from data_tools.synthetic import read_synthetic_source
np.savez(sys.argv[1], images=np.zeros((3, 4, 4), np.uint8), labels=np.array([0, 1, 1]))
s = read_synthetic_source(sys.argv[1], "imagefolder", ["cat", "dog"])
print(json.dumps({"labels": s.labels.tolist(),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("semilearn", "rsmatch_usb"))}))
"""


INSPECT_RUNS = """
import json, os, sys
from benchmark_configs import run
from data_tools.run_folder import RESULT_LINE
done, fresh = os.path.join(sys.argv[1], "done"), os.path.join(sys.argv[1], "fresh")
os.makedirs(done)
with open(os.path.join(done, "log.txt"), "w") as f:
    f.write("[info] " + RESULT_LINE + ": 0.5\\n")
status = [run.inspect(run.Run("c.yaml", sys.argv[1], name, 10)).status for name in ("done", "fresh")]
print(json.dumps({"status": status,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("semilearn", "rsmatch_usb"))}))
"""


def _run_script(script, tmp_path, *argv):
    """The JSON that ``script`` prints last, run in a fresh interpreter (nothing imported beforehand)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Each package and the packages above it (data layer < plugin < tools): none may import these.
HIGHER = {"data_tools": ("rsmatch_usb", "benchmark_configs"), "rsmatch_usb": ("benchmark_configs",)}

IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import data_tools
names = sorted(m.name for m in pkgutil.iter_modules(data_tools.__path__, "data_tools."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("rsmatch_usb", "benchmark_configs"))}))
"""


def _imports(path, package):
    """``(line, module)`` of every import in the file at ``path`` (of ``package``): those inside
    functions, relative ones and ``importlib.import_module("...")`` included."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) + 1 - node.level] if node.level else []
            found += [(node.lineno, ".".join(base + [node.module] if node.module else base + [alias.name]))
                      for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def _package(path):
    return os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, ".")


@pytest.mark.parametrize("package", sorted(HIGHER))
def test_no_module_imports_a_higher_layer(package):
    files = glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)
    assert len(files) > 5
    upward = [f"{os.path.relpath(path, REPO)}:{line} imports {module}" for path in files
              for line, module in _imports(path, _package(path)) if module.split(".")[0] in HIGHER[package]]
    assert upward == []


def test_the_import_scanner_sees_relative_and_late_imports(tmp_path):
    """The static check above misses none of these shapes."""
    probe = tmp_path / "probe.py"
    probe.write_text("from . import errors\nfrom .. import rsmatch_usb\nfrom .mixing import mix\n"
                     "def late():\n    from rsmatch_usb import config\n"
                     "    importlib.import_module('benchmark_configs.run')\n")
    found = sorted(module for _, module in _imports(str(probe), "data_tools"))
    assert found == ["benchmark_configs.run", "data_tools.errors", "data_tools.mixing", "rsmatch_usb", "rsmatch_usb"]


def test_importing_every_data_module_loads_neither_the_plugin_nor_the_tools(tmp_path):
    found = _run_script(IMPORT_EVERY_MODULE, tmp_path)
    assert "data_tools.mixing" in found["imported"] and "data_tools.synthesize" in found["imported"]
    assert found["loaded"] == []


def test_no_module_shadows_the_standard_library():
    """A module named like one of the standard library's (``inspect``) is what ``import inspect`` finds
    when its folder is first on ``sys.path`` (running a file of that folder as a script)."""
    names = {os.path.splitext(os.path.basename(p))[0] for package in ("data_tools", "rsmatch_usb", "benchmark_configs")
             for p in glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)}
    assert sorted(names & set(sys.stdlib_module_names)) == []


def test_reading_a_synthetic_source_imports_neither_semilearn_nor_the_algorithms(tmp_path):
    found = _run_script(READ_NPZ, tmp_path, str(tmp_path / "s.npz"))
    assert found["labels"] == [0, 1, 1]
    assert found["loaded"] == []


def test_the_runner_reads_run_folders_without_semilearn_or_the_algorithms(tmp_path):
    """The runner shares the train command's finished-run rule (data_tools.run_folder), not its imports."""
    found = _run_script(INSPECT_RUNS, tmp_path, str(tmp_path))
    assert found["status"] == ["finished", "new"]
    assert found["loaded"] == []


def test_every_bad_input_error_is_the_one_user_error():
    from benchmark_configs import gpu_selfcheck, overhead, report, run
    from data_tools import errors
    from data_tools.synthesis import models
    from rsmatch_usb import errors as plugin_errors

    assert plugin_errors.UserError is errors.UserError
    assert issubclass(errors.InputError, errors.UserError)
    # The tools' bad-flag error is the one InputError, not a class of their own.
    for module in (models, run, report, overhead, gpu_selfcheck):
        assert module.InputError is errors.InputError, module.__name__


def test_report_is_one_line_and_the_bad_input_exit_code(capsys):
    from data_tools.errors import UserError, report

    assert report(UserError("num_labels: 45 is not divisible by 10; use 40"), "rsmatch-train") == 2
    assert capsys.readouterr().err == "rsmatch-train: error: num_labels: 45 is not divisible by 10; use 40\n"


def test_existing_output_is_bad_input_exit_2(tmp_path, capsys):
    """Refusing to overwrite is bad input: exit 2, as in every other command (argparse's code for a bad flag)."""
    from data_tools import make_synthetic_digits

    existing = tmp_path / "digits.npz"
    existing.write_bytes(b"")
    assert make_synthetic_digits.main(["--out", str(existing), "--sheet", str(tmp_path / "sheet.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--overwrite" in lines[0]
    assert existing.read_bytes() == b"" and not (tmp_path / "sheet.png").exists()


def test_train_command_and_runner_read_configs_with_one_loader(tmp_path, capsys):
    """A broken YAML file is the same one error line, exit 2, in rsmatch-train and in the grid runner."""
    import io

    from benchmark_configs import run
    from rsmatch_usb.train import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: [fixmatch\n")
    assert cli(["--c", str(bad)]) == 2
    train_err = capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run.main([str(bad), "--dry-run"], out=io.StringIO())
    assert exc.value.code == 2
    runner_err = capsys.readouterr().err
    message = f"config file {bad} is not valid YAML"
    assert train_err.startswith(f"rsmatch-train: error: {message}")
    assert message in runner_err and len(runner_err.strip().splitlines()) == 1
    assert train_err.split(message)[1] == runner_err.split(message)[1]


def test_console_scripts_point_at_entry_points_and_name_themselves(monkeypatch):
    import configparser
    import importlib

    from data_tools.errors import command_name

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    assert {"rsmatch-train", "rsmatch-inspect", "rsmatch-synthesize", "rsmatch-bench-run",
            "rsmatch-bench-report"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    assert command_name("rsmatch-bench-run", "benchmark_configs.run") == "python -m benchmark_configs.run"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/rsmatch-bench-run", "--dry-run"])
    assert command_name("rsmatch-bench-run", "benchmark_configs.run") == "rsmatch-bench-run"
