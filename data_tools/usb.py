"""Bridge from data_tools' image sets to USB's datasets and config keys.

:func:`get_dataset` has semilearn's ``get_dataset`` signature. The runtime
installs it so that every USB algorithm builds plugin datasets, and RS-SSL
contaminated ones, without a change to its code. Datasets in
:data:`~data_tools.sources.REAL_SOURCES` (including semilearn's cifar10,
cifar100, svhn, stl10 and imagenet, read from the same files and split the
same way) are built here; the others fall through to semilearn, clean only.
"""
from __future__ import annotations

import math
from argparse import ArgumentParser, Namespace
from typing import Any, Dict, List, Optional, Tuple

from semilearn.core.utils import build as usb_build
from semilearn.datasets.augmentation import RandAugment, RandomResizedCropAndInterpolation
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset
from torchvision import transforms

from . import mixing, usb_api
from .errors import UserError
from .imageset import ImageSet
from .sources import REAL_SOURCES

# Datasets semilearn 0.3.2 builds itself (its get_dataset returns None otherwise).
USB_DATASETS = ("eurosat", "tissuemnist", "semi_aves", "semi_aves_out", "cifar10", "cifar100", "svhn",
                "stl10", "imagenet", "imagenet127", "esc50", "fsdnoisy", "gtzan", "superbks", "superbsi",
                "urbansound8k", "aclImdb", "ag_news", "amazon_review", "dbpedia", "yahoo_answers",
                "yelp_review")

# semilearn's get_dataset, kept before the runtime replaces the name AlgorithmBase uses.
_usb_get_dataset = usb_build.get_dataset


def add_data_arguments(parser: ArgumentParser) -> None:
    """Config keys of the RS-SSL data and of the plugin's real sources (documented in docs/data.md)."""
    parser.add_argument("--synthetic_source", type=str, default=None,
                        help="folder, manifest CSV, .npz, 'bundled' or 'bundled:<name>', or a YAML list of "
                             "them (entries may be {source, weight, name}): synthetic images for the unlabeled set")
    parser.add_argument("--synthetic_ratio", type=float, default=0.0,
                        help="alpha = synthetic images / real unlabeled images")
    parser.add_argument("--synthetic_seed", type=int, default=None,
                        help="seed of the synthetic draw (default: the run's seed)")
    parser.add_argument("--eval_split", type=str, default="test", choices=("test", "val"),
                        help="the set evaluated on: 'test', or 'val', a validation split held out of the SSL pool "
                             "(fashion_mnist), on which settings are chosen")
    parser.add_argument("--image_folder_root", type=str, default=None,
                        help="dataset imagefolder: folder with train/<class>/ and val/<class>/ (or test/)")
    parser.add_argument("--class_list", type=str, default=None,
                        help="dataset imagenet: file of class folders (one per line) to use a class subset")


def known_datasets() -> List[str]:
    return sorted(set(REAL_SOURCES) | set(USB_DATASETS))


def check_dataset_name(name: str) -> None:
    if name not in REAL_SOURCES and name not in USB_DATASETS:
        raise UserError(f"dataset: unknown dataset {name!r}; use one of: {', '.join(known_datasets())}")


def check_eval_split(args: Namespace, dataset: str) -> None:
    """``eval_split: val`` needs a dataset with a validation split (held out of its SSL pool)."""
    if getattr(args, "eval_split", "test") == "val" and not (dataset in REAL_SOURCES and REAL_SOURCES[dataset].has_val):
        with_val = sorted(name for name, source in REAL_SOURCES.items() if source.has_val)
        raise UserError(f"eval_split: dataset {dataset!r} has no validation split; use eval_split: test, or a "
                        f"dataset that has one: {', '.join(with_val)}")


def build_datasets(args: Namespace, algorithm: str, dataset: str, num_labels: int, num_classes: int,
                   data_dir: str, include_lb_to_ulb: bool) -> Tuple[ImageSet, ImageSet, ImageSet]:
    """The labeled, unlabeled (possibly contaminated) and eval :class:`ImageSet` of a plugin dataset."""
    check_eval_split(args, dataset)
    mixing.synthetic_settings(args, dataset)  # a bad key or source fails before any data is read
    source = REAL_SOURCES[dataset]
    train_set, eval_set = source.load(args, data_dir)
    if len(train_set.class_names) != num_classes:
        raise UserError(f"num_classes: {num_classes} does not match dataset {dataset!r}, which has "
                        f"{len(train_set.class_names)} classes; set num_classes: {len(train_set.class_names)}")
    lb_set, ulb_set = source.split(args, algorithm, train_set, num_labels, num_classes, include_lb_to_ulb)
    return lb_set, mixing.mix_unlabeled(args, dataset, ulb_set), eval_set


class RSSLDataset(BasicDataset):
    """USB's BasicDataset over an :class:`ImageSet`, read lazily.

    Unlabeled samples also carry ``is_synthetic_ulb``, the ground-truth origin
    flag, and ``source_ulb``, the index of their source in
    ``data.source_names``, for analysis. USB's ``process_batch`` passes a train
    step only the keys in its signature, so no algorithm trains on them.
    """

    def __init__(self, alg, image_set, num_classes, transform, is_ulb=False, strong_transform=None,
                 medium_transform=None):
        super().__init__(**usb_api.basic_dataset_arguments(
            alg, image_set, image_set.labels, num_classes, transform, is_ulb=is_ulb,
            strong_transform=strong_transform, medium_transform=medium_transform))

    def __sample__(self, idx):
        return self.data.load(idx), int(self.targets[idx])

    def __getitem__(self, idx):
        sample = super().__getitem__(idx)
        if self.is_ulb:
            sample["is_synthetic_ulb"] = bool(self.data.is_synthetic[idx])
            sample["source_ulb"] = int(self.data.source[idx])
        return sample


def build_transforms(img_size: int, crop_ratio: float, mean: Tuple[float, ...], std: Tuple[float, ...],
                     style: str = "classic", strong_ops: Optional[int] = None
                     ) -> Tuple[transforms.Compose, transforms.Compose, transforms.Compose]:
    """USB's weak, strong and eval transforms.

    ``classic``: semilearn's CIFAR/SVHN/STL-10 pipeline (RandAugment(3, 5));
    ``imagenet``: its ImageNet pipeline (RandAugment(3, 10), center-crop eval).
    Each starts by resizing to a square, which also brings synthetic images of
    another size to the real data's size (``Resize(s)`` of USB's classic
    pipeline equals ``Resize((s, s))`` on its square images). ``strong_ops``
    replaces RandAugment's 3 operations of the strong view: USB main's medium
    view is that pipeline with one.
    """
    ops = 3 if strong_ops is None else strong_ops
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if style == "imagenet":
        outer = int(math.floor(img_size / crop_ratio))
        weak = transforms.Compose([
            transforms.Resize((outer, outer)), transforms.RandomCrop((img_size, img_size)),
            transforms.RandomHorizontalFlip(), *normalize])
        strong = transforms.Compose([
            transforms.Resize((outer, outer)), RandomResizedCropAndInterpolation((img_size, img_size)),
            transforms.RandomHorizontalFlip(), RandAugment(ops, 10), *normalize])
        evaluation = transforms.Compose([
            transforms.Resize(outer), transforms.CenterCrop(img_size), *normalize])
        return weak, strong, evaluation
    pad = int(img_size * (1 - crop_ratio))
    weak = transforms.Compose([
        transforms.Resize((img_size, img_size)),
        transforms.RandomCrop(img_size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        *normalize])
    strong = transforms.Compose([
        transforms.Resize((img_size, img_size)),
        transforms.RandomCrop(img_size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        RandAugment(ops, 5),
        *normalize])
    evaluation = transforms.Compose([transforms.Resize((img_size, img_size)), *normalize])
    return weak, strong, evaluation


def get_dataset(args: Namespace, algorithm: str, dataset: str, num_labels: int, num_classes: int,
                data_dir: str = "./data", include_lb_to_ulb: bool = True) -> Dict[str, Any]:
    """semilearn's ``get_dataset``: plugin datasets built here, the others by semilearn."""
    if dataset not in REAL_SOURCES:
        check_eval_split(args, dataset)
        if mixing.synthetic_settings(args)[0] is not None:
            raise UserError(f"synthetic_source: dataset {dataset!r} is built by semilearn itself, which cannot "
                            f"mix in synthetic images; use one of: {', '.join(sorted(REAL_SOURCES))}")
        return _usb_get_dataset(args, algorithm, dataset, num_labels, num_classes, data_dir, include_lb_to_ulb)
    lb_set, ulb_set, eval_set = build_datasets(args, algorithm, dataset, num_labels, num_classes, data_dir,
                                               include_lb_to_ulb)
    source = REAL_SOURCES[dataset]
    style = (args.img_size, args.crop_ratio, source.mean, source.std, source.transforms)
    weak, strong, evaluation = build_transforms(*style)
    # USB main's SequenceMatch also trains on a medium view; 0.3.2's datasets have none.
    medium = build_transforms(*style, strong_ops=1)[1] if usb_api.TAKES_MEDIUM_TRANSFORM else None
    return {
        "train_lb": RSSLDataset(algorithm, lb_set, num_classes, weak, False, strong),
        "train_ulb": RSSLDataset(algorithm, ulb_set, num_classes, weak, True, strong, medium),
        "eval": RSSLDataset(algorithm, eval_set, num_classes, evaluation),
        "test": None,
    }
