"""RSMatch's Detector component (network, EMA scorer, optimizer, step, state): plain PyTorch, no semilearn."""
import copy
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from rsmatch_usb.algorithms.rsmatch.detector import Detector


def _batch(n=16, seed=0):
    """Half "real" (dark noise), half "synthetic" (bright noise): separable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    target = (torch.arange(n) >= n // 2).float()
    x[target == 1] += 1.0
    return x, target


def test_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = Detector(width=4, seed=3), Detector(width=4, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    c = Detector(width=4, seed=4)
    assert not all(torch.equal(p, q) for p, q in zip(a.net.parameters(), c.net.parameters()))
    # The scorer starts as a copy of the network and is not trained by the optimizer.
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), a.ema.parameters()))
    assert not any(p.requires_grad for p in a.ema.parameters())


def test_step_learns_and_the_ema_scorer_follows():
    det = Detector(width=4, lr=3e-2, ema_m=0.8, seed=0)
    x, target = _batch()
    before = det.score(x)
    for _ in range(25):
        loss, acc = det.step(x, target)
    scores = det.score(x)
    assert acc == 1.0 and loss < 0.3
    assert scores[target == 1].min() > scores[target == 0].max()  # the EMA scorer separates them
    assert not torch.equal(before, scores)
    assert scores.dtype == torch.float32 and ((scores >= 0) & (scores <= 1)).all()


def test_ema_momentum_zero_scores_with_the_network():
    det = Detector(width=4, lr=1e-2, ema_m=0.0, seed=0)
    x, target = _batch()
    det.step(x, target)
    assert all(torch.equal(p, q) for p, q in zip(det.net.parameters(), det.ema.parameters()))


def test_weights_scale_each_sample_in_the_loss():
    x, target = _batch()
    weight = torch.where(target == 1, torch.tensor(0.25), torch.tensor(1.0))
    det = Detector(width=4, seed=0)
    with torch.no_grad():
        logits = det.net(x)  # train-mode BatchNorm, as in step
    expected = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
                * weight).sum() / weight.sum()
    loss, _ = Detector(width=4, seed=0).step(x, target, weight)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_scoring_is_fp32_with_autocast_off():
    det = Detector(width=4, seed=0)
    x, _ = _batch()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        scores = det.score(x.bfloat16())
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, det.score(x.bfloat16().float()))


def test_state_dict_round_trip_restores_net_scorer_and_optimizer():
    x, target = _batch()
    det = Detector(width=4, lr=1e-2, seed=0)
    for _ in range(3):
        det.step(x, target)
    # As a checkpoint holds it: a copy (torch's optimizer load would otherwise share the Adam moments).
    state = copy.deepcopy(det.state_dict())
    assert set(state) == {"detector", "detector_ema", "detector_optimizer"}
    fresh = Detector(width=4, lr=1e-2, seed=1)
    fresh.load_state_dict(state)
    # The two now continue identically, step for step.
    for _ in range(2):
        assert det.step(x, target) == fresh.step(x, target)
    assert torch.equal(det.score(x), fresh.score(x))


@pytest.mark.parametrize("name", ["keys", "config", "detector", "detector_inputs", "extensions", "csqueue", "router",
                                  "trainer"])
def test_component_does_not_import_semilearn(name):
    # Importing the package runs rsmatch_usb/__init__, which registers the algorithms; the
    # component modules themselves (and the siblings they import) must not need semilearn,
    # so import them from a bare package over the same folder.
    code = ("import importlib, sys, types\n"
            "package = types.ModuleType('rsm')\n"
            f"package.__path__ = [r'{REPO}/rsmatch_usb/algorithms/rsmatch']\n"
            "sys.modules['rsm'] = package\n"
            f"importlib.import_module('rsm.{name}')\n"
            "print('semilearn' in sys.modules, 'rsmatch_usb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
