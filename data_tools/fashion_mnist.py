"""Fashion-MNIST files: where they are, the IDX reader, and the generator-training split.

Fashion-MNIST installs offline from Debian (``apt-get install
dataset-fashion-mnist``, files under :data:`DEBIAN_DIR`); torchvision's
``FashionMNIST`` and the dataset's own release ship the same four IDX files.
This module needs neither semilearn nor torch, so the synthetic-image
generators and the USB source share one definition of the data and its splits.

The 60,000 training images are divided once, independent of any run's seed:
:func:`generator_split` sets aside ``GENERATOR_PER_CLASS`` images per class on
which the synthetic-image generators are trained; :func:`val_split` sets aside
``VAL_PER_CLASS`` images per class of the rest as a validation set, on which
settings are chosen (``eval_split: val``); the SSL pool (labeled and unlabeled
images of every benchmark run) is what remains. The benchmark's eval split is
the 10,000 test images, which no generator sees.
"""
from __future__ import annotations

import gzip
import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from .class_names import FASHION_MNIST
from .errors import UserError

CLASS_NAMES = FASHION_MNIST

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

# split -> (images file, labels file), as the dataset's release names them.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

GENERATOR_PER_CLASS = 1000
GENERATOR_SPLIT_SEED = 0
VAL_PER_CLASS = 500
VAL_SPLIT_SEED = 1

# IDX type byte -> numpy dtype (big-endian, as the format stores them).
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def repair_hint(path: str) -> str:
    """How to repair a damaged Fashion-MNIST file: reinstall the Debian package only for the package's own file."""
    if os.path.realpath(path).startswith(os.path.realpath(DEBIAN_DIR) + os.sep):
        return f"reinstall it (apt-get install --reinstall {DEBIAN_PACKAGE})"
    return ("replace it with the dataset's original file (torchvision.datasets.FashionMNIST(..., download=True) "
            f"fetches them), or remove it to use the files of the Debian package {DEBIAN_PACKAGE}")


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or uncompressed) into a numpy array.

    torchvision's reader expects uncompressed files and fails with a bare
    assertion; here a truncated or foreign file is a :class:`UserError` naming it.
    """
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises OSError/EOFError on a damaged stream
        raise UserError(f"Fashion-MNIST file {path} cannot be read ({err}); {repair_hint(path)}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise UserError(f"Fashion-MNIST file {path} is not an IDX file (wrong magic number); {repair_hint(path)}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"Fashion-MNIST file {path} is truncated (header); {repair_hint(path)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    # Python ints: a damaged header's dimensions overflow numpy's int64 product (a negative byte count).
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(f"Fashion-MNIST file {path} holds {len(raw)} bytes, its header promises {expected}; "
                        f"the file is truncated or damaged: {repair_hint(path)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def candidate_dirs(data_dir: Optional[str] = None) -> List[str]:
    """Folders searched, in order: ``data_dir/fashion_mnist``, torchvision's layouts, Debian's."""
    dirs = []
    if data_dir:
        dirs += [os.path.join(data_dir, "fashion_mnist"),
                 os.path.join(data_dir, "fashion_mnist", "FashionMNIST", "raw"),
                 os.path.join(data_dir, "FashionMNIST", "raw")]
    return dirs + [DEBIAN_DIR]


def _find(name, dirs):
    for d in dirs:
        for candidate in (os.path.join(d, name), os.path.join(d, name + ".gz")):
            if os.path.isfile(candidate):
                return candidate
    return None


def find_files(data_dir: Optional[str] = None) -> Dict[str, str]:
    """Paths of the four IDX files, all from the first folder that holds a complete set."""
    names = [n for pair in FILES.values() for n in pair]
    for d in candidate_dirs(data_dir):
        paths = [_find(n, [d]) for n in names]
        if all(paths):
            return dict(zip(names, paths))
    raise UserError(
        f"Fashion-MNIST not found: expected {', '.join(n + '[.gz]' for n in names)} in one of "
        f"{', '.join(candidate_dirs(data_dir))}; install it with 'apt-get install {DEBIAN_PACKAGE}' "
        "or put the files under data_dir/fashion_mnist/")


# (image file, label file, their (mtime, size)) -> arrays: the train command builds
# the datasets twice (a dry run, then the run), and decompressing is the slow part.
_LOADED = {}


def load_split(split: str, data_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of ``'train'`` or ``'test'``."""
    paths = find_files(data_dir)
    image_file, label_file = (paths[n] for n in FILES[split])
    key = (image_file, label_file) + tuple((s.st_mtime_ns, s.st_size) for s in map(os.stat, (image_file, label_file)))
    if key not in _LOADED:
        _LOADED.clear()  # keep one split set in memory
        _LOADED[key] = _read_pair(image_file, label_file)
    images, labels = _LOADED[key]
    return images.copy(), labels.copy()


def _read_pair(image_file, label_file):
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST files {image_file} and {label_file} do not match "
                        f"(images {images.shape}, labels {labels.shape}); {repair_hint(label_file)}")
    if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise UserError(f"Fashion-MNIST labels in {label_file} fall outside 0-9; {repair_hint(label_file)}")
    return images.astype(np.uint8), labels.astype(np.int64)


def generator_split(labels: np.ndarray, per_class: int = GENERATOR_PER_CLASS,
                    seed: int = GENERATOR_SPLIT_SEED) -> np.ndarray:
    """Sorted indices of the training images reserved for training the synthetic-image generators.

    ``per_class`` images of each class, drawn by a fixed seed so the split never
    depends on a benchmark run's seed; :func:`val_split` and :func:`ssl_pool` share the rest.
    """
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(picked))


def val_split(labels: np.ndarray, per_class: int = VAL_PER_CLASS, seed: int = VAL_SPLIT_SEED) -> np.ndarray:
    """Sorted indices of the validation images: ``per_class`` of each class outside the generator split.

    Drawn by a fixed seed, like the generator split, so no run's seed moves it;
    settings (guidance scale, schedule, RSMatch's keys) are chosen on it and
    never on the test split.
    """
    free = np.ones(len(labels), dtype=bool)
    free[generator_split(labels)] = False
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(free & (labels == c)))[:per_class] for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(picked))


def ssl_pool(labels: np.ndarray) -> np.ndarray:
    """Sorted indices of the training images the SSL benchmark draws labeled and unlabeled data from.

    Every training image outside the generator split and the validation split.
    """
    mask = np.ones(len(labels), dtype=bool)
    mask[generator_split(labels)] = False
    mask[val_split(labels)] = False
    return np.flatnonzero(mask)
