"""A run writes and clears only its own folder: save_name names a plain subfolder, overwrite clears only run folders."""
import io
import os

import pytest

from conftest import tiny_config, write_config

from benchmark_configs import run
from data_tools.run_folder import MARKER


def _train(tmp_path, cfg, capsys):
    """rsmatch-train on ``cfg`` in this process: (exit code, its stderr lines)."""
    from rsmatch_usb.train import cli

    code = cli(["--c", write_config(tmp_path, cfg, "config.yaml")])
    return code, capsys.readouterr().err.strip().splitlines()


def _tree(root):
    """Every file under ``root`` with its bytes: what a run must leave alone."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


@pytest.fixture
def workdir(tmp_path):
    """A working directory holding a user's file and another run under ``saved_models``."""
    work = tmp_path / "work"
    (work / "saved_models" / "other_run").mkdir(parents=True)
    (work / "notes.txt").write_text("a user's file")
    (work / "saved_models" / "other_run" / "log.txt").write_text("another run's log")
    return work


@pytest.mark.parametrize("save_name", ["..", "", ".", None, "sub/run", "ABSOLUTE"])
def test_a_save_name_that_is_not_a_plain_folder_is_one_error_line(tmp_path, workdir, capsys, save_name):
    if save_name == "ABSOLUTE":
        save_name = str(workdir)
    # overwrite: True is the default; '..' used to empty the working directory, '' the whole save_dir.
    cfg = tiny_config(tmp_path, save_dir=str(workdir / "saved_models"), save_name=save_name, overwrite=True)
    before = _tree(workdir)
    code, err = _train(tmp_path, cfg, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("rsmatch-train: error: save_name: ")
    assert "must name a plain folder inside save_dir" in err[0]
    assert _tree(workdir) == before


def test_runner_refuses_an_empty_save_name_before_running_anything(tmp_path, workdir, capsys):
    config = tmp_path / "empty_name.yaml"
    config.write_text(f"algorithm: fixmatch\nsave_dir: {workdir / 'saved_models'}\nsave_name: ''\n"
                      "num_train_iter: 2\noverwrite: False\n")
    before = _tree(workdir)
    with pytest.raises(SystemExit) as exc:
        run.main([str(config)], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "save_name: '' must name a plain folder" in err[0], err
    assert _tree(workdir) == before


def test_overwrite_never_empties_a_folder_no_run_wrote(tmp_path, capsys):
    cfg = tiny_config(tmp_path, name="photos", overwrite=True)
    folder = os.path.join(cfg["save_dir"], cfg["save_name"])
    os.makedirs(folder)
    with open(os.path.join(folder, "2023_0101.png"), "wb") as f:
        f.write(b"a user's photo")
    code, err = _train(tmp_path, cfg, capsys)
    assert code == 2
    assert len(err) == 1 and "holds files that no run wrote (2023_0101.png)" in err[0], err
    assert os.listdir(folder) == ["2023_0101.png"]


def test_overwrite_clears_a_run_folder_a_run_made(tmp_path, capsys):
    cfg = tiny_config(tmp_path, name="again", overwrite=True)
    code, _ = _train(tmp_path, cfg, capsys)
    assert code == 0
    folder = os.path.join(cfg["save_dir"], cfg["save_name"])
    assert os.path.isfile(os.path.join(folder, MARKER))
    # A file the user left in the run's own folder goes with the run (the folder is the run's).
    with open(os.path.join(folder, "scratch.txt"), "w") as f:
        f.write("x")
    code, _ = _train(tmp_path, dict(cfg, seed=1), capsys)
    assert code == 0
    assert not os.path.exists(os.path.join(folder, "scratch.txt"))
    with open(os.path.join(folder, "log.txt")) as f:
        assert f.read().count("Use device:") == 1  # the earlier run's log went


def test_overwrite_clears_an_unmarked_folder_holding_only_run_outputs(tmp_path, capsys):
    """A run folder of an older version (or USB's): log, checkpoints, lock, tensorboard and nothing else."""
    cfg = tiny_config(tmp_path, name="old", overwrite=True)
    folder = os.path.join(cfg["save_dir"], cfg["save_name"])
    os.makedirs(os.path.join(folder, "tensorboard"))
    for name in ("log.txt", "metrics.jsonl", "latest_model.pth.tmp", ".lock"):
        with open(os.path.join(folder, name), "w") as f:
            f.write("old")
    code, _ = _train(tmp_path, cfg, capsys)
    assert code == 0
    assert not os.path.exists(os.path.join(folder, "latest_model.pth.tmp"))
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        assert f.read().startswith('{"kind": "event", "it": 0')  # the new run's records only


def test_runner_passes_the_configs_overwrite(tmp_path):
    """The runner used to add --overwrite True to every new run, even with overwrite: False in the config."""
    (tmp_path / "keep.yaml").write_text(f"save_dir: {tmp_path / 'runs'}\nsave_name: keep\nnum_train_iter: 2\n"
                                        "overwrite: False\n")
    (tmp_path / "default.yaml").write_text(f"save_dir: {tmp_path / 'runs'}\nsave_name: default\nnum_train_iter: 2\n")
    for r in run.collect(None, [str(tmp_path / "*.yaml")], None):
        cmd = run.command(run.inspect(r))
        # The train command reads overwrite from the config (default True), as a hand-started run does.
        assert "--overwrite" not in cmd and cmd[cmd.index("--resume") + 1] == "False"


def test_runner_reports_a_count_that_is_not_a_number(tmp_path, capsys):
    (tmp_path / "twelve.yaml").write_text(f"save_dir: {tmp_path}\nsave_name: twelve\nnum_train_iter: twelve\n")
    with pytest.raises(SystemExit) as exc:
        run.main([str(tmp_path / "twelve.yaml"), "--dry-run"], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert "num_train_iter: 'twelve' is not valid; give an integer >= 1" in err[0], err
