"""The detector's input transforms, its recorded settings, nnPU, and a toy real-vs-up-sampled set: plain PyTorch."""
import io

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

# The plugin's extensions: every input (the export has rgb and npr), networks that record their settings, nnPU.
from rsmatch_usb.algorithms.rsmatch.extensions import INPUTS, Detector, DetectorNet, make_input

RESIDUALS = ("highpass", "npr", "spectrum")


def _up2(x):
    """Nearest-neighbour 2x up-sampling, as a generator's up-sampling layer does it."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


KERNEL = torch.tensor([[1.0, 0.5], [0.25, 2.0]])


def _transposed_up2(x):
    """A stride-2 transposed convolution with a 2x2 kernel per channel: each pixel becomes a scaled 2x2 block."""
    c = x.shape[1]
    return F.conv_transpose2d(x, KERNEL.expand(c, 1, 2, 2).contiguous(), stride=2, groups=c)


@pytest.mark.parametrize("name", list(INPUTS))
def test_a_constant_image_has_zero_residual(name):
    x = torch.full((2, 3, 9, 12), 0.7)
    out = make_input(name)(x)
    assert out.shape == (2, make_input(name).out_chans(3), 9, 12)
    if name == "rgb":
        assert torch.equal(out, x)
    else:
        assert out.abs().max() < 1e-6, name


def test_npr_of_a_nearest_up_sampled_image_is_zero_and_of_a_real_one_is_not():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, 8, 8, generator=g)
    npr = make_input("npr")
    assert torch.equal(npr(_up2(small)), torch.zeros(2, 3, 16, 16))
    # The same-size image drawn at full resolution has no such redundancy.
    assert npr(torch.rand(2, 3, 16, 16, generator=g)).abs().mean() > 0.1
    # A transposed convolution scales one 2x2 pattern per pixel: NPR is the kernel minus its anchor,
    # tiled with period 2 and scaled by each block's pixel.
    residual = npr(_transposed_up2(small))
    assert torch.allclose(residual, (KERNEL - KERNEL[0, 0]).repeat(8, 8) * _up2(small), atol=1e-6)


def test_highpass_of_a_nearest_up_sampled_ramp_alternates_with_period_two():
    # A ramp's 3x3 mean is the ramp itself, so its high-pass residual is zero inside the image...
    rows = torch.arange(16.0).view(1, 1, 16, 1).expand(1, 3, 16, 16)
    highpass = make_input("highpass")
    assert highpass(rows / 2)[..., 1:-1, :].abs().max() < 1e-6
    # ...while the same ramp up-sampled 2x (steps of two equal rows) leaves +1/3, -1/3, +1/3, ... row by row.
    stepped = _up2(torch.arange(8.0).view(1, 1, 8, 1).expand(1, 3, 8, 8))
    inner = highpass(stepped)[..., 1:-1, :]
    expected = torch.tensor([1 / 3 if r % 2 == 0 else -1 / 3 for r in range(1, 15)]).view(1, 1, 14, 1)
    assert torch.allclose(inner, expected.expand_as(inner), atol=1e-6)


def test_spectrum_of_a_nearest_up_sampled_image_is_empty_at_the_nyquist_frequency():
    # Nearest up-sampling multiplies the spectrum by (1 + e^{-i pi k / N}), which vanishes at k = N:
    # the centred spectrum's first row and column (Nyquist) hold almost nothing.
    g = torch.Generator().manual_seed(1)
    spectrum = make_input("spectrum")
    up = spectrum(_up2(torch.rand(4, 3, 8, 8, generator=g)))
    real = spectrum(torch.rand(4, 3, 16, 16, generator=g))
    assert up[..., 0, :].mean() < 0.2 * real[..., 0, :].mean()
    assert up[..., :, 0].mean() < 0.2 * real[..., :, 0].mean()


def test_unknown_input_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="rgb, highpass, npr"):
        DetectorNet(4, input="fft")


# ---------------------------------------------------------------- recorded settings
def _saved(state):
    """``state`` through torch.save and torch.load(weights_only=True), as a checkpoint holds it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_state_dict_alone_rebuilds_the_network():
    det = Detector(width=4, seed=0, input="npr")
    x = torch.randn(5, 3, 12, 12)
    det.step(x, torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0]))
    state = _saved(det.state_dict()["detector_ema"])
    rebuilt = DetectorNet.from_state_dict(state)
    assert rebuilt.settings == {"width": 4, "in_chans": 3, "input": "npr"}
    assert torch.equal(rebuilt(x), det.ema.eval()(x))


def test_loading_into_a_network_of_other_settings_names_them():
    state = _saved(DetectorNet(4, input="highpass").state_dict())
    with pytest.raises(ValueError, match="input 'highpass' \\(this network: 'rgb'\\)"):
        DetectorNet(4, input="rgb").load_state_dict(state)


def test_a_state_dict_without_settings_is_an_rgb_network_and_loads_strictly():
    old = {k: v for k, v in DetectorNet(4).state_dict().items() if k != "_extra_state"}
    assert DetectorNet.settings_of(old) == {"width": 4, "in_chans": 3, "input": "rgb"}
    net = DetectorNet(4)
    net.load_state_dict(old)  # strict: only the settings may be missing
    assert all(torch.equal(net.state_dict()[k], v) for k, v in old.items())
    assert DetectorNet.from_state_dict(old).settings["input"] == "rgb"
    with pytest.raises(ValueError, match="input 'rgb'"):
        DetectorNet(4, input="npr").load_state_dict(old)
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict({k: v for k, v in old.items() if k != "fc.bias"})


def test_detector_checkpoint_round_trip_keeps_the_input():
    a = Detector(width=4, seed=0, input="highpass")
    b = Detector(width=4, seed=1, input="highpass")
    b.load_state_dict(_saved(a.state_dict()))
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(a.score(x), b.score(x))
    with pytest.raises(ValueError):
        Detector(width=4, input="rgb").load_state_dict(_saved(a.state_dict()))


# ---------------------------------------------------------------- nnPU
def test_nnpu_step_reports_the_non_negative_pu_risk():
    det = Detector(width=4, seed=0)
    x_real, x_ulb = torch.randn(4, 3, 8, 8), torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        logits = det.net(torch.cat((x_real, x_ulb)))  # train-mode BatchNorm, as in the step
    real, ulb = logits[:4], logits[4:]
    prior = 0.4
    expected = prior * F.softplus(real).mean() + F.softplus(-ulb).mean() - prior * F.softplus(-real).mean()
    before = [p.clone() for p in det.net.parameters()]
    assert det.nnpu_step(x_real, x_ulb, prior) == pytest.approx(expected.item(), rel=1e-5)
    assert any(not torch.equal(p, q) for p, q in zip(before, det.net.parameters()))
    with pytest.raises(ValueError, match="prior"):
        det.nnpu_step(x_real, x_ulb, 0.0)


# ---------------------------------------------------------------- toy set: real against up-sampled
def _fields(n, g, size=16):
    """Smooth random RGB fields (white noise under a 5x5 box blur), with a little sensor noise."""
    noise = torch.randn(n, 3, size + 4, size + 4, generator=g)
    return F.avg_pool2d(noise, 5, stride=1) * 2 + 0.05 * torch.randn(n, 3, size, size, generator=g)


def _upsampled_fields(n, g, size=16):
    """The same kind of field down-sampled 2x, then up-sampled 2x by nearest neighbour, with the same sensor noise."""
    return _up2(_fields(n, g, size)[..., ::2, ::2]) + 0.05 * torch.randn(n, 3, size, size, generator=g)


@pytest.fixture
def one_thread():
    """Train on one torch thread: on 16-px batches more threads only contend (several times slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _auroc(det, real, syn):
    return roc_auc_score([0] * len(real) + [1] * len(syn), torch.cat((det.score(real), det.score(syn))).numpy())


@pytest.mark.parametrize("name", RESIDUALS)
def test_residual_inputs_tell_real_from_up_sampled_within_a_few_hundred_steps(name, one_thread):
    g = torch.Generator().manual_seed(0)
    det = Detector(width=8, lr=3e-3, ema_m=0.9, seed=0, input=name, ema_warmup=True)
    for _ in range(200):
        det.step(torch.cat((_fields(32, g), _upsampled_fields(32, g))), torch.cat((torch.zeros(32), torch.ones(32))))
    assert _auroc(det, _fields(500, g), _upsampled_fields(500, g)) >= 0.95


def _pu_toy_auroc(name, steps=300, known=30):
    """nnPU from ``known`` real fields (with flips) against an unlabeled pool of 200 real and 200 up-sampled ones.

    The setting of RSMatch's bootstrap: the AUROC is on the unlabeled pool the
    detector trained on. Measured when written: rgb 0.942, highpass 0.976, npr 1.000, spectrum 0.953.
    """
    g = torch.Generator().manual_seed(0)
    reals, ulb_real, ulb_syn = _fields(known, g), _fields(200, g), _upsampled_fields(200, g)
    unlabeled = torch.cat((ulb_real, ulb_syn))
    det = Detector(width=8, lr=3e-3, weight_decay=5e-3, ema_m=0.99, seed=0, input=name, ema_warmup=True)
    for _ in range(steps):
        x_real = reals[torch.randint(known, (32,), generator=g)]
        flip = (torch.rand(32, generator=g) < 0.5).view(-1, 1, 1, 1)
        det.nnpu_step(torch.where(flip, x_real.flip(-1), x_real), unlabeled[torch.randint(400, (32,), generator=g)],
                      prior=0.5)
    return _auroc(det, ulb_real, ulb_syn)


@pytest.mark.parametrize("name", ["highpass", "npr"])
def test_residual_inputs_trained_pu_style_from_30_known_reals_separate_the_toy_set(name, one_thread):
    assert _pu_toy_auroc(name) >= 0.95
