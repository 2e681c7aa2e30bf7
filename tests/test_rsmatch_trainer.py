"""RSMatch's DetectorTrainer (PU bootstrap vs queue batches, queue draws, the step): plain PyTorch, no semilearn."""
import pytest
import torch

from rsmatch_usb.algorithms.rsmatch.csqueue import CSQueue
from rsmatch_usb.algorithms.rsmatch.detector import Detector
from rsmatch_usb.algorithms.rsmatch.trainer import DetectorTrainer


class _Draws:
    """QueueDraws' interface over in-memory images: image ``i`` is ``images[i]`` plus the draw's seed."""

    def __init__(self, images):
        self.images = images
        self.requested = []
        self._request = None

    def request(self, indices, seed):
        assert self._request is None
        self._request = (torch.as_tensor(indices).long(), int(seed))
        self.requested.append(self._request)

    def has_request(self):
        return self._request is not None

    def take(self):
        indices, seed = self._request
        self._request = None
        return self.images[indices] + seed % 7

    def pending(self):
        if self._request is None:
            return {"indices": torch.zeros(0, dtype=torch.long), "seed": torch.tensor(-1)}
        return {"indices": self._request[0].clone(), "seed": torch.tensor(self._request[1])}

    def restore(self, state):
        self._request = None
        if int(state["seed"]) >= 0:
            self.request(state["indices"], int(state["seed"]))

    def close(self):
        pass


class _Detector:
    """Records what each step trains on."""

    def __init__(self):
        self.batches = []

    def step(self, x, target, weight):
        self.batches.append((x, target, weight))
        return 0.5, 1.0


def _trainer(**kwargs):
    queue = CSQueue(num_classes=2, capacity=4, classes_per_step=2, per_class=4)
    for i in range(4):
        queue.push(i % 2, i)
    images = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 3, 2, 2).clone()
    return DetectorTrainer(_Detector(), queue, _Draws(images), batch_size=4, seed=3, **kwargs)


def _batch():
    return torch.full((3, 3, 2, 2), -1.0), torch.full((6, 3, 2, 2), -2.0), torch.tensor([0.4, 0.1, 0.3, 0.05, 0.2, 0.9])


def test_bootstrap_trains_labeled_against_the_weighted_unlabeled_batch():
    trainer = _trainer(pu_mass=1 / 3)
    x_real, x_ulb, scores = _batch()
    assert trainer.step(x_real, x_ulb, scores, threshold=0.5, trusted=False) == (0.5, 1.0)
    x, target, weight = trainer.detector.batches[-1]
    assert torch.equal(x, torch.cat((x_real, x_ulb))) and target.tolist() == [0] * 3 + [1] * 6
    # The unlabeled side carries pu_mass times the real side's mass.
    assert weight[:3].tolist() == [1.0] * 3 and weight[3:].sum().item() == pytest.approx(3 / 3)
    assert trainer.draws.requested == [] and trainer.draw_s == 0.0
    trainer.pu_pos_weight = 0.25
    trainer.step(x_real, x_ulb, scores, threshold=0.5, trusted=False)
    assert trainer.detector.batches[-1][2][3:].tolist() == [0.25] * 6


def test_trusted_trains_against_a_queue_draw_and_requests_the_next():
    trainer = _trainer()
    x_real, x_ulb, scores = _batch()
    state = torch.random.get_rng_state()
    trainer.step(x_real, x_ulb, scores, threshold=0.5, trusted=True)
    x, target, weight = trainer.detector.batches[-1]
    first, second = trainer.draws.requested  # drawn at once for this step, then the next step's
    assert torch.equal(x[3:], trainer.draws.images[first[0]] + first[1] % 7)
    assert set(first[0].tolist()) <= {0, 1, 2, 3} and len(first[0]) == 4
    assert target.tolist() == [0] * 3 + [1] * 4 and weight[3:].tolist() == [3 / 4] * 4
    assert trainer.draws.has_request() and trainer.draw_s > 0
    trainer.step(x_real, x_ulb, scores, threshold=0.5, trusted=True)
    assert torch.equal(trainer.detector.batches[-1][0][3:], trainer.draws.images[second[0]] + second[1] % 7)
    assert torch.equal(torch.random.get_rng_state(), state)  # draws use the trainer's generator only


def test_without_the_queue_it_stays_pu_when_trusted():
    trainer = _trainer(use_queue=False)
    x_real, x_ulb, scores = _batch()
    trainer.step(x_real, x_ulb, scores, threshold=0.5, trusted=True)
    assert torch.equal(trainer.detector.batches[-1][0][3:], x_ulb) and trainer.draws.requested == []


def test_lowest_scoring_unlabeled_samples_judged_real_join_the_real_side():
    trainer = _trainer(ulb_real=3)
    x_real = torch.zeros(2, 3, 2, 2)
    x_ulb = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 2, 2)
    scores = torch.tensor([0.4, 0.1, 0.3, 0.05, 0.2, 0.9])
    trainer.step(x_real, x_ulb, scores, threshold=0.25, trusted=False)
    x, target, _ = trainer.detector.batches[-1]
    # Below the threshold: 1, 3, 4; the three lowest, lowest first. The whole batch stays on the PU side.
    assert torch.equal(x[target == 0], torch.cat((x_real, x_ulb[[3, 1, 4]])))
    assert torch.equal(x[target == 1], x_ulb)


def test_state_dict_round_trip_continues_the_same_draws():
    trainer = _trainer()
    x_real, x_ulb, scores = _batch()
    trainer.step(x_real, x_ulb, scores, threshold=0.5, trusted=True)
    state = trainer.state_dict()
    assert set(state) == {"queue_generator", "queue_draw"}
    resumed = _trainer()
    resumed.load_state_dict({k: (dict(v) if isinstance(v, dict) else v.clone()) for k, v in state.items()})
    for t in (trainer, resumed):
        t.step(x_real, x_ulb, scores, threshold=0.5, trusted=True)
    assert torch.equal(trainer.detector.batches[-1][0], resumed.detector.batches[-1][0])
    assert torch.equal(trainer.generator.get_state(), resumed.generator.get_state())


def test_a_real_detector_learns_from_its_batches():
    torch.manual_seed(0)
    queue = CSQueue(num_classes=1, capacity=8, classes_per_step=1, per_class=8)
    for i in range(8):
        queue.push(0, i)
    synthetic = torch.rand(8, 3, 6, 6) + 1.0  # brighter than the real images
    trainer = DetectorTrainer(Detector(width=4, lr=3e-2, seed=0), queue, _Draws(synthetic), batch_size=8, seed=0)
    real = torch.rand(8, 3, 6, 6)
    for _ in range(20):
        loss, acc = trainer.step(real, synthetic, torch.zeros(8), threshold=0.5, trusted=True)
    assert acc == 1.0 and loss < 0.3
