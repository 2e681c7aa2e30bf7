"""RSMatch's Router (calibration hold-out and scores, routing threshold, trust gate): plain PyTorch, no semilearn."""
import pytest
import torch

from rsmatch_usb.algorithms.rsmatch.csqueue import CSQueue
from rsmatch_usb.algorithms.rsmatch.router import Router


def _router(num_classes=3, calib_index=(), router_class=Router, **kwargs):
    queue = CSQueue(num_classes, capacity=4, classes_per_step=num_classes, per_class=4)
    return router_class(queue, torch.tensor(calib_index, dtype=torch.long), **kwargs)


def test_hold_out_takes_the_first_images_of_each_class_sorted():
    targets = [2, 0, 1, 0, 2, 1, 0]
    assert Router.hold_out(targets, 1, 3).tolist() == [0, 1, 2]
    assert Router.hold_out(targets, 2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert Router.hold_out(targets, 0, 3).tolist() == []


def test_held_out_scores_are_recorded_and_set_the_floor():
    router = _router(calib_index=[3, 7, 9])
    assert router.calibration_floor == float("-inf") and router.routing_threshold == 0.5
    idx_lb = torch.tensor([5, 9, 3, 1])
    held = router.held_out(idx_lb)
    assert held.tolist() == [False, True, True, False]
    router.record(idx_lb, held, torch.tensor([0.8, 0.2]))
    assert router.calib_scores.tolist()[0] == pytest.approx(0.2) and router.calib_scores[2] == pytest.approx(0.8)
    assert router.calib_scores[1].isnan()
    # A later batch updates only the images it holds.
    router.record(torch.tensor([7, 0]), router.held_out(torch.tensor([7, 0])), torch.tensor([0.6]))
    assert router.calib_scores.tolist() == pytest.approx([0.2, 0.6, 0.8])
    assert router.calibration_floor == pytest.approx(0.8)  # default quantile 1: the maximum
    assert router.routing_threshold == pytest.approx(0.8)
    router.calib_quantile = 0.5
    assert router.calibration_floor == pytest.approx(0.6) and router.routing_threshold == pytest.approx(0.6)
    router.detector_threshold = 0.7
    assert router.routing_threshold == pytest.approx(0.7)


def test_without_held_out_images_nothing_is_held_or_recorded():
    router = _router()
    held = router.held_out(torch.tensor([1, 2]))
    assert held.tolist() == [False, False]
    router.record(torch.tensor([1, 2]), held, torch.zeros(0))
    assert router.calibration_floor == float("-inf")


def test_nothing_is_routed_until_trusted_then_the_judged_samples_are():
    router = _router(detector_threshold=0.5)
    scores = torch.tensor([0.1, 0.5, 0.9])
    judged, routed = router.route(scores, torch.arange(3))
    assert judged.tolist() == [0.0, 1.0, 1.0] and routed.tolist() == [0.0, 0.0, 0.0]
    router.trusted = True
    judged, routed = router.route(scores, torch.arange(3))
    assert routed.tolist() == judged.tolist() == [0.0, 1.0, 1.0]


def test_the_oracle_routes_by_the_flags_from_the_first_step():
    from rsmatch_usb.algorithms.rsmatch.plugin import OracleRouter  # the plugin's diagnostic, not exported

    router = _router(router_class=OracleRouter)
    scores, idx_ulb = torch.tensor([0.9, 0.9, 0.1]), torch.tensor([3, 2, 1])
    assert router.route(scores, idx_ulb)[1].tolist() == [0.0, 0.0, 0.0]  # no flags: the Router's (untrusted)
    router.oracle = torch.tensor([True, False, True, False])
    judged, routed = router.route(scores, idx_ulb)
    assert judged.tolist() == [1.0, 1.0, 0.0] and routed.tolist() == [0.0, 1.0, 0.0]


def test_push_admits_above_the_floor_and_opens_the_gate_once():
    router = _router(calib_index=[0], queue_min_score=0.5, queue_min_fill=1, queue_gate_share=2 / 3)
    router.record(torch.tensor([0]), torch.tensor([True]), torch.tensor([0.7]))  # the floor: 0.7
    labels = torch.tensor([0, 1, 2])
    assert not router.push(torch.tensor([10, 11, 12]), labels, torch.tensor([0.6, 0.8, 0.65]))
    assert router.queue.fill.tolist() == [0, 1, 0] and not router.trusted  # 0.6 and 0.65 are below the floor
    assert router.push(torch.tensor([13, 14, 15]), labels, torch.tensor([0.9, 0.1, 0.1]))
    assert router.trusted and router.full_sub_queues == 2  # 2 of 3 classes: the gate share
    assert not router.push(torch.tensor([16, 17, 18]), labels, torch.tensor([0.9, 0.9, 0.9]))  # already open
    assert router.trusted


def test_state_dict_round_trip():
    router = _router(calib_index=[1, 4])
    router.record(torch.tensor([4]), torch.tensor([True]), torch.tensor([0.3]))
    router.trusted = True
    state = router.state_dict()
    assert set(state) == {"detector_trusted", "calib_scores"} and all(isinstance(v, torch.Tensor) for v in state.values())
    fresh = _router(calib_index=[1, 4])
    fresh.load_state_dict(state)
    assert fresh.trusted and torch.equal(fresh.calib_scores.nan_to_num(-1), router.calib_scores.nan_to_num(-1))
    assert fresh.calibration_floor == pytest.approx(0.3)
