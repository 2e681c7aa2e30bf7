"""GPU readiness (issue 13): the CUDA-path defects, each checked on the CPU."""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, read_log, run_train, tiny_config, write_config
from rsmatch_usb.fingerprints import logged_fingerprints


def test_training_never_reseeds_the_cuda_generators(tmp_path, monkeypatch):
    # torch.manual_seed also reseeds every CUDA generator, and fork_rng(devices=[])
    # does not restore them: on a GPU each queue draw would reset dropout masks.
    seeds = []
    original = torch.cuda.manual_seed_all
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: (seeds.append(int(seed)), original(seed))[1])
    cfg = tiny_config(tmp_path, algorithm="rsmatch", seed=3, num_train_iter=4, num_eval_iter=4,
                      queue_min_fill=1, queue_size=4, detector_width=4, queue_min_score=0.0,
                      detector_calib_per_class=0)
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
        scores = alg.detector.score(x)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, alg.detector.score(x))


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


# ---------------------------------------------------------------- launch modes (items 6, 7)
def _args(tmp_path, environ=None, device="cuda", device_count=1, **overrides):
    """The train command's args for ``overrides`` after set_launch, as on a host with ``device_count`` GPUs."""
    from rsmatch_usb import train
    from rsmatch_usb.config import get_config

    args = get_config(["--c", write_config(tmp_path, tiny_config(tmp_path, **overrides))])
    args.device = device
    return train.set_launch(args, device_count if device == "cuda" else 0, environ or {})


def _is_main(args, local_rank=0):
    from rsmatch_usb import train

    return train.worker_rank(args, local_rank) % args.procs_per_node == 0


def test_one_process(tmp_path):
    args = _args(tmp_path, device="cpu")
    assert (args.world_size, args.procs_per_node, args.distributed) == (1, 1, False)
    assert _is_main(args)


def test_multiprocessing_distributed_spawns_one_process_per_gpu_with_usbs_ranks(tmp_path):
    # Node 1 of 2, four GPUs each: global ranks 4..7, the main process is local rank 0.
    args = _args(tmp_path, device_count=4, multiprocessing_distributed=True, world_size=2, rank=1)
    assert (args.world_size, args.procs_per_node, args.distributed) == (8, 4, True)
    from rsmatch_usb import train
    assert [train.worker_rank(args, i) for i in range(4)] == [4, 5, 6, 7]
    assert [_is_main(args, i) for i in range(4)] == [True, False, False, False]


def test_multiprocessing_distributed_on_one_gpu_is_usbs_path_on_gpu_0(tmp_path, monkeypatch):
    from rsmatch_usb import train

    args = _args(tmp_path, device_count=1, multiprocessing_distributed=True)
    assert (args.world_size, args.procs_per_node, args.distributed) == (1, 1, True)
    calls = []
    monkeypatch.setattr(train, "main_worker", lambda *a: calls.append(a[:2]))
    train.main(args)
    assert calls == [(0, 1)]  # local rank 0 = GPU 0: DDP with device_ids, SyncBatchNorm, set_device


def test_processes_started_by_hand_have_one_main_rank(tmp_path):
    # Two processes on a two-GPU host, each given its rank and GPU: only rank 0 writes.
    ranks = [_args(tmp_path, device_count=2, world_size=2, rank=r, gpu=r) for r in (0, 1)]
    assert [(a.procs_per_node, a.distributed) for a in ranks] == [(2, True), (2, True)]
    assert [_is_main(a) for a in ranks] == [True, False]
    cpu = [_args(tmp_path, device="cpu", world_size=2, rank=r) for r in (0, 1)]
    assert [_is_main(a) for a in cpu] == [True, False]


def test_torchrun_ranks_come_from_its_environment(tmp_path):
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    args = _args(tmp_path, environ=env, device_count=2, multiprocessing_distributed=True)
    assert (args.dist_url, args.world_size, args.rank, args.gpu) == ("env://", 4, 3, 1)
    assert (args.procs_per_node, args.multiprocessing_distributed, args.distributed) == (2, False, True)
    assert not _is_main(args)


def test_env_url_reads_world_size_and_rank_as_usb(tmp_path):
    from rsmatch_usb.errors import UserError

    args = _args(tmp_path, environ={"WORLD_SIZE": "2", "RANK": "1"}, device="cpu", dist_url="env://",
                 world_size=-1, rank=-1)
    assert (args.world_size, args.rank, args.distributed) == (2, 1, True)
    with pytest.raises(UserError, match="WORLD_SIZE"):
        _args(tmp_path, device="cpu", dist_url="env://", world_size=-1, rank=-1)


@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_torchrun_on_cpu_trains_one_run_with_two_ranks(tmp_path):
    cfg = tiny_config(tmp_path, name="torchrun", batch_size=8, num_train_iter=3, num_eval_iter=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rsmatch_usb.train", "--c", write_config(tmp_path, cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prints = logged_fingerprints(proc.stderr, "training is FINISHED; parameter fingerprint")
    assert set(prints) == {"0", "1"} and prints["0"] == prints["1"]
    log = read_log(os.path.join(cfg["save_dir"], cfg["save_name"]))
    assert log.count("Model training") == 1  # rank 1 is not a main process: one writer


# ---------------------------------------------------------------- errors and device (items 9, 10)
def _error_lines(stderr):
    """stderr without warnings and the run's own log lines (``[date time LEVEL] ...``)."""
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
            and not line.startswith("  ") and not re.match(r"\[\d{4}-\d\d-\d\d ", line)]


@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_bad_input_found_in_spawned_workers_is_one_error_line(tmp_path):
    cfg = tiny_config(tmp_path, algorithm="rsmatch", detector_width=4, dummy_pseudo_label="both", world_size=2,
                      multiprocessing_distributed=True)
    proc = subprocess.run([sys.executable, "-m", "rsmatch_usb.train", "--c", write_config(tmp_path, cfg)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("rsmatch-train: error: dummy_pseudo_label"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("request_", [dict(gpu=0), dict(dist_backend="nccl"), dict(amp=True)])
def test_auto_device_with_a_gpu_request_and_no_gpu_is_an_error(tmp_path, capsys, request_):
    code, run_dir = run_train(tmp_path, tiny_config(tmp_path, device="auto", **request_))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device: auto found no CUDA GPU" in err[0] and "device: cpu" in err[0]
    key = next(iter(request_))
    assert f"{key}: {'True' if key == 'amp' else request_[key]}" in err[0]
    assert not os.path.exists(run_dir)
    # The same config with device: cpu trains (amp falls back to fp32, nccl to gloo).
    code, _ = run_train(tmp_path, tiny_config(tmp_path, name="cpu", device="cpu", **request_))
    assert code == 0


# ---------------------------------------------------------------- GPU memory of the configs (item 1)
def test_generator_refuses_the_former_imagenet_settings(tmp_path, monkeypatch, capsys):
    from benchmark_configs import generate

    spec = next(s for s in generate.family_specs("paper") if s.dataset == "imagenet" and s.label == "fixmatch")
    assert spec.config["uratio"] == 1  # USB's ImageNet setting
    assert generate.estimated_gpu_gib(spec.config) < 40 < 80 < generate.estimated_gpu_gib(dict(spec.config, uratio=7))
    # The ImageNet family as it was (uratio 7 at 224 px, ResNet-50, fp32): refused, nothing written.
    monkeypatch.setitem(generate.DATASET_URATIO, "imagenet", 7)
    with pytest.raises(SystemExit) as exc:
        generate.main(["--root", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than 80 GiB" in err[0] and "_imagenet_" in err[0] and "--gpu-gib" in err[0]
    assert os.listdir(tmp_path) == []


def test_generator_sizes_configs_for_the_gpu_given(tmp_path, capsys):
    from benchmark_configs import generate

    with pytest.raises(SystemExit) as exc:
        generate.main(["--root", str(tmp_path), "--gpu-gib", "8"])
    assert exc.value.code == 2 and os.listdir(tmp_path) == []
    assert generate.main(["--root", str(tmp_path), "--gpu-gib", "48"]) == 0
    text = (tmp_path / "paper" / "openmatch" / "openmatch_imagenet_13000_alpha0_0.yaml").read_text()
    # 64 labeled + 3 unlabeled views x 64 images of 224 px.
    assert "# Estimated GPU memory per process: " in text and "(256 images per step at 224 px;" in text


def test_net_memory_table_matches_a_fresh_measurement():
    from benchmark_configs import generate, memory

    used = {(s.config["net"], s.config["img_size"], s.config["num_classes"]) for s in generate.all_specs()}
    assert used <= set(generate.NET_MEMORY), "measure the missing nets with python -m benchmark_configs.memory"
    for key in (("wrn_28_2", 32, 10), ("resnet_tiny", 16, 10)):
        act, params = memory.measure(*key)
        assert params == generate.NET_MEMORY[key][1]
        assert abs(act - generate.NET_MEMORY[key][0]) <= 0.1 * act


# ---------------------------------------------------------------- smaller GPU costs (item 11)
def _aten_ops(fn, *args):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Recorder() as recorder:
        fn(*args)
    return recorder.ops


def test_openmatch_ova_loss_has_no_data_dependent_indexing():
    # Boolean-mask indexing (aten.index with a mask, i.e. nonzero) waits for the GPU each step.
    from rsmatch_usb.algorithms.openmatch.utils import ova_loss

    logits, targets = torch.randn(5, 2 * 4), torch.tensor([0, 3, 1, 1, 2])
    ops = _aten_ops(ova_loss, logits, targets)
    assert not [op for op in ops if op.startswith(("aten.index.", "aten.nonzero"))], ops
    log_p = torch.log_softmax(logits.view(5, 2, 4), dim=1)
    expected = (-log_p[:, 1, :][torch.arange(5), targets]
                + (-log_p[:, 0, :]).scatter(1, targets[:, None], float("-inf")).max(dim=1).values).mean()
    assert torch.allclose(ova_loss(logits, targets), expected)


def test_openmatch_keeps_unlabeled_indices_on_the_cpu(tmp_path, monkeypatch):
    # On CUDA process_batch moves every tensor with .cuda(); the indices only index a CPU mask.
    alg = _build(tmp_path, tiny_config(tmp_path, algorithm="openmatch"))
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self * 1)  # a copy, as a device move is
    idx = torch.tensor([3, 1])
    batch = alg.process_batch(x_lb=torch.zeros(2, 3, 16, 16), y_lb=torch.zeros(2, dtype=torch.long), idx_ulb=idx,
                              x_ulb_w=torch.zeros(2, 3, 16, 16), x_ulb_w_2=torch.zeros(2, 3, 16, 16),
                              x_ulb_s=torch.zeros(2, 3, 16, 16))
    assert batch["idx_ulb"] is idx and batch["x_lb"] is not None


def test_rsmatch_keeps_its_bookkeeping_indices_on_the_cpu(tmp_path, monkeypatch):
    # A fake device: USB's process_batch (Tensor.cuda, the CPU runtime's) and RSMatch's own
    # device moves (Tensor.to a device) return a copy marked as moved. The queue and the
    # calibration index CPU tensors with the sample indices; a device copy of them would come
    # back to the CPU with a sync each step. FlexMatch, the base, indexes its own device
    # tensor with idx_ulb, so it still gets the device copy, as in USB.
    from semilearn.algorithms.flexmatch.utils import FlexMatchThresholdingHook

    from rsmatch_usb import runtime
    from rsmatch_usb.algorithms.rsmatch.csqueue import CSQueue
    from rsmatch_usb.algorithms.rsmatch.router import Router

    def to_fake_device(self, *args, **kwargs):
        moved = self.clone()
        moved.on_device = True
        return moved

    tensor_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (torch.device, str)) and str(target).startswith("cpu"):
            return to_fake_device(tensor_to(self, *args, **kwargs))
        return tensor_to(self, *args, **kwargs)

    monkeypatch.setattr(runtime, "_tensor_to_cpu", to_fake_device)
    monkeypatch.setattr(torch.Tensor, "to", to)
    seen = {"queue": [], "calibration": [], "base": []}

    def spy(owner, name, key, position):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            seen[key].append(kwargs[position] if isinstance(position, str) else args[position])
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    spy(CSQueue, "update", "queue", 1)
    spy(Router, "held_out", "calibration", 1)
    spy(FlexMatchThresholdingHook, "masking", "base", "idx_ulb")
    cfg = tiny_config(tmp_path, algorithm="rsmatch", base_algorithm="flexmatch", detector_width=4,
                      synthetic_source="bundled", synthetic_ratio=1.0, queue_workers=0, detector_eval_samples=64)
    code, _ = run_train(tmp_path, cfg)
    assert code == 0
    assert len(seen["queue"]) == len(seen["calibration"]) == len(seen["base"]) == cfg["num_train_iter"]
    for key in ("queue", "calibration"):
        assert all(t.device.type == "cpu" and not hasattr(t, "on_device") for t in seen[key]), key
    assert all(getattr(t, "on_device", False) for t in seen["base"])
    assert all(torch.equal(a, b) for a, b in zip(seen["queue"], seen["base"]))


# ---------------------------------------------------------------- synthetic files verified once per node (item 11)
def _corrupt_synthetic_tree(root):
    """Two PNGs per digit class, one of them (3/1.png) corrupt; a ratio of 0.0149 draws them all."""
    import numpy as np
    from PIL import Image

    for c in range(10):
        os.makedirs(root / str(c))
        for i in range(2):
            Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(root / str(c) / f"{i}.png")
    (root / "3" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return dict(synthetic_source=str(root), synthetic_ratio=0.0149)


def test_only_a_nodes_main_process_reads_the_synthetic_files(tmp_path, monkeypatch):
    from data_tools import mixing, usb as usb_data
    from rsmatch_usb import train
    from rsmatch_usb.config import get_config
    from rsmatch_usb.errors import UserError

    verified = []
    verify_images = mixing.verify_images
    monkeypatch.setattr(mixing, "verify_images", lambda images: (verified.append(len(images)), verify_images(images))[1])
    data = _corrupt_synthetic_tree(tmp_path / "synth")

    def prepare(name, **launch):
        cfg = tiny_config(tmp_path, name=name, dist_url="tcp://127.0.0.1:29999", **data, **launch)
        return train.prepare(get_config(["--c", write_config(tmp_path, cfg, f"{name}.yaml")]))

    # Rank 1 of two hand-started ranks on one node: rank 0 checks the files, rank 1 reads none.
    args = prepare("rank1", world_size=2, rank=1)
    assert verified == [] and getattr(args, "start_error", None) is None
    # Rank 0 finds the bad file; the other rank waits for it, so the error stops both once the group is up.
    args = prepare("rank0", world_size=2, rank=0)
    assert verified and "3/1.png is unreadable or corrupt" in args.start_error
    # The launcher of spawned workers checks before it spawns them: the one error line, exit 2.
    with pytest.raises(UserError, match="1.png is unreadable or corrupt"):
        prepare("spawn", world_size=2, multiprocessing_distributed=True)
    # The run's own dataset builds (each worker's) do not read the files again.
    verified.clear()
    usb_data.get_dataset(args, args.algorithm, args.dataset, args.num_labels, args.num_classes, args.data_dir)
    assert verified == []


@pytest.mark.multiprocess
@pytest.mark.timeout(660)
def test_hand_started_ranks_all_stop_on_the_bad_file_their_main_rank_found(tmp_path):
    import socket

    data = _corrupt_synthetic_tree(tmp_path / "synth")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        cfg = tiny_config(tmp_path, name="ranks", world_size=2, rank=rank, dist_url=f"tcp://127.0.0.1:{port}", **data)
        procs.append(subprocess.Popen([sys.executable, "-m", "rsmatch_usb.train", "--c",
                                       write_config(tmp_path, cfg, f"rank{rank}.yaml")],
                                      stderr=subprocess.PIPE, text=True, cwd=REPO))
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, stderr in zip(procs, errors):
        lines = _error_lines(stderr)
        assert proc.returncode == 2 and len(lines) == 1, stderr[-3000:]
        assert lines[0].startswith("rsmatch-train: error: synthetic_source: image ") and "1.png" in lines[0]
    assert not os.path.exists(cfg["save_dir"])
