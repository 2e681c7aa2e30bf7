"""Labeled/unlabeled splits, each the one USB's own loader makes for that dataset.

A split function takes ``(args, algorithm, train, num_labels, num_classes,
include_lb_to_ulb)`` and returns the labeled and the (real) unlabeled
:class:`ImageSet`. They call semilearn's samplers with the same arguments, in
the same global-RNG order, as semilearn 0.3.2's loaders, so a clean run holds
exactly USB's images under the same seed.
"""
from __future__ import annotations

import random
from argparse import Namespace
from typing import Tuple

import numpy as np
from semilearn.datasets.utils import sample_labeled_unlabeled_data, split_ssl_data

from .errors import UserError
from .imageset import ImageSet


def balanced_split(args: Namespace, algorithm: str, train: ImageSet, num_labels: int, num_classes: int,
                   include_lb_to_ulb: bool) -> Tuple[ImageSet, ImageSet]:
    """semilearn's ``split_ssl_data``, as its CIFAR and SVHN loaders call it.

    The split runs on sample indices: the sampler shuffles indices per class,
    so the result does not depend on the pixels. As USB does,
    ``fullysupervised`` gets every training image as labeled.
    """
    lb_imb_ratio = getattr(args, "lb_imb_ratio", 1)
    if lb_imb_ratio == 1:
        if num_labels % num_classes:
            raise UserError(f"num_labels: {num_labels} is not divisible by num_classes {num_classes}; "
                            "USB's balanced split needs the same number of labels per class")
        counts = np.bincount(train.labels, minlength=num_classes)
        if num_labels // num_classes > counts.min():
            raise UserError(f"num_labels: {num_labels} asks for {num_labels // num_classes} labels per class but "
                            f"the smallest class has {counts.min()} training images; lower num_labels")
    ulb_num_labels = getattr(args, "ulb_num_labels", None)
    if ulb_num_labels not in (None, "None") and getattr(args, "ulb_imb_ratio", 1) == 1:
        if int(ulb_num_labels) % num_classes:
            raise UserError(f"ulb_num_labels: {ulb_num_labels} is not divisible by num_classes {num_classes}; "
                            "USB's balanced split needs the same number of unlabeled images per class")
        wanted = num_labels // num_classes + int(ulb_num_labels) // num_classes
        if lb_imb_ratio == 1 and wanted > counts.min():
            raise UserError(f"ulb_num_labels: {ulb_num_labels} with num_labels {num_labels} needs {wanted} "
                            f"training images per class but the smallest class has {counts.min()}; lower it")
    lb_idx, _, ulb_idx, _ = split_ssl_data(
        args, np.arange(len(train)), train.labels, num_classes,
        lb_num_labels=num_labels, ulb_num_labels=ulb_num_labels,
        lb_imbalance_ratio=lb_imb_ratio, ulb_imbalance_ratio=getattr(args, "ulb_imb_ratio", 1),
        include_lb_to_ulb=include_lb_to_ulb)
    lb = train if algorithm == "fullysupervised" else train.subset(lb_idx)
    return lb, train.subset(ulb_idx)


def stl10_split(args: Namespace, algorithm: str, train: ImageSet, num_labels: int, num_classes: int,
                include_lb_to_ulb: bool) -> Tuple[ImageSet, ImageSet]:
    """semilearn's STL-10 split: labels drawn from the labeled train images only.

    ``train`` holds the labeled images (label >= 0) and then the unlabeled ones
    (label -1). As in USB, the unlabeled set is the unlabeled split followed by
    all labeled train images with their labels hidden (-1), preceded by the
    labeled split when ``include_lb_to_ulb``; the sampler may reuse the index
    file semilearn saved earlier for the same num_labels and seed
    (``load_exist=True`` in USB), and ``fullysupervised`` has no special case.
    """
    labeled = np.flatnonzero(train.labels >= 0)
    unlabeled = np.flatnonzero(train.labels < 0)
    lb_pos, _ = sample_labeled_unlabeled_data(
        args, None, train.labels[labeled], num_classes, lb_num_labels=num_labels,
        ulb_num_labels=getattr(args, "ulb_num_labels", None), lb_imbalance_ratio=getattr(args, "lb_imb_ratio", 1),
        ulb_imbalance_ratio=getattr(args, "ulb_imb_ratio", 1), load_exist=True)
    lb = train.subset(labeled[np.asarray(lb_pos, dtype=np.int64)])
    ulb = train.subset(np.concatenate([unlabeled, labeled]))
    ulb.labels[:] = -1
    if include_lb_to_ulb:
        ulb = ImageSet.concat(lb, ulb)
    return lb, ulb


def imagenet_split(args: Namespace, algorithm: str, train: ImageSet, num_labels: int, num_classes: int,
                   include_lb_to_ulb: bool) -> Tuple[ImageSet, ImageSet]:
    """semilearn's ImageNet split: the first ``int(n_c * num_labels / N)`` of each shuffled class folder.

    USB's ImagenetDataset lists each class folder, in label order, and shuffles
    the listing with Python's ``random`` once for the full set, once for the
    labeled set (keeping the head) and once for the unlabeled set. A shuffle
    draws the same numbers for any list of the same length, so shuffling index
    lists in the same order reproduces USB's sets from ``train``, whose images
    are in label order and directory-listing order within a class. (Identical
    when class folders hold only images, as ImageNet's do.) As in USB,
    ``fullysupervised`` has no special case.
    """
    by_class = [list(np.flatnonzero(train.labels == c)) for c in range(num_classes)]
    for idx in by_class:  # the full training set USB builds first (only its length is used)
        random.shuffle(list(idx))
    percentage = num_labels / len(train)
    lb_idx, lb_of_class = [], []
    for idx in by_class:
        idx = list(idx)
        random.shuffle(idx)
        picked = idx[:int(len(idx) * percentage)]
        lb_idx += picked
        lb_of_class.append(set(picked))
    ulb_idx = []
    for idx, picked in zip(by_class, lb_of_class):
        idx = list(idx)
        random.shuffle(idx)
        ulb_idx += idx if include_lb_to_ulb else [i for i in idx if i not in picked]
    if not lb_idx:
        raise UserError(f"num_labels: {num_labels} labels over {len(train)} images leaves no class a labeled "
                        "image in USB's ImageNet split; raise num_labels")
    return train.subset(lb_idx), train.subset(ulb_idx)
