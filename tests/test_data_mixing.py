"""Composition of RS-SSL datasets: counts, balance, separation of splits, seeding, flags."""

import numpy as np
import pytest
from semilearn.datasets.utils import split_ssl_data

from conftest import build_datasets as build, digits_args
from data_tools import mixing, usb
from data_tools.sources import load_digits_source


def image_keys(image_set):
    return {image_set.images[i].tobytes() for i in range(len(image_set))}


@pytest.mark.parametrize("ratio", [0, 0.5, 1, 2])
def test_composition_at_each_ratio(bundled_digits, ratio):
    lb, ulb, ev = build(digits_args(synthetic_ratio=ratio))
    real = ~ulb.is_synthetic
    n_real = int(real.sum())
    assert n_real == 1347  # the whole digits train split, labeled images included (include_lb_to_ulb)
    n_syn = int(ulb.is_synthetic.sum())
    assert n_syn == mixing.synthetic_total(n_real, ratio) == int(np.floor(ratio * n_real + 0.5))
    counts = np.bincount(ulb.labels[ulb.is_synthetic], minlength=10)
    assert counts.sum() == n_syn and counts.max() - counts.min() <= (1 if n_syn else 0)
    # Synthetic images come after the real ones, which keep the clean order.
    assert not ulb.is_synthetic[:n_real].any() and ulb.is_synthetic[n_real:].all()
    # Labeled and eval sets are real only, and hold none of the synthetic pixels.
    assert not lb.is_synthetic.any() and not ev.is_synthetic.any()
    syn_images = {ulb.images[i].tobytes() for i in np.flatnonzero(ulb.is_synthetic)}
    assert not syn_images & (image_keys(lb) | image_keys(ev))
    # The flag reaches every unlabeled sample USB builds.
    datasets = usb.get_dataset(digits_args(synthetic_ratio=ratio), "fixmatch", "digits", 40, 10)
    train_ulb = datasets["train_ulb"]
    assert len(train_ulb) == n_real + n_syn
    assert [train_ulb[i]["is_synthetic_ulb"] for i in (0, len(train_ulb) - 1)] == [False, n_syn > 0]
    assert "is_synthetic_ulb" not in datasets["train_lb"][0]


def test_clean_dataset_is_usbs_split(bundled_digits):
    """synthetic_ratio 0 (or no source) gives exactly semilearn's split_ssl_data under the same seed."""
    train, _ = load_digits_source()
    np.random.seed(3)
    lb_x, lb_y, ulb_x, ulb_y = split_ssl_data(digits_args(seed=3), train.images, train.labels, 10, 40)
    for args in (digits_args(seed=3), digits_args(seed=3, synthetic_source=None)):
        lb, ulb, _ = build(args)
        assert np.array_equal(lb.images, lb_x) and np.array_equal(lb.labels, lb_y)
        assert np.array_equal(np.stack(list(ulb.images)), ulb_x) and np.array_equal(ulb.labels, ulb_y)
    # Contamination leaves the real part untouched.
    _, mixed, _ = build(digits_args(seed=3, synthetic_ratio=1))
    assert np.array_equal(np.stack([mixed.images[i] for i in range(len(ulb_x))]), ulb_x)


def synthetic_part(ulb):
    return [ulb.images[i].tobytes() for i in np.flatnonzero(ulb.is_synthetic)]


def test_same_seed_same_set_and_nested_ratios(bundled_digits):
    first = synthetic_part(build(digits_args(synthetic_ratio=1))[1])
    assert first == synthetic_part(build(digits_args(synthetic_ratio=1))[1])
    other_seed = synthetic_part(build(digits_args(synthetic_ratio=1, synthetic_seed=7))[1])
    assert set(other_seed) != set(first)
    # synthetic_seed decouples the draw from the run's seed (which moves the real split).
    moved = build(digits_args(seed=5, synthetic_ratio=1, synthetic_seed=0))[1]
    assert synthetic_part(moved) == first
    half = synthetic_part(build(digits_args(synthetic_ratio=0.5))[1])
    assert set(half) < set(first)


def test_rounding_and_spread():
    assert mixing.synthetic_total(30, 0.1) == 3
    assert mixing.synthetic_total(3, 0.5) == 2  # halves round up
    assert mixing.synthetic_total(1347, 2) == 2694
    counts = mixing.per_class_counts(23, 10, seed=0)
    assert counts.sum() == 23 and sorted(set(counts.tolist())) == [2, 3]
    assert np.array_equal(counts, mixing.per_class_counts(23, 10, seed=0))
    assert not np.array_equal(counts, mixing.per_class_counts(23, 10, seed=1))
    assert np.all(mixing.per_class_counts(24, 10, seed=0) >= counts)


def test_fullysupervised_keeps_synthetic_out_of_labeled(bundled_digits):
    lb, ulb, _ = build(digits_args(synthetic_ratio=1), algorithm="fullysupervised")
    assert len(lb) == 1347 and not lb.is_synthetic.any() and ulb.is_synthetic.sum() == 1347
