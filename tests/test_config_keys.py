"""Unknown config keys and flags are errors naming the closest key; every key USB's configs use loads."""
import glob
import os

import pytest

from conftest import REPO, run_train, tiny_config, write_config

# The top-level keys of every YAML under config/ of microsoft/Semi-supervised-learning at the
# semilearn 0.3.2 release (commit a8ec1d7, 1082 files). They must all stay accepted.
USB_032_CONFIG_KEYS = """
C K T abc_loss_ratio abc_p_cutoff algorithm amp batch_size clip clip_thresh contrast_loss_ratio
contrast_p_cutoff cossl_max_lam cossl_tfe_augment cossl_tfe_u_ratio cossl_tfe_warm_bs
cossl_tfe_warm_ema_decay cossl_tfe_warm_epoch cossl_tfe_warm_lr cossl_tfe_warm_wd cossl_warm_epoch
crest_alpha crest_dist_align_t crest_num_gens crest_pro_dist_align crop_ratio da_len darp_alpha
darp_iter_T darp_num_refine_iter darp_warmup_epochs daso_T_dist daso_T_proto daso_assign_loss_ratio
daso_interp_alpha daso_num_pl_dist_iter daso_num_pretrain_iter daso_queue_len daso_with_dist_aware
data_dir dataset dist_align dist_align_target dist_backend dist_uniform dist_url ema_m ema_p
ent_loss_ratio epoch eval_batch_size gamma gpu hard_label imb_algorithm img_size in_loss_ratio
include_lb_to_ulb kl_loss_ratio layer_decay lb_imb_ratio load_path lr max_length max_length_seconds
mixup_alpha mixup_manifold momentum multiprocessing_distributed n_sigma net net_from_name
num_classes num_eval_iter num_labels num_log_iter num_train_iter num_warmup_iter num_workers
num_wu_iter optim overwrite p_cutoff per_class pretrain_path proj_size queue_batch rank resume
rho_min rot_loss_ratio sample_rate save_dir save_name seed simis_la smoothing_alpha thresh_warmup
train_sampler tsa_schedule ulb_imb_ratio ulb_loss_ratio ulb_num_labels unsup_warm_up uratio use_cat
use_pretrain use_quantile use_tensorboard use_wandb vat_embed weight_decay world_size
""".split()


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rsmatch-train: error: "), err
    return err[0]


def test_misspelled_yaml_key_is_an_error_naming_the_key(tmp_path, capsys):
    cfg = tiny_config(tmp_path, synthetic_source="bundled", synthetic_ration=1.0)
    code, run_dir = run_train(tmp_path, cfg)
    line = _one_error_line(capsys)
    assert code == 2
    assert "unknown key synthetic_ration (did you mean synthetic_ratio?)" in line
    assert not os.path.exists(cfg["save_dir"])


def test_misspelled_flag_is_an_error_naming_the_flag(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    code, _ = run_train(tmp_path, cfg, "--num_lables", "40")
    assert code == 2
    assert "unknown flag --num_lables (did you mean --num_labels?)" in _one_error_line(capsys)
    code, _ = run_train(tmp_path, cfg, "--synthetic-ration=0.5")
    assert code == 2
    assert "unknown flag --synthetic-ration (did you mean --synthetic_ratio?)" in _one_error_line(capsys)
    assert not os.path.exists(cfg["save_dir"])


def test_every_key_of_usb_configs_is_accepted(tmp_path):
    from rsmatch_usb.config import base_parser, known_keys

    assert len(USB_032_CONFIG_KEYS) == 113
    assert set(USB_032_CONFIG_KEYS) - known_keys(base_parser()) == set()


def test_usb_only_keys_load_through_get_config(tmp_path):
    """Keys USB's configs set for another algorithm, or for none, load as USB loads them."""
    from rsmatch_usb.config import get_config

    path = write_config(tmp_path, dict(algorithm="dash", p_cutoff=0.95, clip=0.0, simis_la=False,
                                       dist_align_target="uniform", world_size=1))
    args = get_config(["--c", path])
    assert (args.p_cutoff, args.simis_la, args.dist_align_target) == (0.95, False, "uniform")


def test_hand_written_committed_configs_load(tmp_path):
    """The configs outside the generated grids (those test_benchmark_tools checks) load too."""
    from rsmatch_usb.config import get_config

    generated = {os.path.join(REPO, "benchmark_configs", d) for d in ("paper", os.path.join("embedded", "grid"))}
    files = [f for f in glob.glob(os.path.join(REPO, "**", "*.y*ml"), recursive=True)
             if not f.startswith(tuple(generated)) and f"{os.sep}." not in f[len(REPO):]]
    assert files, "no hand-written config found"
    for path in files:
        get_config(["--c", path])


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a UTF-8 text file"),
    (b"- a\n- b\n", "must hold a mapping"),
])
def test_config_that_is_not_a_yaml_mapping(tmp_path, capsys, content, message):
    from rsmatch_usb.train import cli

    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert cli(["--c", str(path), "--save_dir", str(tmp_path / "runs")]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_runner_given_a_binary_config_is_one_error_line(tmp_path, capsys):
    import io

    from benchmark_configs import run

    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(SystemExit) as exc:
        run.main([str(path), "--dry-run"], out=io.StringIO())
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "is not a UTF-8 text file" in err[0]


def _alias_bomb(key):
    """A 'billion laughs' config: ``key`` stands for 9^9 strings in under 1 KB."""
    levels = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return f"{key}:\n" + "".join(f"  - {level}\n" for level in levels)


@pytest.mark.parametrize("content, message", [
    (_alias_bomb("save_name"), "stands for more than 10000 values once its aliases are expanded"),
    (_alias_bomb("synthetic_source"), "stands for more than 10000 values once its aliases are expanded"),
    ("save_name: &a [1, *a]\n", "refers to itself"),
    ("save_name: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
])
@pytest.mark.timeout(60)
def test_yaml_alias_bomb_is_one_short_error_line(tmp_path, capsys, content, message):
    """Was a 310 KB error line or a MemoryError (the error line's repr expanded the aliases)."""
    from rsmatch_usb.train import cli

    path = tmp_path / "bomb.yaml"
    path.write_text(content)
    assert cli(["--c", str(path), "--save_dir", str(tmp_path / "runs")]) == 2
    line = _one_error_line(capsys)
    assert message in line and len(line) < 300, line
    assert not (tmp_path / "runs").exists()


def test_a_long_value_in_an_error_line_is_cut_short(tmp_path, capsys):
    from rsmatch_usb.train import cli

    path = write_config(tmp_path, tiny_config(tmp_path, save_name=["lol"] * 50, batch_size=list(range(900))))
    assert cli(["--c", path]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("rsmatch-train: error: batch_size: [0, 1, 2, 3, ...] is not valid") and len(line) < 200
