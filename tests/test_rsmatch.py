"""RSMatch: loss routing, the FixMatch special case, resume, and training on contaminated digits."""
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, read_log, run_train, tiny_config, write_config
from rsmatch_usb.fingerprints import logged_fingerprints

# RS-SSL digits: the unlabeled set gets as many bundled synthetic digits as it has real ones.
CONTAMINATED = dict(synthetic_source="bundled", synthetic_ratio=1.0)


def rsmatch_config(tmp_path, name="rsmatch", **overrides):
    cfg = tiny_config(tmp_path, name=name, algorithm="rsmatch", detector_width=4, **CONTAMINATED)
    cfg.update(overrides)
    return cfg


def build_algorithm(tmp_path, cfg):
    """The algorithm as rsmatch-train builds it, without training."""
    from rsmatch_usb import train
    from rsmatch_usb.config import get_config

    args = train.prepare(get_config(["--c", write_config(tmp_path, cfg, f"{cfg['save_name']}_build.yaml")]))
    return train.build_algorithm(args, 1, logging.getLogger("test_rsmatch"))


def logged(log, key):
    """{iteration: value} of a train/ or eval/ key in the log."""
    out = {}
    for it, line in re.findall(r"^\[.*?\] (\d+) iteration(.*)$", log, flags=re.M):
        m = re.search(rf"{re.escape(key)}: (-?[\d.]+)", line)
        if m:
            out[int(it)] = float(m.group(1))
    return out


def _checkpoint(run_dir, name="latest_model.pth"):
    return torch.load(os.path.join(run_dir, name), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- routing
@pytest.fixture
def routed(tmp_path, monkeypatch):
    """An RSMatch algorithm with a fixed detector and a batch; returns (algorithm, batch, syn mask)."""

    def make(**overrides):
        # p_cutoff 0: every pseudo-label passes, so every sample could reach a loss.
        # No held-out labeled images: the patched detector scores the unlabeled batch only.
        alg = build_algorithm(tmp_path, rsmatch_config(tmp_path, p_cutoff=0.0, detector_calib_per_class=0,
                                                       **overrides))
        # Eval-mode BatchNorm makes each sample's output independent of the others',
        # so changing one sample changes only that sample's loss terms.
        alg.model.eval()
        batch_lb = next(iter(alg.loader_dict["train_lb"]))
        batch_ulb = next(iter(alg.loader_dict["train_ulb"]))
        batch = alg.process_batch(**batch_lb, **batch_ulb)
        n = batch["x_ulb_w"].shape[0]
        syn = torch.arange(n) % 3 == 0
        scores = torch.where(syn, torch.tensor(0.9), torch.tensor(0.1))
        monkeypatch.setattr(alg.detector, "score", lambda x: scores.clone())
        monkeypatch.setattr(alg, "detector_step", lambda *a, **k: (0.0, 1.0))
        alg.router.trusted = True
        return alg, batch, syn

    return make


def _head_grads(alg, batch):
    out, _ = alg.train_step(**batch)
    real_head = list(alg.model.classifier.parameters())
    dummy_head = list(alg.extra_heads["dummy"].parameters())
    grads = torch.autograd.grad(out["loss"], real_head + dummy_head, allow_unused=True)
    flat = [torch.zeros_like(p).flatten() if g is None else g.flatten() for p, g in zip(real_head + dummy_head, grads)]
    return torch.cat(flat[:len(real_head)]), torch.cat(flat[len(real_head):])


def _perturb(batch, key, rows):
    changed = dict(batch)
    x = batch[key].clone()
    x[rows] = torch.randn_like(x[rows])
    changed[key] = x
    return changed


def _same(a, b):
    return torch.allclose(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("base, dummy_pseudo_label", [("fixmatch", "real"), ("fixmatch", "dummy"),
                                                       ("flexmatch", "real"), ("freematch", "real"),
                                                       ("softmatch", "real")])
def test_real_head_learns_from_labeled_and_real_judged_dummy_head_from_synthetic_judged(routed, base,
                                                                                         dummy_pseudo_label):
    alg, batch, syn = routed(base_algorithm=base, dummy_pseudo_label=dummy_pseudo_label)
    assert type(alg).__name__.lower() == "rs" + base
    real, dummy = _head_grads(alg, batch)
    assert real.abs().sum() > 0 and dummy.abs().sum() > 0

    # The strong views are what the heads learn from (the weak views only make targets).
    real_s, dummy_s = _head_grads(alg, _perturb(batch, "x_ulb_s", syn))
    assert _same(real_s, real) and not _same(dummy_s, dummy)

    real_r, dummy_r = _head_grads(alg, _perturb(batch, "x_ulb_s", ~syn))
    assert _same(dummy_r, dummy) and not _same(real_r, real)

    real_l, dummy_l = _head_grads(alg, _perturb(batch, "x_lb", slice(None)))
    assert _same(dummy_l, dummy) and not _same(real_l, real)


def test_filter_baseline_discards_synthetic_judged(routed):
    alg, batch, syn = routed(use_dummy_head=False)
    real, dummy = _head_grads(alg, batch)
    assert dummy.abs().sum() == 0
    real_s, _ = _head_grads(alg, _perturb(batch, "x_ulb_s", syn))
    assert _same(real_s, real)
    real_r, _ = _head_grads(alg, _perturb(batch, "x_ulb_s", ~syn))
    assert not _same(real_r, real)


def test_untrusted_detector_routes_everything_to_the_real_head(routed):
    alg, batch, syn = routed()
    alg.router.trusted = False
    real, dummy = _head_grads(alg, batch)
    assert dummy.abs().sum() == 0
    real_s, _ = _head_grads(alg, _perturb(batch, "x_ulb_s", syn))
    assert not _same(real_s, real)


def test_oracle_routes_the_ground_truth_synthetic_samples_from_the_first_step(tmp_path, monkeypatch):
    from rsmatch_usb.errors import UserError
    from rsmatch_usb.origin import unlabeled_origin

    alg = build_algorithm(tmp_path, rsmatch_config(tmp_path, detector_oracle=True, detector_calib_per_class=0))
    assert not alg.router.trusted
    batch = alg.process_batch(**next(iter(alg.loader_dict["train_lb"])), **next(iter(alg.loader_dict["train_ulb"])))
    # The detector judges every sample real; the oracle routes by the flags regardless.
    monkeypatch.setattr(alg.detector, "score", lambda x: torch.full((x.shape[0],), 0.1))
    monkeypatch.setattr(alg, "detector_step", lambda *a, **k: (0.0, 1.0))
    seen = {}

    def dummy_loss(feats, pseudo_label, mask, syn):
        seen["syn"] = syn.clone()
        return torch.zeros(())

    monkeypatch.setattr(alg, "dummy_head_loss", dummy_loss)
    alg.train_step(**batch)
    truth = torch.from_numpy(unlabeled_origin(alg)[0])[batch["idx_ulb"]].float()
    assert 0 < truth.sum() < len(truth)  # the batch holds both kinds
    assert torch.equal(seen["syn"], truth)
    with pytest.raises(UserError, match="detector_oracle"):
        build_algorithm(tmp_path, rsmatch_config(tmp_path, name="oracle_off", detector_oracle=True,
                                                 use_detector=False))


def test_the_routed_mask_is_the_bases_times_judged_real_and_the_base_keeps_its_hook(tmp_path):
    alg = build_algorithm(tmp_path, rsmatch_config(tmp_path, base_algorithm="flexmatch"))
    hook = alg.hooks_dict["MaskingHook"]
    # The base's own hooks stay registered, once each, with RSMatch's routing mixed into their classes; RSMatch
    # does not override call_hook.
    from rsmatch_usb.algorithms.rsmatch.rsmatch import RecordedPseudoLabels, RoutedMasking, RSMixin
    assert isinstance(hook, RoutedMasking) and hook in alg._hooks
    assert "FlexMatchThresholdingHook" in [c.__name__ for c in type(hook).__mro__]
    assert [h.name for h in alg._hooks].count("MaskingHook") == 1 and "call_hook" not in vars(RSMixin)
    # FlexMatch's load_model writes its thresholds' state through hooks_dict["MaskingHook"]; it must land
    # in the hook that computes the mask.
    hook.classwise_acc = torch.full_like(hook.classwise_acc, 0.5)
    alg.epoch = 0  # set by train(); read by get_save_dict
    assert torch.equal(alg.get_save_dict()["classwise_acc"], hook.classwise_acc)
    # The mask: the base's, times "judged real" while set; the base's own is kept.
    probs = torch.tensor([[0.99, 0.01], [0.99, 0.01], [0.6, 0.4]])
    idx = torch.tensor([0, 1, 2])
    base = hook.masking(alg, logits_x_ulb=probs, idx_ulb=idx, softmax_x_ulb=False)
    hook.real = torch.tensor([1.0, 0.0, 1.0])
    routed = alg.call_hook("masking", "MaskingHook", logits_x_ulb=probs, idx_ulb=idx, softmax_x_ulb=False)
    assert torch.equal(routed, base * hook.real) and torch.equal(hook.mask, base) and routed[1] == 0 < base[1]
    hook.real = None
    assert torch.equal(alg.call_hook("masking", "MaskingHook", logits_x_ulb=probs, idx_ulb=idx, softmax_x_ulb=False),
                       base)
    labels = alg.call_hook("gen_ulb_targets", "PseudoLabelingHook", logits=probs, use_hard_label=True, T=1.0,
                           softmax=False)
    labeling = alg.hooks_dict["PseudoLabelingHook"]
    assert isinstance(labeling, RecordedPseudoLabels) and labeling.targets is labels


# ---------------------------------------------------------------- detector supervision and the gate
def test_lowest_scoring_unlabeled_samples_join_the_real_side_in_the_bootstrap_too(tmp_path, monkeypatch):
    alg = build_algorithm(tmp_path, rsmatch_config(tmp_path, detector_ulb_real=3, detector_calib_per_class=0))
    seen = {}
    monkeypatch.setattr(alg.detector, "step", lambda x, target, weight: seen.update(x=x, target=target) or (0.0, 1.0))
    x_lb, x_ulb = torch.randn(4, 3, 16, 16), torch.randn(6, 3, 16, 16)
    scores = torch.tensor([0.4, 0.1, 0.3, 0.05, 0.2, 0.9])
    assert not alg.router.trusted
    alg.detector_step(x_lb, torch.arange(6), x_ulb, torch.zeros(6, dtype=torch.long), scores)
    real = seen["x"][seen["target"] == 0]
    # The labeled images, then the three lowest-scoring unlabeled ones; the whole batch stays on the PU side.
    assert torch.equal(real, torch.cat((x_lb, x_ulb[[3, 1, 4]])))
    assert torch.equal(seen["x"][seen["target"] == 1], x_ulb)


def test_the_bootstrap_ends_when_the_gate_share_of_sub_queues_is_full(tmp_path):
    alg = build_algorithm(tmp_path, rsmatch_config(tmp_path, queue_size=8, queue_min_fill=2, queue_gate_share=0.8))
    alg.csqueue.fill[:] = torch.tensor([2, 2, 2, 2, 2, 2, 2, 1, 0, 0])
    assert not alg.router.queue_ready
    alg.csqueue.fill[7] = 2
    assert alg.router.queue_ready  # 8 of 10 classes
    alg.router.queue_gate_share = 0.7
    alg.csqueue.fill[7] = 1
    assert alg.router.queue_ready  # 7 of 10
    every = build_algorithm(tmp_path, rsmatch_config(tmp_path, queue_size=8, queue_min_fill=2))
    every.csqueue.fill[:] = alg.csqueue.fill
    assert not every.router.queue_ready  # the default gate needs every class


def test_calibration_floor_is_the_chosen_quantile_of_the_held_out_scores(tmp_path):
    scores = torch.tensor([0.1, 0.2, float("nan"), 0.3, 0.9])
    router = build_algorithm(tmp_path, rsmatch_config(tmp_path)).router
    router.calib_scores = scores
    assert router.calibration_floor == pytest.approx(0.9)  # default: the maximum
    router.calib_quantile = 0.5
    assert router.calibration_floor == pytest.approx(0.25)
    router.calib_scores = torch.full((3,), float("nan"))
    assert router.calibration_floor == float("-inf")


# ---------------------------------------------------------------- the base special case
# Detector on but never trusted: the routing machinery runs (mask scaled by 1, a zero dummy loss)
# and must not touch the global RNG either.
UNTRUSTED = dict(queue_size=1000, queue_min_fill=1000)


@pytest.mark.parametrize("base, variant", [("fixmatch", dict(use_detector=False)), ("fixmatch", UNTRUSTED),
                                           ("flexmatch", UNTRUSTED), ("freematch", UNTRUSTED),
                                           ("softmatch", UNTRUSTED)])
@pytest.mark.slow
def test_without_detector_it_is_the_base_step_for_step(tmp_path, base, variant):
    common = dict(p_cutoff=0.0, num_train_iter=4, num_eval_iter=2, num_log_iter=1, **CONTAMINATED)
    code, fix_dir = run_train(tmp_path, tiny_config(tmp_path, name=base, algorithm=base, **common))
    assert code == 0
    code, rs_dir = run_train(tmp_path, rsmatch_config(tmp_path, base_algorithm=base, **common, **variant))
    assert code == 0
    fix_log, rs_log = read_log(fix_dir), read_log(rs_dir)
    for key in ("train/sup_loss", "train/unsup_loss", "train/total_loss", "eval/top-1-acc"):
        assert logged(rs_log, key) == logged(fix_log, key), key
    assert len(logged(fix_log, "train/total_loss")) == 4
    assert max(logged(fix_log, "train/unsup_loss").values()) > 0  # the unlabeled loss is exercised
    fix_ckpt, rs_ckpt = _checkpoint(fix_dir), _checkpoint(rs_dir)
    for entry in ("model", "ema_model"):
        assert fix_ckpt[entry].keys() == rs_ckpt[entry].keys()
        assert all(torch.equal(fix_ckpt[entry][k], rs_ckpt[entry][k]) for k in fix_ckpt[entry])


# ---------------------------------------------------------------- clean data
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_on_clean_data_the_detector_routes_almost_nothing(tmp_path):
    # alpha 0: nothing synthetic to find. A small queue that fills fast, so that the bootstrap
    # ends early and the uncalibrated detector would route about a third of the batch (docs/rsmatch.md).
    cfg = rsmatch_config(tmp_path, synthetic_ratio=0.0, num_train_iter=150, num_eval_iter=150, num_log_iter=5,
                         detector_lr=3e-3, queue_size=8, queue_min_fill=2, detector_eval_samples=500)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    syn_ratio = logged(log, "train/syn_ratio")
    after_bootstrap = [v for it, v in syn_ratio.items() if it > 50]
    assert len(after_bootstrap) == 20
    assert np.mean(after_bootstrap) <= 0.03, after_bootstrap
    assert logged(log, "eval/detector_fpr")[150] <= 0.03


# ---------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_resume_restores_queue_detector_and_generator(tmp_path):
    # Switch over at the first push, so the run draws from the queue before the checkpoint.
    cfg = rsmatch_config(tmp_path, num_train_iter=4, num_eval_iter=4, queue_size=4, queue_min_fill=0,
                         queue_min_score=0.0, detector_calib_per_class=0)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    ckpt = _checkpoint(run_dir)  # weights_only: tensors and plain containers only
    assert ckpt["it"] == 4 and bool(ckpt["rsmatch_state"]["detector_trusted"])
    assert int(ckpt["csqueue"]["fill"].sum()) > 0
    assert "dummy" in str(list(ckpt["extra_heads"]))

    resumed = dict(cfg, num_train_iter=6, resume=True, load_path=os.path.join(run_dir, "latest_model.pth"))
    alg = build_algorithm(tmp_path, resumed)
    fresh_generator = alg.trainer.generator.get_state()
    alg.load_model(resumed["load_path"])
    assert alg.it == 4 and alg.router.trusted
    state = alg.get_save_dict()
    for entry in ("csqueue", "detector", "detector_ema", "extra_heads"):
        # The detector networks' settings (_extra_state) are a dict, the rest tensors.
        assert all(torch.equal(state[entry][k], v) if torch.is_tensor(v) else state[entry][k] == v
                   for k, v in ckpt[entry].items()), entry
    assert torch.equal(alg.trainer.generator.get_state(), ckpt["rsmatch_state"]["queue_generator"])
    # The next step's queue draw, requested before the checkpoint, is requested again.
    pending = ckpt["rsmatch_state"]["queue_draw"]
    assert len(pending["indices"]) == cfg["batch_size"] and int(pending["seed"]) >= 0
    assert all(torch.equal(v, pending[k]) for k, v in alg.trainer.draws.pending().items())
    assert not torch.equal(fresh_generator, ckpt["rsmatch_state"]["queue_generator"])
    opt, saved = state["detector_optimizer"]["state"], ckpt["detector_optimizer"]["state"]
    assert opt.keys() == saved.keys() and all(torch.equal(opt[p]["exp_avg"], saved[p]["exp_avg"]) for p in opt)

    code, _ = run_train(tmp_path, resumed)
    assert code == 0
    log = read_log(run_dir)
    assert "at iteration 4" in log
    iterations = [int(m) for m in re.findall(r"^\[.*\] (\d+) iteration", log, flags=re.M)]
    assert iterations[-2:] == [5, 6]
    assert _checkpoint(run_dir)["it"] == 6


@pytest.mark.parametrize("key, value", [("dummy_pseudo_label", "both"), ("base_algorithm", "mixmatch"),
                                        ("queue_gate_share", 0.0), ("detector_calib_quantile", 1.5)])
def test_wrong_choice_is_a_user_error(tmp_path, capsys, key, value):
    code, _ = run_train(tmp_path, rsmatch_config(tmp_path, **{key: value}))
    assert code == 2
    assert key in capsys.readouterr().err


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trains_on_contaminated_digits_and_saves_a_plain_backbone(tmp_path):
    from data_tools import usb as usb_data
    from rsmatch_usb.config import get_config
    from rsmatch_usb.nets import get_net_builder

    cfg = rsmatch_config(tmp_path, num_train_iter=100, num_eval_iter=50, num_log_iter=25, batch_size=16,
                         uratio=1, detector_width=8, detector_lr=3e-3, queue_size=16, queue_min_fill=8,
                         detector_eval_samples=500)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "RSMatch detector:" in log and "CSQueue fill per class" in log
    for key in ("train/detector_loss", "train/detector_acc", "train/syn_ratio", "train/queue_fill_min",
                "eval/detector_precision", "eval/detector_recall", "eval/queue_purity"):
        assert logged(log, key), key
    auroc = logged(log, "eval/detector_auroc")
    assert sorted(auroc) == [50, 100]
    assert auroc[100] > 0.5

    # model_best.pth holds plain backbone state dicts that USB's eval.py can load...
    best = _checkpoint(run_dir, "model_best.pth")
    net = get_net_builder("resnet_micro")(num_classes=10)
    net.load_state_dict(best["model"], strict=True)
    net.load_state_dict(best["ema_model"], strict=True)
    # ...and evaluation used only the real head: the plain net reproduces the best accuracy.
    args = get_config(["--c", write_config(tmp_path, cfg, "eval.yaml")])
    eval_set = usb_data.get_dataset(args, "rsmatch", "digits", 40, 10)["eval"]
    net.eval()
    with torch.no_grad():
        x = torch.stack([eval_set[i]["x_lb"] for i in range(len(eval_set))])
        y = np.array([eval_set[i]["y_lb"] for i in range(len(eval_set))])
        acc = (net(x)["logits"].argmax(1).numpy() == y).mean()
    best_acc = float(re.findall(r"BEST_EVAL_ACC: ([\d.]+)", log)[-1])
    assert acc == pytest.approx(best_acc, abs=1e-4)


@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_two_process_gloo_ddp_keeps_detector_and_queue_in_sync(tmp_path):
    cfg = rsmatch_config(tmp_path, name="ddp", world_size=2, multiprocessing_distributed=True, batch_size=8,
                         num_train_iter=4, num_eval_iter=4, queue_size=4, queue_min_fill=0, queue_min_score=0.0,
                         detector_calib_per_class=0)
    proc = subprocess.run([sys.executable, "-m", "rsmatch_usb.train", "--c", write_config(tmp_path, cfg)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backbone = logged_fingerprints(proc.stderr, "training is FINISHED; parameter fingerprint")
    rsmatch = logged_fingerprints(proc.stderr, "RSMatch detector and queue fingerprint")
    assert set(backbone) == set(rsmatch) == {"0", "1"}
    assert backbone["0"] == backbone["1"] and rsmatch["0"] == rsmatch["1"]
    ckpt = _checkpoint(os.path.join(cfg["save_dir"], "ddp"))
    assert bool(ckpt["rsmatch_state"]["detector_trusted"]) and int(ckpt["csqueue"]["fill"].sum()) > 0
