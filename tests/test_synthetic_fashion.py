"""Checks for the synthetic Fashion-MNIST script: its generators, resumable training and outputs."""

import json

import numpy as np
import pytest
import torch

from data_tools import conditional_gan, diffusion_generator, fashion_mnist, resumable_training
from data_tools import make_synthetic_fashion as msf

TINY = ["--max-train-per-class", "4", "--channels", "8,16", "--diffusion-train-steps", "2",
        "--gan-train-steps", "2", "--gan-width", "8", "--batch-size", "8", "--gan-batch-size", "8",
        "--per-class", "3", "--many-steps", "3", "--few-steps", "2", "--diffusion-stop-step", "2",
        "--guidance-scale", "1", "--few-guidance-scale", "1"]


def _paths(tmp_path):
    return ["--out-dir", str(tmp_path / "out"), "--sheet-dir", str(tmp_path / "docs"),
            "--stats", str(tmp_path / "stats.json"), "--work-dir", str(tmp_path / "work")]


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


DEFAULTS = msf.parse_args([])
BUNDLED = ("many", "few", "gan")  # the sources committed under data_tools/bundled (see docs/synthetic_fashion.md)
BUNDLES = {key: msf.npz_path(msf.DEFAULT_OUT_DIR, name)
           for key, name in msf.source_names(DEFAULTS).items() if key in BUNDLED}


def test_bundled_files_match_the_script_defaults():
    missing = [str(p) for p in BUNDLES.values() if not p.is_file()]
    assert not missing, f"{missing} missing; run python -m data_tools.make_synthetic_fashion"
    assert sum(p.stat().st_size for p in BUNDLES.values()) < 30_000_000
    stats = json.loads(msf.DEFAULT_STATS.read_text())
    for key, path in BUNDLES.items():
        b = _load(path)
        n = msf.NUM_CLASSES * DEFAULTS.per_class
        assert b["images"].dtype == np.uint8 and b["images"].shape == (n, 28, 28)
        assert b["labels"].dtype == np.int64 and b["labels"].shape == (n,)
        assert np.bincount(b["labels"], minlength=10).tolist() == [DEFAULTS.per_class] * 10
        assert b["images"].max() > 128 and b["images"].std() > 20  # not blank, not flat
        # The diffusion model trained to DEFAULTS.diffusion_stop_step of its schedule (the loss's plateau).
        train_steps = DEFAULTS.gan_train_steps if key == "gan" else DEFAULTS.diffusion_stop_step
        schedule = DEFAULTS.gan_train_steps if key == "gan" else DEFAULTS.diffusion_train_steps
        assert int(b["train_steps"]) == train_steps and int(b["seed"]) == DEFAULTS.seed
        assert int(b.get("schedule_steps", schedule)) == schedule
        assert float(b["guidance_scale"]) == msf.guidance_of(key, DEFAULTS)
        entry = stats["sources"][str(b["source"])]
        assert entry["images_per_class"] == [DEFAULTS.per_class] * 10 and entry["generator"] == str(b["generator"])
        assert (msf.DEFAULT_SHEET_DIR / f"synthetic_fashion_{b['source']}.png").is_file()


def test_tiny_run_writes_three_sources_stats_and_sheets(tmp_path, capsys):
    assert msf.main(TINY + _paths(tmp_path)) == 0
    for name, generator, steps in (("ddim3", "diffusers-UNet2DModel-ddim3", 3),
                                   ("dpmsolver2", "diffusers-UNet2DModel-dpmsolver2", 2),
                                   ("cgan", "conditional-DCGAN", 1)):
        b = _load(tmp_path / "out" / f"fashion_{name}.npz")
        assert b["images"].dtype == np.uint8 and b["images"].shape == (30, 28, 28)
        assert b["labels"].dtype == np.int64 and np.bincount(b["labels"]).tolist() == [3] * 10
        assert str(b["generator"]) == generator and int(b["steps"]) == steps and int(b["seed"]) == 0
        assert (tmp_path / "docs" / f"synthetic_fashion_{name}.png").stat().st_size > 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert set(stats["sources"]) == {"ddim3", "dpmsolver2", "cgan"}
    for s in stats["sources"].values():
        assert s["images_per_class"] == [3] * 10
        assert 0.0 <= s["intended_class_share"] <= 1.0 and 0.0 <= s["probe_auroc"] <= 1.0
    assert 0.0 <= stats["real_classifier"]["val_accuracy"] <= 1.0
    assert stats["command"].startswith("python -m data_tools.make_synthetic_fashion")

    # A second run without --overwrite refuses with one line and leaves every file alone.
    out = tmp_path / "out" / "fashion_cgan.npz"
    before = out.stat().st_mtime_ns
    capsys.readouterr()
    assert msf.main(TINY + _paths(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.stat().st_mtime_ns == before

    # With --overwrite the finished checkpoints are reused: same seed, same images.
    first = _load(tmp_path / "out" / "fashion_ddim3.npz")["images"]
    assert msf.main(TINY + _paths(tmp_path) + ["--overwrite", "--sources", "many", "--no-stats"]) == 0
    assert np.array_equal(_load(tmp_path / "out" / "fashion_ddim3.npz")["images"], first)


def test_generator_split_is_disjoint_from_ssl_pool():
    _, labels = fashion_mnist.load_split("train")
    gen, pool = fashion_mnist.generator_split(labels), fashion_mnist.ssl_pool(labels)
    val = fashion_mnist.val_split(labels)
    assert len(np.intersect1d(gen, pool)) == 0 and len(np.intersect1d(gen, val)) == 0
    assert len(gen) + len(val) + len(pool) == len(labels)
    images, y = msf.load_generator_split(max_per_class=2)
    assert images.shape == (20, 28, 28) and np.bincount(y).tolist() == [2] * 10


def test_guided_sampling_changes_the_images_and_stores_its_scale(tmp_path):
    """Classifier-free guidance on a tiny model: another scale, other images; the scale is in the file and stats."""
    torch.manual_seed(0)
    unet = diffusion_generator.build_unet(28, (8, 16), 1)
    sched = diffusion_generator.make_train_scheduler()
    drawn = np.array([0, 3, 7])
    plain, guided = (diffusion_generator.sample_diffusion(unet, sched, drawn, steps=2, seed=1, batch=3,
                                                          null_class=10, guidance_scale=g) for g in (1.0, 3.0))
    assert plain.shape == guided.shape == (3, 28, 28) and not np.array_equal(plain, guided)

    assert msf.main(TINY + _paths(tmp_path) + ["--sources", "many", "--guidance-scale", "3"]) == 0
    b = _load(tmp_path / "out" / "fashion_ddim3_cfg3.npz")
    assert float(b["guidance_scale"]) == 3.0 and str(b["source"]) == "ddim3_cfg3"
    assert str(b["generator"]) == "diffusers-UNet2DModel-ddim3_cfg3"
    entry = json.loads((tmp_path / "stats.json").read_text())["sources"]["ddim3_cfg3"]
    assert entry["guidance_scale"] == 3.0 and 0.0 <= entry["intended_class_share"] <= 1.0 and entry["diversity"] > 0
    # The same model and seed without guidance draw other images.
    assert msf.main(TINY + _paths(tmp_path) + ["--sources", "many"]) == 0
    assert not np.array_equal(_load(tmp_path / "out" / "fashion_ddim3.npz")["images"], b["images"])


def test_guidance_sweep_measures_each_scale_and_writes_no_set(tmp_path):
    args = TINY + _paths(tmp_path) + ["--sources", "many,few", "--sweep-guidance", "1,2.5", "--sweep-per-class", "1",
                                      "--sweep-plot", str(tmp_path / "sweep.png")]
    assert msf.main(args) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert set(stats["guidance_sweep"]) == {"ddim3", "dpmsolver2"}
    for by_scale in stats["guidance_sweep"].values():
        assert set(by_scale) == {"1", "2.5"}
        assert all(f["images"] == 10 and 0 <= f["intended_class_share"] <= 1 for f in by_scale.values())
    assert stats["diffusion_training"]["train_steps"] == 2
    assert (tmp_path / "sweep.png").stat().st_size > 0 and not (tmp_path / "out").exists()


def test_bad_sources_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exc:
        msf.parse_args(["--sources", "many,vae"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--sources" in err[-1] and "vae" in err[-1]


class _Killed(Exception):
    pass


def _killed_after(n_steps):
    """A stand-in for tqdm whose loop dies before step ``n_steps``, as a killed run would."""
    def fake(iterable, **_):
        class Bar:
            def __iter__(self):
                for i, item in enumerate(iterable):
                    if i == n_steps:
                        raise _Killed
                    yield item

            def set_postfix(self, *args, **kwargs):
                pass
        return Bar()
    return fake


def _tiny_data(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.rand((n, 1, 28, 28), generator=g) * 2 - 1, torch.arange(n) % 10


def _train_unet(monkeypatch, ckpt, kill_after=None, stop_step=None, loss_log=None):
    if kill_after is not None:
        monkeypatch.setattr(resumable_training, "tqdm", _killed_after(kill_after))
    torch.manual_seed(0)
    model = diffusion_generator.build_unet(28, (8, 16), 1)
    x, y = _tiny_data()
    diffusion_generator.train_diffusion(model, diffusion_generator.make_train_scheduler(), x, y, train_steps=3,
                                        batch_size=4, lr=1e-3, p_uncond=0.1, seed=0, null_class=10,
                                        checkpoint=ckpt, checkpoint_every=1, stop_step=stop_step, loss_log=loss_log)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_diffusion_training_stopped_early_continues_to_the_same_weights(tmp_path, monkeypatch):
    """``stop_step`` ends a run inside its schedule; rerun without it, training ends as if never stopped."""
    straight = _train_unet(monkeypatch, None)
    ckpt, log = tmp_path / "unet.pt", resumable_training.LossLog(every=1)
    stopped = _train_unet(monkeypatch, ckpt, stop_step=2, loss_log=log)
    assert log.steps == 2 and torch.load(ckpt, weights_only=True)["step"] == 2
    assert not torch.equal(stopped, straight)
    log = resumable_training.LossLog(every=1)
    assert torch.equal(_train_unet(monkeypatch, ckpt, loss_log=log), straight)
    assert log.steps == 3 and len(log.history) == 3


def test_killed_diffusion_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = _train_unet(monkeypatch, None)
    ckpt = tmp_path / "unet.pt"
    with pytest.raises(_Killed):
        _train_unet(monkeypatch, ckpt, kill_after=2)
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    monkeypatch.undo()
    resumed = _train_unet(monkeypatch, ckpt)
    assert torch.equal(straight, resumed)


def test_gan_trains_resumes_and_samples_labelled_images(tmp_path):
    x, y = _tiny_data()

    def run(ckpt):
        torch.manual_seed(0)
        g, d = conditional_gan.Generator(width=8), conditional_gan.Discriminator(width=8)
        conditional_gan.train_cgan(g, d, x, y, train_steps=2, batch_size=4, lr=2e-4, seed=0, checkpoint=ckpt)
        return g

    ckpt = tmp_path / "gan.pt"
    g = run(ckpt)
    again = run(ckpt)  # finished checkpoint: no step is retrained, the weights are reloaded
    for a, b in zip(g.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    classes = np.array([0, 1, 9, 9])
    imgs = conditional_gan.sample_cgan(g, classes, seed=1, batch=3)
    assert imgs.dtype == np.uint8 and imgs.shape == (4, 28, 28) and imgs.std() > 0
    assert np.array_equal(imgs, conditional_gan.sample_cgan(again, classes, seed=1, batch=3))
