"""The USB export: generated tree, import rewriting, registration, configs, and training without the plugin."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO

from rsmatch_usb import export_usb
from rsmatch_usb.upstream import registration, rewrite, usb_configs

CHILD = os.path.join(REPO, "tests", "export_usb_child.py")
RUNTIME = os.path.join(REPO, "rsmatch_usb", "runtime.py")
SETTINGS = {"cifar10_40_0", "cifar10_250_0", "cifar10_4000_0", "cifar100_400_0", "cifar100_2500_0",
            "cifar100_10000_0", "svhn_40_0", "svhn_250_0", "svhn_1000_0", "stl10_40_0", "stl10_250_0",
            "stl10_1000_0"}


def _load(text):
    return YAML(typ="safe", pure=True).load(text)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The export written by the command line, and its folder."""
    out = tmp_path_factory.mktemp("export") / "out"
    assert export_usb.cli(["--out", str(out)]) == 0
    return out


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------- the tree
def test_export_tree_is_the_generator_output_and_imports_no_plugin(exported):
    files = export_usb.build_export()
    assert _files(exported) == sorted(files)
    for relpath, text in files.items():
        assert (exported / relpath).read_text(encoding="utf-8") == text
    algorithm = {p: t for p, t in files.items() if p.startswith("semilearn/algorithms/rsmatch/")}
    names = {Path(p).name for p in algorithm}
    plugin_package = Path(REPO, "rsmatch_usb", "algorithms", "rsmatch")
    assert names == {p.name for p in plugin_package.glob("*.py")} | {"heads.py", "errors.py", "fingerprints.py",
                                                                       "common.py", "origin.py"}
    for relpath, text in algorithm.items():
        assert rewrite.plugin_imports(text, rewrite.TARGET_PACKAGE, relpath) == []
        assert "rsmatch_usb." not in "".join(line for line in text.splitlines(True) if "import" in line)
    assert "from .heads import ExtraHeadsMixin\n" in algorithm["semilearn/algorithms/rsmatch/rsmatch.py"]
    assert rewrite.imported_packages(algorithm.values()) == ["PIL", "numpy", "semilearn", "sklearn", "torch",
                                                             "torchvision"]
    assert "it imports only PIL, numpy, semilearn, sklearn, torch, torchvision." in files[export_usb.NOTES_NAME]


def test_refuses_a_non_empty_out_and_overwrite_replaces_the_export(exported, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export_usb.cli(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0]
    assert _files(out) == ["keep.txt"]

    stale = out / "semilearn/algorithms/rsmatch/old_module.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# from an earlier export")
    assert export_usb.cli(["--out", str(out), "--overwrite"]) == 0
    assert not stale.exists()
    assert (out / "keep.txt").read_text() == "mine"
    assert _files(out) == sorted(["keep.txt"] + _files(exported))


def test_exporting_into_a_usb_checkout_edits_its_own_registry(tmp_path):
    """With --overwrite into a USB tree, its registry (here: a newer USB's list) gets rsmatch, not semilearn 0.3.2's."""
    checkout = tmp_path / "usb"
    registry = checkout / registration.REGISTRY_PATH
    registry.parent.mkdir(parents=True)
    registry.write_text("ALL_MODULES = [\n    ('semilearn.algorithms', ['fixmatch', 'multimatch']),\n]\n")
    assert export_usb.cli(["--out", str(checkout), "--overwrite"]) == 0
    assert registry.read_text() == \
        "ALL_MODULES = [\n    ('semilearn.algorithms', ['fixmatch', 'multimatch', 'rsmatch']),\n]\n"
    assert "+    ('semilearn.algorithms', ['fixmatch', 'multimatch', 'rsmatch'])," in \
        (checkout / export_usb.DIFF_NAME).read_text()


def test_bad_usb_root_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert export_usb.cli(["--out", str(out), "--usb-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "semilearn/core/utils/registry.py" in err[0]
    assert not out.exists()


# ---------------------------------------------------------------- import rewriting
def test_rewrite_maps_plugin_imports_into_the_folder():
    source = ("import torch\n"
              "from rsmatch_usb.heads import (ExtraHeadsMixin,\n    unwrap)  # the mixin\n"
              "from ...errors import UserError\n"
              "from rsmatch_usb import heads as h\n"
              "import rsmatch_usb.errors as errs\n"
              "from .csqueue import CSQueue\n"
              "from semilearn.core.utils import ALGORITHMS\n")
    out = rewrite.rewrite_imports(source, rewrite.SOURCE_PACKAGE, "x.py")
    assert out == ("import torch\n"
                   "from .heads import ExtraHeadsMixin, unwrap  # the mixin\n"
                   "from .errors import UserError\n"
                   "from . import heads as h\n"
                   "from . import errors as errs\n"
                   "from .csqueue import CSQueue\n"
                   "from semilearn.core.utils import ALGORITHMS\n")
    assert rewrite.plugin_imports(out, rewrite.TARGET_PACKAGE, "x.py") == []


@pytest.mark.parametrize("line", ["from rsmatch_usb.runtime import activate\n",
                                  "from data_tools.usb import get_dataset\n",
                                  "import data_tools\n",
                                  "from ...train import cli\n"])
def test_rewrite_fails_loudly_on_imports_without_a_counterpart(line):
    with pytest.raises(rewrite.ExportError, match="x.py:1"):
        rewrite.rewrite_imports(line, rewrite.SOURCE_PACKAGE, "x.py")


def test_export_fails_when_a_needed_plugin_module_is_not_vendored(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(rewrite, "VENDORED", {m: n for m, n in rewrite.VENDORED.items() if m != "rsmatch_usb.heads"})
    assert export_usb.cli(["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rsmatch_usb.heads" in err[0]
    assert not (tmp_path / "out").exists()


def test_check_no_plugin_imports_names_the_leftover():
    with pytest.raises(rewrite.ExportError, match=r"rsmatch\.py:2 imports rsmatch_usb\.heads"):
        rewrite.check_no_plugin_imports({"rsmatch.py": "import torch\nfrom rsmatch_usb.heads import unwrap\n"})
    with pytest.raises(rewrite.ExportError, match=r"hooks\.py:3 imports data_tools\.usb"):
        rewrite.check_no_plugin_imports({"hooks.py": '"""Reads data_tools.usb flags."""\nimport importlib\n'
                                                     'usb = importlib.import_module("data_tools.usb")\n'})


# ---------------------------------------------------------------- registration
def test_registration_appends_rsmatch_to_usbs_algorithm_list():
    source = ("ALL_MODULES = [\n"
              "    # NOTE: add all algorithms here\n"
              "    ('semilearn.algorithms', ['adamatch', 'fixmatch',\n"
              "                              'defixmatch']),\n"
              "    ('semilearn.imb_algorithms', ['abc'])\n"
              "]\n")
    out = registration.register(source)
    assert "'defixmatch', 'rsmatch']),\n" in out
    assert out.replace(", 'rsmatch'", "") == source
    assert registration.register(out) == out
    with pytest.raises(registration.RegistrationError):
        registration.register("ALL_MODULES = [('semilearn.imb_algorithms', ['abc'])]\n")


def test_registration_diff_applies_to_the_installed_registry(exported, tmp_path):
    import semilearn

    pristine = Path(semilearn.__file__).parent / "core" / "utils" / "registry.py"
    target = tmp_path / registration.REGISTRY_PATH
    target.parent.mkdir(parents=True)
    shutil.copy(pristine, target)
    done = subprocess.run(["git", "apply", str(exported / export_usb.DIFF_NAME)], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == (exported / registration.REGISTRY_PATH).read_text()
    assert target.read_text() != pristine.read_text()


# ---------------------------------------------------------------- configs
def test_configs_are_usbs_fixmatch_configs_plus_rsmatch_keys(exported):
    from semilearn.algorithms.fixmatch import FixMatch

    from rsmatch_usb.algorithms.rsmatch import RS_VARIANTS

    table = usb_configs.read_table()
    assert {name[len("fixmatch_"):-len(".yaml")] for name in table} == SETTINGS
    config_dir = exported / usb_configs.EXPORT_CONFIG_DIR
    assert sorted(p.name for p in config_dir.iterdir()) == sorted(f"rsmatch_{s}.yaml" for s in SETTINGS)
    defaults = {a.name.lstrip("-"): a.default for a in RS_VARIANTS["fixmatch"].get_argument()}
    fixmatch_keys = [a.name.lstrip("-") for a in FixMatch.get_argument()]
    for name, items in table.items():
        setting = name[len("fixmatch_"):-len(".yaml")]
        fixmatch = _load("".join(f"{k}: {v}\n" for k, v in items))
        text = (config_dir / f"rsmatch_{setting}.yaml").read_text()
        rsmatch = _load(text)
        renamed = dict(algorithm="rsmatch", save_name=f"rsmatch_{setting}",
                       load_path=f"./saved_models/classic_cv/rsmatch_{setting}/latest_model.pth")
        assert {k: rsmatch[k] for k in fixmatch} == {**fixmatch, **renamed}
        assert {k: v for k, v in rsmatch.items() if k not in fixmatch} == \
            {k: v for k, v in defaults.items() if k not in fixmatch}
        keys = [line.split(":")[0] for line in text.splitlines()]
        # USB's key order, RSMatch's keys right after FixMatch's own.
        assert [k for k in keys if k in fixmatch] == [k for k, _ in items]
        last_fixmatch = max(keys.index(k) for k in fixmatch_keys)
        own = [k for k in keys if k not in fixmatch]
        assert keys[last_fixmatch + 1:last_fixmatch + 1 + len(own)] == own
    assert _load((config_dir / "rsmatch_stl10_40_0.yaml").read_text())["net"] == "wrn_var_37_2"


def test_table_round_trips_usb_config_text(tmp_path):
    folder = tmp_path / usb_configs.USB_CONFIG_DIR
    folder.mkdir(parents=True)
    for name, items in usb_configs.read_table().items():
        (folder / name).write_text("".join(f"{k}: {v}\n" for k, v in items))
    rebuilt = tmp_path / "table.csv"
    commit = "1ef4cbebcc0b368158315aeb425053858cf6c845"
    assert usb_configs.cli(["--usb-checkout", str(tmp_path), "--commit", commit, "--out", str(rebuilt)]) == 0
    assert rebuilt.read_text() == usb_configs.TABLE.read_text()


# ---------------------------------------------------------------- USB without the plugin
@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_exported_rsmatch_trains_in_a_usb_copy_without_the_plugin(exported, tmp_path):
    usb = tmp_path / "usb"
    installed = Path(importlib.util.find_spec("semilearn").origin).parent
    shutil.copytree(installed, usb / "semilearn", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(exported / "semilearn", usb / "semilearn", dirs_exist_ok=True)
    config = exported / usb_configs.EXPORT_CONFIG_DIR / "rsmatch_cifar10_40_0.yaml"
    # No PYTHONPATH: the worktree (and so rsmatch_usb) must not be reachable from it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-W", "ignore", CHILD, str(usb), str(config), RUNTIME,
                           str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["iterations"] == 4
    assert {"model", "ema_model", "extra_heads", "detector", "detector_ema", "csqueue",
            "rsmatch_state"} <= set(found["checkpoint_keys"])
    assert found["plugin_modules"] == [] and found["semilearn_outside_copy"] == []
    assert all(m.startswith("semilearn.algorithms.rsmatch.") for m in found["module_of_parts"])
    # The run reached the detector-routed phase: queue draws and the dummy head's loss.
    assert found["detector_trusted"] and found["queued"] > 0
    assert found["last_step"]["train/syn_ratio"] == 1.0
    assert found["last_step"]["train/syn_unsup_loss"] > 0
