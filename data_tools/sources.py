"""Real image sources: the registry :data:`REAL_SOURCES`, looked up by the ``dataset`` config key.

Each source returns its train and eval splits as :class:`ImageSet` and says
how USB splits and normalises it. ``cifar10``, ``cifar100``, ``svhn``,
``stl10`` and ``imagenet`` are also semilearn's names: they read the files
semilearn's loaders read, in the same layout under ``data_dir``, never
download, and split with the same sampler call (see :mod:`data_tools.splits`),
so a clean run holds USB's images. Large sources keep file paths and read
images lazily (:mod:`data_tools.folders`).
"""
from __future__ import annotations

import os
from argparse import Namespace
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torchvision
from semilearn.datasets.cv_datasets import cifar as usb_cifar
from semilearn.datasets.cv_datasets import imagenet as usb_imagenet
from semilearn.datasets.cv_datasets import stl10 as usb_stl10
from semilearn.datasets.cv_datasets import svhn as usb_svhn

from .errors import UserError
from . import class_names, fashion_mnist, folders, splits
from .imageset import ConcatItems, ImageSet

__all__ = ["ImageSet", "RealSource", "REAL_SOURCES"]


@dataclass(frozen=True)
class RealSource:
    """How to build one dataset: ``load(args, data_dir) -> (train, eval)``, USB's split and normalisation.

    ``transforms`` is ``"classic"`` (USB's CIFAR/SVHN/STL-10 pipeline) or
    ``"imagenet"`` (USB's ImageNet pipeline); see :func:`data_tools.usb.build_transforms`.
    ``has_val``: ``load`` returns the validation split as its eval set under ``eval_split: val``.
    """

    load: Callable
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    split: Callable = splits.balanced_split
    transforms: str = "classic"
    has_val: bool = False


def load_digits_source(args: Optional[Namespace] = None, data_dir: Optional[str] = None) -> Tuple[ImageSet, ImageSet]:
    """scikit-learn's bundled 8x8 digits with a fixed, seeded 75/25 train/test split.

    The split does not depend on the run's seed, so the test set is the same for
    every run and the bundled synthetic digits never saw a test image.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    train_idx, test_idx = train_test_split(np.arange(len(images)), test_size=0.25,
                                           stratify=digits.target, random_state=0)
    names = list(class_names.DIGITS)
    return (ImageSet(images[train_idx], digits.target[train_idx], names),
            ImageSet(images[test_idx], digits.target[test_idx], names))


def load_fashion_mnist(args: Optional[Namespace] = None, data_dir: Optional[str] = None
                       ) -> Tuple[ImageSet, ImageSet]:
    """Fashion-MNIST: the SSL pool of the training images (labeled and unlabeled data) and the eval images.

    The pool excludes the generator-training split and the validation split
    (:func:`data_tools.fashion_mnist.ssl_pool`), so no image a bundled generator
    was trained on, and no validation image, is ever labeled or unlabeled. The
    eval set is the 10,000 test images, or the validation images under
    ``eval_split: val``.
    Images stay 28x28 grayscale; :meth:`ImageSet.load` replicates them to RGB and
    USB's transforms resize them to ``img_size``.
    """
    train_images, train_labels = fashion_mnist.load_split("train", data_dir)
    counts = np.bincount(train_labels, minlength=len(fashion_mnist.CLASS_NAMES))
    held_out = fashion_mnist.GENERATOR_PER_CLASS + fashion_mnist.VAL_PER_CLASS
    if counts.min() <= held_out:
        path = fashion_mnist.find_files(data_dir)[fashion_mnist.FILES["train"][1]]
        raise UserError(f"Fashion-MNIST training labels {path} hold only {counts.min()} images of some class; "
                        f"the generator split and the validation split alone take {held_out} per class of the "
                        f"60,000: it is not the full dataset; {fashion_mnist.repair_hint(path)}")
    pool = fashion_mnist.ssl_pool(train_labels)
    names = list(fashion_mnist.CLASS_NAMES)
    if getattr(args, "eval_split", "test") == "val":
        val = fashion_mnist.val_split(train_labels)
        eval_set = ImageSet(train_images[val], train_labels[val], names)
    else:
        eval_set = ImageSet(*fashion_mnist.load_split("test", data_dir), names)
    return ImageSet(train_images[pool], train_labels[pool], names), eval_set


def _open_torchvision(cls, root, dataset, how, **kwargs):
    """A torchvision dataset with ``download=False``; missing or corrupt files are a UserError."""
    try:
        return cls(root, download=False, **kwargs)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        raise UserError(f"dataset {dataset}: files not found or corrupt under {root}; {how}") from None


def _cifar(name):
    def load(args: Namespace, data_dir: str) -> Tuple[ImageSet, ImageSet]:
        """CIFAR in torchvision's layout, ``data_dir/<name>/cifar-10(0)-batches-py`` (USB's)."""
        cls = getattr(torchvision.datasets, name.upper())
        root = os.path.join(data_dir, name)
        how = (f"download it with python -c \"import torchvision; torchvision.datasets.{cls.__name__}("
               f"'{root}', download=True)\" (expected {os.path.join(root, cls.base_folder)})")
        train = _open_torchvision(cls, root, name, how, train=True)
        test = _open_torchvision(cls, root, name, how, train=False)
        names = list(class_names.CIFAR10 if name == "cifar10" else class_names.CIFAR100)
        return (ImageSet(train.data, train.targets, names), ImageSet(test.data, test.targets, names))
    return load


def load_svhn(args: Namespace, data_dir: str) -> Tuple[ImageSet, ImageSet]:
    """SVHN train + extra (as USB trains on both) and test, ``data_dir/svhn/*_32x32.mat``."""
    root = os.path.join(data_dir, "svhn")
    how = (f"download it with python -c \"import torchvision; [torchvision.datasets.SVHN('{root}', split=s, "
           f"download=True) for s in ('train', 'extra', 'test')]\" (expected {root}/train_32x32.mat, "
           "extra_32x32.mat, test_32x32.mat)")
    parts = [_open_torchvision(torchvision.datasets.SVHN, root, "svhn", how, split=s)
             for s in ("train", "extra", "test")]
    # torchvision keeps (N, C, H, W); USB transposes to (N, H, W, C) for PIL.
    data = np.concatenate([p.data.transpose([0, 2, 3, 1]) for p in parts[:2]])
    labels = np.concatenate([p.labels for p in parts[:2]])
    names = list(class_names.DIGITS)
    return ImageSet(data, labels, names), ImageSet(parts[2].data.transpose([0, 2, 3, 1]), parts[2].labels, names)


def load_stl10(args: Namespace, data_dir: str) -> Tuple[ImageSet, ImageSet]:
    """STL-10: labeled train images, then the unlabeled split (label -1); test for eval."""
    root = os.path.join(data_dir, "stl10")
    how = (f"download it with python -c \"import torchvision; torchvision.datasets.STL10('{root}', "
           f"split='train+unlabeled', download=True)\" (expected {os.path.join(root, 'stl10_binary')})")
    stl = torchvision.datasets.STL10
    train = _open_torchvision(stl, root, "stl10", how, split="train")
    unlabeled = _open_torchvision(stl, root, "stl10", how, split="unlabeled")
    test = _open_torchvision(stl, root, "stl10", how, split="test")
    images = ConcatItems([train.data.transpose([0, 2, 3, 1]), unlabeled.data.transpose([0, 2, 3, 1])])
    labels = np.concatenate([train.labels.astype(np.int64), np.full(len(unlabeled.data), -1, dtype=np.int64)])
    names = list(train.classes)
    return (ImageSet(images, labels, names),
            ImageSet(test.data.transpose([0, 2, 3, 1]), test.labels.astype(np.int64), names))


_IMAGENET_STATS = (tuple(usb_imagenet.mean["imagenet"]), tuple(usb_imagenet.std["imagenet"]))

# name -> RealSource; normalisation statistics are semilearn's where it has the dataset.
REAL_SOURCES = {
    "digits": RealSource(load_digits_source, (0.305,) * 3, (0.376,) * 3),
    # Pixel mean / std of the 45,000-image SSL pool (docs/data.md), replicated over the RGB channels.
    "fashion_mnist": RealSource(load_fashion_mnist, (0.286,) * 3, (0.3531,) * 3, has_val=True),
    "cifar10": RealSource(_cifar("cifar10"), tuple(usb_cifar.mean["cifar10"]), tuple(usb_cifar.std["cifar10"])),
    "cifar100": RealSource(_cifar("cifar100"), tuple(usb_cifar.mean["cifar100"]), tuple(usb_cifar.std["cifar100"])),
    "svhn": RealSource(load_svhn, tuple(usb_svhn.mean["svhn"]), tuple(usb_svhn.std["svhn"])),
    "stl10": RealSource(load_stl10, tuple(usb_stl10.mean["stl10"]), tuple(usb_stl10.std["stl10"]),
                        split=splits.stl10_split),
    "imagenet": RealSource(folders.load_imagenet, *_IMAGENET_STATS, split=splits.imagenet_split,
                           transforms="imagenet"),
    "tiny_imagenet": RealSource(folders.load_tiny_imagenet, *_IMAGENET_STATS),
    "imagefolder": RealSource(folders.load_imagefolder, *_IMAGENET_STATS),
}
