"""The USB export, applied in place to test-made USB trees shaped like USB's GitHub main (tests/usb_trees.py)."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import REPO
from usb_trees import MAIN_ONLY_ALGORITHMS, REGISTRY, snapshot, usb_tree

from rsmatch_usb import export_usb
from rsmatch_usb.algorithms.rsmatch.config import diagnostic_keys
from rsmatch_usb.upstream import manifest, registration, rewrite, usb_configs

CHILD = os.path.join(REPO, "tests", "export_usb_child.py")
RUNTIME = os.path.join(REPO, "rsmatch_usb", "runtime.py")
PACKAGE = "rsmatch_usb.algorithms.rsmatch"
SETTINGS = {"cifar10_40_0", "cifar10_250_0", "cifar10_4000_0", "cifar100_400_0", "cifar100_2500_0",
            "cifar100_10000_0", "svhn_40_0", "svhn_250_0", "svhn_1000_0", "stl10_40_0", "stl10_250_0",
            "stl10_1000_0"}
DIAGNOSTIC_KEYS = diagnostic_keys()
WRITTEN = re.compile(rf"^({manifest.ALGORITHM_DIR}/[^/]+\.py|{usb_configs.EXPORT_CONFIG_DIR}/[^/]+\.yaml"
                     rf"|{re.escape(registration.REGISTRY_PATH)})$")


def _load(text):
    return YAML(typ="safe", pure=True).load(text)


def _algorithm_list(registry_text):
    tree = ast.parse(registry_text)
    listing = registration._algorithm_list(tree)
    return [e.value for e in listing.elts]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A main-shaped USB tree, its files before the export, the export applied in place, and the PR text file."""
    base = tmp_path_factory.mktemp("export")
    root = usb_tree(base / "usb")
    before = snapshot(root)
    pr_text = base / "pull_request.md"
    assert export_usb.cli(["--usb-root", str(root), "--pr-text", str(pr_text)]) == 0
    return root, before, pr_text


def _algorithm_files(root):
    return sorted((root / manifest.ALGORITHM_DIR).glob("*.py"))


# ---------------------------------------------------------------- what is written, and where
def test_export_writes_only_the_algorithm_its_configs_and_the_registration(exported):
    root, before, pr_text = exported
    after = snapshot(root)
    changed = {p for p in after if after[p] is not None and before.get(p) != after[p]}
    assert changed and all(WRITTEN.match(p) for p in changed), sorted(p for p in changed if not WRITTEN.match(p))
    assert set(before) <= set(after)  # nothing of the checkout removed
    assert {p for p in changed if p.endswith(".py")} - {REGISTRY} == \
        {f"{manifest.ALGORITHM_DIR}/{name}" for name in manifest.MODULES.values()}
    assert {Path(p).stem for p in changed if p.endswith(".yaml")} == {f"rsmatch_{s}" for s in SETTINGS}
    assert pr_text.is_file() and not (root / "RSMATCH_UPSTREAM.md").exists()


def test_registration_keeps_the_checkouts_own_list(exported):
    root, before, _ = exported
    listed = _algorithm_list(before[REGISTRY].decode())
    assert set(MAIN_ONLY_ALGORITHMS) <= set(listed)
    after = (root / REGISTRY).read_text()
    assert _algorithm_list(after) == listed + ["rsmatch"]
    # Only that entry changes: the rest of the file is the checkout's, byte for byte.
    assert after.replace(", 'rsmatch'", "", 1) == before[REGISTRY].decode()


def test_exporting_again_with_overwrite_replaces_the_export_and_registers_once(exported, tmp_path):
    root, _, _ = exported
    again = tmp_path / "usb"
    shutil.copytree(root, again)
    stale = again / manifest.ALGORITHM_DIR / "old_module.py"
    stale.write_text("# from an earlier export\n")
    assert export_usb.cli(["--usb-root", str(again)]) == 2  # an earlier export is in the way
    assert stale.exists()
    assert export_usb.cli(["--usb-root", str(again), "--overwrite"]) == 0
    assert not stale.exists()
    assert snapshot(again) == snapshot(root)


def test_pull_request_text_goes_to_stdout_and_matches_the_template_in_the_docs(exported, tmp_path, capsys):
    root, _, pr_text = exported
    checkout = usb_tree(tmp_path / "usb")
    capsys.readouterr()
    assert export_usb.cli(["--usb-root", str(checkout)]) == 0
    captured = capsys.readouterr()
    assert captured.out == pr_text.read_text()
    assert captured.err.strip() == f"rsmatch-export-usb: wrote {len(manifest.MODULES) + 13} files into {checkout}"
    lines = sum(p.read_text().count("\n") for p in _algorithm_files(root))
    assert f"({len(manifest.MODULES)} files, {lines} lines)" in captured.out
    assert "python train.py --c config/classic_cv/rsmatch/rsmatch_cifar10_40_0.yaml" in captured.out
    # docs/upstream.md shows the template the text is made from, verbatim.
    docs = Path(REPO, "docs", "upstream.md").read_text()
    shown = re.search(r"<!-- pull-request template: begin -->\n```markdown\n(.*?)```\n"
                      r"<!-- pull-request template: end -->", docs, re.S)
    assert shown and shown.group(1) == export_usb.PULL_REQUEST.read_text()


# ---------------------------------------------------------------- what the exported code is
def test_exported_python_files_carry_usbs_header_and_import_nothing_of_the_plugin(exported):
    root, _, _ = exported
    files = _algorithm_files(root)
    assert files
    for path in files:
        text = path.read_text()
        assert text.startswith("# Copyright (c) Microsoft Corporation.\n# Licensed under the MIT License.\n\n"), path
        assert rewrite.plugin_imports(text, rewrite.TARGET_PACKAGE, path.name) == []
    packages = rewrite.imported_packages(p.read_text() for p in files)
    assert packages == ["PIL", "numpy", "semilearn", "torch"]


def _top_level_names(path):
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_export_carries_no_command_line_error_module(exported):
    root, _, _ = exported
    for path in _algorithm_files(root):
        assert not {"UserError", "BAD_INPUT_EXIT", "command_name", "report"} & _top_level_names(path), path
        assert "UserError" not in path.read_text(), path
    # Every UserError an exported module raises would become USB's ValueError, one for one; today none raises
    # one (the range checks are the plugin's, in config.py and plugin.py); the substitution itself is
    # tested on a sample module below.
    raised = 0
    for module, filename in manifest.MODULES.items():
        source = Path(export_usb._source_of(module)[0]).read_text()
        exported_text = (root / manifest.ALGORITHM_DIR / filename).read_text()
        assert exported_text.count("ValueError(") == source.count("ValueError(") + source.count("UserError("), module
        raised += source.count("UserError(")
    assert raised == 0


def test_export_carries_no_plugin_only_helpers(exported):
    root, _, _ = exported
    plugin_only = {"fingerprint", "log_fingerprint", "unlabeled_origin", "auroc_by_source", "SyntheticAUROCHook",
                   # the plugin's RSMatch diagnostics (rsmatch_usb.algorithms.rsmatch.plugin, draw_workers, images)
                   "DetectorEvalHook", "OracleRouter", "DiagnosticsMixin", "detector_cost", "count_flops",
                   "WorkerDraws", "view_settings", "build_view"}
    for path in _algorithm_files(root):
        assert not plugin_only & _top_level_names(path), path
        assert not re.search(r"\b(rsmatch_usb|data_tools)\b", path.read_text()), path


@pytest.mark.xfail(strict=True, reason="the exported RSMatch is 958 lines, 613 of them code (with USB's header on "
                                       "each of its 10 files); within 700 it must do still less, a decision about "
                                       "RSMatch itself (docs/upstream.md)")
def test_exported_algorithm_folder_is_at_most_700_lines(exported):
    root, _, _ = exported
    assert sum(p.read_text().count("\n") for p in _algorithm_files(root)) <= 700


# ---------------------------------------------------------------- configs
def test_configs_are_usbs_fixmatch_configs_for_rsmatch_without_diagnostic_keys(exported):
    root, _, _ = exported
    table = usb_configs.read_table()
    assert {name[len("fixmatch_"):-len(".yaml")] for name in table} == SETTINGS
    config_dir = root / usb_configs.EXPORT_CONFIG_DIR
    for name, items in table.items():
        setting = name[len("fixmatch_"):-len(".yaml")]
        text = (config_dir / f"rsmatch_{setting}.yaml").read_text()
        fixmatch, rsmatch = _load("".join(f"{k}: {v}\n" for k, v in items)), _load(text)
        renamed = dict(algorithm="rsmatch", save_name=f"rsmatch_{setting}",
                       load_path=f"./saved_models/classic_cv/rsmatch_{setting}/latest_model.pth")
        # USB's keys in USB's order; no RSMatch key differs from its default, so none is listed.
        assert rsmatch == {**fixmatch, **renamed}
        assert [line.split(":")[0] for line in text.splitlines()] == [k for k, _ in items]
        assert not set(DIAGNOSTIC_KEYS) & set(rsmatch)
    assert _load((config_dir / "rsmatch_stl10_40_0.yaml").read_text())["net"] == "wrn_var_37_2"


def test_config_lists_only_rsmatch_settings_that_differ_from_the_defaults():
    defaults = {"queue_size": 128, "lambda_syn": 1.0, "detector_oracle": False, "use_queue": True}
    own = usb_configs.own_settings({"queue_size": 256, "lambda_syn": 1.0, "use_queue": False}, defaults,
                                   DIAGNOSTIC_KEYS)
    assert own == [("queue_size", "256"), ("use_queue", "False")]
    items = [("algorithm", "fixmatch"), ("save_name", "fixmatch_cifar10_40_0"), ("T", "0.5"),
             ("p_cutoff", "0.95"), ("net", "wrn_28_2")]
    name, text = usb_configs.rsmatch_config("fixmatch_cifar10_40_0.yaml", items, own, ["hard_label", "T", "p_cutoff"])
    assert name == "rsmatch_cifar10_40_0.yaml"
    assert text == ("algorithm: rsmatch\nsave_name: rsmatch_cifar10_40_0\nT: 0.5\np_cutoff: 0.95\n"
                    "queue_size: 256\nuse_queue: False\nnet: wrn_28_2\n")
    with pytest.raises(ValueError, match="diagnostic"):
        usb_configs.own_settings({"detector_oracle": True}, defaults, DIAGNOSTIC_KEYS)
    with pytest.raises(ValueError, match="not an argument of RSMatch"):
        usb_configs.own_settings({"queue_sise": 3}, defaults, DIAGNOSTIC_KEYS)


def test_table_round_trips_usb_config_text(tmp_path):
    folder = tmp_path / usb_configs.USB_CONFIG_DIR
    folder.mkdir(parents=True)
    for name, items in usb_configs.read_table().items():
        (folder / name).write_text("".join(f"{k}: {v}\n" for k, v in items))
    rebuilt = tmp_path / "table.csv"
    commit = "1ef4cbebcc0b368158315aeb425053858cf6c845"
    assert usb_configs.cli(["--usb-checkout", str(tmp_path), "--commit", commit, "--out", str(rebuilt)]) == 0
    assert rebuilt.read_text() == usb_configs.TABLE.read_text()


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written
def _fails_cleanly(capsys, root, argv, *words):
    before = snapshot(root)
    assert export_usb.cli(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rsmatch-export-usb: error: "), err
    assert all(w in err[0] for w in words), err[0]
    assert captured.out == ""
    assert snapshot(root) == before
    return err[0]


def test_overwrite_where_config_is_a_file_writes_nothing(tmp_path, capsys):
    root = usb_tree(tmp_path / "usb")
    (root / "config").write_text("not a folder\n")
    _fails_cleanly(capsys, root, ["--usb-root", str(root), "--overwrite"], f"{root / 'config'} is a file")


def test_non_utf8_registry_writes_nothing(tmp_path, capsys):
    root = usb_tree(tmp_path / "usb")
    registry = root / REGISTRY
    registry.write_bytes(registry.read_bytes().replace(b"# NOTE", b"# NOT\xe9"))
    _fails_cleanly(capsys, root, ["--usb-root", str(root)], "registry.py is not UTF-8 text")


@pytest.mark.parametrize("case", ["not a checkout", "no algorithm list", "pr text inside", "pr text exists"])
def test_other_bad_input_writes_nothing(tmp_path, capsys, case):
    root = usb_tree(tmp_path / "usb")
    argv = ["--usb-root", str(root)]
    if case == "not a checkout":
        (root / REGISTRY).unlink()
        words = ["is not a USB checkout"]
    elif case == "no algorithm list":
        (root / REGISTRY).write_text("ALL_MODULES = [('semilearn.imb_algorithms', ['abc'])]\n")
        words = ["add 'rsmatch' to the algorithm list by hand"]
    elif case == "pr text inside":
        argv += ["--pr-text", str(root / "RSMATCH_UPSTREAM.md")]
        words = ["lies inside the USB checkout"]
    else:
        (tmp_path / "pr.md").write_text("mine\n")
        argv += ["--pr-text", str(tmp_path / "pr.md")]
        words = ["exists; pass --overwrite"]
    _fails_cleanly(capsys, root, argv, *words)
    if case == "pr text exists":
        assert (tmp_path / "pr.md").read_text() == "mine\n"


def test_a_write_that_fails_midway_is_undone(tmp_path, capsys, monkeypatch):
    root = usb_tree(tmp_path / "usb")
    assert export_usb.cli(["--usb-root", str(root), "--pr-text", str(tmp_path / "first.md")]) == 0
    capsys.readouterr()
    (root / manifest.ALGORITHM_DIR / "old_module.py").write_text("# from an earlier export\n")
    original, calls = export_usb.Changes.write, []

    def write_then_fill_the_disk(self, path, text):
        calls.append(path)
        if len(calls) == 8:
            raise OSError(28, "No space left on device", str(path))
        original(self, path, text)

    monkeypatch.setattr(export_usb.Changes, "write", write_then_fill_the_disk)
    message = _fails_cleanly(capsys, root, ["--usb-root", str(root), "--overwrite"], "No space left on device",
                             "is as it was")
    assert len(calls) == 8 and str(calls[-1]) in message


def _can_mount_read_only(folder):
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {folder} {folder} && "
                            f"mount -o remount,bind,ro {folder} {folder} && ! touch {folder}/probe"],
                           capture_output=True)
    return probe.returncode == 0


def test_export_into_a_read_only_checkout_is_one_error_line(tmp_path):
    """The checkout on a read-only mount (as root, permissions alone would not stop the writes)."""
    root = usb_tree(tmp_path / "usb")
    if not _can_mount_read_only(root):
        pytest.skip("this machine cannot make a read-only mount (unshare -m)")
    before = snapshot(root)
    script = (f"mount --bind {root} {root} && mount -o remount,bind,ro {root} {root} && "
              f"exec {sys.executable} -m rsmatch_usb.export_usb --usb-root {root}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rsmatch-export-usb: error: ") and "is not writable" in err[0], err
    assert done.stdout == ""
    assert snapshot(root) == before


# ---------------------------------------------------------------- import rewriting
def test_rewrite_maps_plugin_imports_into_the_folder_and_substitutes_the_error_type():
    source = ("import torch\n"
              "from rsmatch_usb.heads import (ExtraHeadsMixin,\n    unwrap)  # the mixin\n"
              "from ...errors import UserError\n"
              "from rsmatch_usb import heads as h\n"
              "from ..utils import read_image\n"
              "from .csqueue import CSQueue\n"
              "from semilearn.core.utils import ALGORITHMS\n"
              "\n"
              "def check(x):\n"
              "    if x < 0:\n"
              "        raise UserError(f'x: {x} < 0')\n")
    out = rewrite.rewrite_imports(source, PACKAGE, "x.py")
    assert out == ("import torch\n"
                   "from .heads import ExtraHeadsMixin, unwrap  # the mixin\n"
                   "from . import heads as h\n"
                   "from .utils import read_image\n"
                   "from .csqueue import CSQueue\n"
                   "from semilearn.core.utils import ALGORITHMS\n"
                   "\n"
                   "def check(x):\n"
                   "    if x < 0:\n"
                   "        raise ValueError(f'x: {x} < 0')\n")
    assert rewrite.plugin_imports(out, rewrite.TARGET_PACKAGE, "x.py") == []


@pytest.mark.parametrize("line", ["from rsmatch_usb.runtime import activate\n",
                                  "from data_tools.usb import get_dataset\n",
                                  "import data_tools\n",
                                  "from ...train import cli\n"])
def test_rewrite_fails_loudly_on_imports_without_a_counterpart(line):
    with pytest.raises(rewrite.ExportError, match="x.py:1"):
        rewrite.rewrite_imports(line, PACKAGE, "x.py")


def test_export_fails_when_a_needed_plugin_module_is_not_listed(monkeypatch, tmp_path, capsys):
    root = usb_tree(tmp_path / "usb")
    before = snapshot(root)
    monkeypatch.setattr(manifest, "MODULES", {m: n for m, n in manifest.MODULES.items() if m != "rsmatch_usb.heads"})
    assert export_usb.cli(["--usb-root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rsmatch_usb.heads" in err[0] and "manifest.py" in err[0]
    assert snapshot(root) == before


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


# ---------------------------------------------------------------- USB without the plugin
@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_exported_rsmatch_trains_in_a_main_shaped_usb_without_the_plugin(exported, tmp_path):
    root, _, _ = exported
    config = root / usb_configs.EXPORT_CONFIG_DIR / "rsmatch_cifar10_40_0.yaml"
    # No PYTHONPATH: the worktree (and so rsmatch_usb) must not be reachable from it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-W", "ignore", CHILD, str(root), str(config), RUNTIME,
                           str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["iterations"] == 2
    # The tree is main's shape: its own algorithms stay registered beside rsmatch, and its
    # BasicDataset takes medium_transform before strong_transform.
    assert {"rsmatch", *MAIN_ONLY_ALGORITHMS} <= set(found["algorithms"])
    params = found["basic_dataset_parameters"]
    assert params.index("medium_transform") == params.index("strong_transform") - 1
    assert {"model", "ema_model", "extra_heads", "detector", "detector_ema", "csqueue",
            "rsmatch_state"} <= set(found["checkpoint_keys"])
    assert found["plugin_modules"] == [] and found["semilearn_outside_copy"] == []
    assert all(m.startswith("semilearn.algorithms.rsmatch.") for m in found["module_of_parts"])
    # The run reached the detector-routed phase: queue draws and the dummy head's loss.
    assert found["detector_trusted"] and found["queued"] > 0
    assert found["last_step"]["train/syn_ratio"] == 1.0
    assert found["last_step"]["train/syn_unsup_loss"] > 0
