"""CSQueue: capacity, FIFO order, class routing, top-Q selection, P-class rotation, state, DDP."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rsmatch_usb.algorithms.rsmatch.csqueue import CSQueue


def _update(queue, samples, min_score=float("-inf")):
    """samples: [(dataset index, pseudo-label, score), ...]"""
    idx, labels, scores = zip(*samples)
    return queue.update(torch.tensor(idx), torch.tensor(labels), torch.tensor(scores, dtype=torch.float),
                        min_score=min_score)


def test_push_is_fifo_with_capacity():
    q = CSQueue(num_classes=2, capacity=3, classes_per_step=2, per_class=1)
    for i in range(5):
        q.push(1, 100 + i)
    assert q.items(1).tolist() == [102, 103, 104]  # oldest two left, order kept
    assert q.fill.tolist() == [0, 3] and len(q) == 3 and q.min_fill == 0
    assert q.queue.shape == (2, 3) and q.queue.dtype == torch.long


def test_repushed_index_is_refreshed_not_duplicated():
    q = CSQueue(num_classes=1, capacity=3, classes_per_step=1, per_class=1)
    for i in (1, 2, 3, 1):
        q.push(0, i)
    assert q.items(0).tolist() == [2, 3, 1]
    q.push(0, 4)
    assert q.items(0).tolist() == [3, 1, 4]


def test_update_routes_by_pseudo_label_and_keeps_top_q():
    q = CSQueue(num_classes=3, capacity=10, classes_per_step=3, per_class=2)
    pushed = _update(q, [(10, 0, 0.2), (11, 0, 0.9), (12, 0, 0.7), (13, 2, 0.6), (14, 1, 0.1), (15, 0, 0.8)])
    assert pushed == 4
    assert q.items(0).tolist() == [11, 15]  # the two highest-scoring of class 0, best first
    assert q.items(1).tolist() == [14]
    assert q.items(2).tolist() == [13]


def test_min_score_excludes_samples_judged_real():
    q = CSQueue(num_classes=2, capacity=10, classes_per_step=2, per_class=5)
    _update(q, [(1, 0, 0.4), (2, 0, 0.6), (3, 1, 0.49)], min_score=0.5)
    assert q.items(0).tolist() == [2] and q.items(1).tolist() == []


def test_rotation_serves_p_classes_per_step_and_every_class():
    q = CSQueue(num_classes=4, capacity=10, classes_per_step=2, per_class=1)
    batch = [(c, c, 0.9) for c in range(4)]
    _update(q, batch)
    assert q.fill.tolist() == [1, 1, 0, 0] and int(q.pointer) == 2
    _update(q, batch)
    assert q.fill.tolist() == [1, 1, 1, 1] and int(q.pointer) == 0
    # A class without candidates is skipped, not counted against P.
    _update(q, [(5, 0, 0.9), (6, 3, 0.9)])
    assert q.fill.tolist() == [2, 1, 1, 2] and int(q.pointer) == 0


def test_sample_is_class_balanced_and_uses_only_its_generator():
    q = CSQueue(num_classes=3, capacity=50, classes_per_step=3, per_class=1)
    for i in range(50):
        q.push(0, i)
    q.push(1, 1000)
    state = torch.random.get_rng_state()
    idx, classes = q.sample(9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert sorted(torch.bincount(classes, minlength=3).tolist()) == [0, 4, 5]  # balanced; empty class 2 skipped
    assert (classes != 2).all()
    assert all((i < 50) == (c == 0) for i, c in zip(idx.tolist(), classes.tolist()))
    again, _ = q.sample(9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    with pytest.raises(RuntimeError):
        CSQueue(2, 2, 1, 1).sample(1)


def test_state_dict_round_trip():
    q = CSQueue(num_classes=3, capacity=4, classes_per_step=2, per_class=2)
    _update(q, [(i, i % 3, i / 10) for i in range(10)])
    state = q.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    r = CSQueue(num_classes=3, capacity=4, classes_per_step=2, per_class=2)
    r.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(r.state_dict().values(), state.values()))
    with pytest.raises(ValueError):
        CSQueue(num_classes=3, capacity=5, classes_per_step=2, per_class=2).load_state_dict(state)


def _rank_candidates(rank, step):
    g = torch.Generator().manual_seed(100 * step + rank)
    idx = torch.arange(8) + 1000 * rank + 100 * step
    return idx, torch.randint(0, 4, (8,), generator=g), torch.rand(8, generator=g)


def _ddp_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    q = CSQueue(num_classes=4, capacity=3, classes_per_step=2, per_class=2)
    for step in range(4):
        q.update(*_rank_candidates(rank, step), min_score=0.2)
    torch.save(q.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_ddp_ranks_hold_identical_queues(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # Same as one process pushing the gathered (rank-ordered) candidates.
    ref = CSQueue(num_classes=4, capacity=3, classes_per_step=2, per_class=2)
    for step in range(4):
        parts = [_rank_candidates(r, step) for r in (0, 1)]
        ref.update(*(torch.cat(t) for t in zip(*parts)), min_score=0.2)
    assert all(torch.equal(ref.state_dict()[k], states[0][k]) for k in states[0])
    assert (states[0]["queue"] >= 1000).any() and (states[0]["queue"] < 1000).any()  # both ranks' items
