"""GPU readiness (issue 13): the CUDA-path defects, each checked on the CPU."""
import os

import torch

from conftest import run_train, tiny_config, write_config


def test_training_never_reseeds_the_cuda_generators(tmp_path, monkeypatch):
    # torch.manual_seed also reseeds every CUDA generator, and fork_rng(devices=[])
    # does not restore them: on a GPU each queue draw would reset dropout masks.
    seeds = []
    original = torch.cuda.manual_seed_all
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: (seeds.append(int(seed)), original(seed))[1])
    cfg = tiny_config(tmp_path, algorithm="rsmatch", seed=3, num_train_iter=4, num_eval_iter=4,
                      queue_min_fill=1, queue_size=4, detector_width=4)
    code, _ = run_train(tmp_path, cfg)
    assert code == 0
    # Only the run's own seeding (USB's main_worker) touches the CUDA generators.
    assert seeds and set(seeds) == {3}


def _build(tmp_path, cfg):
    """The algorithm as rsmatch-train builds it (runtime active), without training."""
    import logging

    from rsmatch_usb import train
    from rsmatch_usb.config import get_config

    args = train.prepare(get_config(["--c", write_config(tmp_path, cfg, f"{cfg['save_name']}_build.yaml")]))
    return train.build_algorithm(args, 1, logging.getLogger("test_gpu_readiness"))


def test_a_cpu_checkpoint_resumes_into_an_enabled_grad_scaler(tmp_path):
    # On the CPU the scaler is disabled and saves {}; on CUDA AlgorithmBase builds an
    # enabled one, whose load_state_dict({}) raised, so no CPU run resumed on a GPU.
    cfg = tiny_config(tmp_path, name="cpu_run", algorithm="rsmatch", detector_width=4)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    ckpt = os.path.join(run_dir, "latest_model.pth")
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["loss_scaler"] == {}

    alg = _build(tmp_path, dict(cfg, save_name="gpu_like"))
    # The scaler the runtime installs, enabled as on CUDA (the CPU has an enabled GradScaler too).
    alg.loss_scaler = type(alg.loss_scaler)("cpu", enabled=True)
    alg.load_model(ckpt)
    assert alg.it == 2 and alg.loss_scaler.is_enabled()
    assert alg.loss_scaler.get_scale() == 2.0 ** 16  # fresh: nothing was learnt on the CPU


def test_detector_scores_stay_fp32_under_autocast(tmp_path):
    alg = _build(tmp_path, tiny_config(tmp_path, algorithm="rsmatch", detector_width=4))
    x = torch.rand(6, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = alg.detector_scores(x)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, alg.detector_scores(x))


def test_a_run_turns_cudnn_autotuning_on_as_usb_does(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    code, _ = run_train(tmp_path, tiny_config(tmp_path))
    assert code == 0
    assert torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic


def test_activating_cuda_after_cpu_removes_the_cpu_adaptations():
    import semilearn.core.algorithmbase as algorithmbase

    from rsmatch_usb import runtime

    originals = (torch.Tensor.cuda, torch.cuda.Event, torch.cuda.synchronize)
    runtime.activate("cpu")
    assert torch.Tensor.cuda is not originals[0]
    runtime.activate("cuda")
    assert (torch.Tensor.cuda, torch.cuda.Event, torch.cuda.synchronize) == originals
    assert algorithmbase.GradScaler().is_enabled() == torch.cuda.is_available()
    runtime.activate("cpu")  # and back: the CPU adaptations return
    assert torch.cuda.Event is runtime.WallClockEvent
    assert not algorithmbase.GradScaler().is_enabled()
