"""GPU readiness (issue 13): the CUDA-path defects, each checked on the CPU."""
import torch

from conftest import run_train, tiny_config


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
