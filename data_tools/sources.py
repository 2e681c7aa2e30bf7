"""Real image sources: each returns its train and test splits as :class:`ImageSet`.

Sources are looked up by the ``dataset`` config key in :data:`REAL_SOURCES`.
Large sources keep file paths and read images lazily, so indexing a folder of
a million images costs paths, not pixels.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from rsmatch_usb.errors import UserError


@dataclass
class ImageSet:
    """Images of one split with their labels.

    ``images`` is either a uint8 array (N, H, W) / (N, H, W, C) held in memory or
    a sequence of file paths read on access. ``is_synthetic`` is the ground-truth
    origin flag, kept for analysis only; training never sees it.
    """

    images: Union[np.ndarray, Sequence[str]]
    labels: np.ndarray
    class_names: List[str]
    is_synthetic: Optional[np.ndarray] = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.is_synthetic is None:
            self.is_synthetic = np.zeros(len(self.labels), dtype=bool)
        self.is_synthetic = np.asarray(self.is_synthetic, dtype=bool)
        if len(self.images) != len(self.labels) or len(self.labels) != len(self.is_synthetic):
            raise ValueError("images, labels and is_synthetic must have the same length")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        # Algorithms such as CRMatch index a dataset's ``data`` directly.
        return self.load(i)

    @property
    def lazy(self):
        return not isinstance(self.images, np.ndarray)

    def load(self, i):
        """Image ``i`` as an RGB PIL image (USB's nets and transforms expect 3 channels)."""
        item = self.images[i]
        if isinstance(item, np.ndarray):
            return Image.fromarray(item).convert("RGB")
        try:
            with Image.open(item) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read image {item}: {exc}; remove or replace the file") from None

    def subset(self, index):
        """The images at ``index`` (an integer array), as a new ImageSet."""
        index = np.asarray(index, dtype=np.int64)
        if self.lazy:
            images = [self.images[i] for i in index]
        else:
            images = self.images[index]
        return ImageSet(images, self.labels[index], self.class_names, self.is_synthetic[index])


DIGITS_CLASSES = [str(d) for d in range(10)]


def load_digits_source(args=None):
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
    return (ImageSet(images[train_idx], digits.target[train_idx], DIGITS_CLASSES),
            ImageSet(images[test_idx], digits.target[test_idx], DIGITS_CLASSES))


# name -> (loader(args) -> (train, test), normalisation mean, std)
REAL_SOURCES = {
    "digits": (load_digits_source, (0.305,) * 3, (0.376,) * 3),
}
