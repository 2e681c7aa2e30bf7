"""The in-memory description of a split: images (pixels or paths), labels, origin flags."""
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .errors import UserError

# PIL's modes of 16-bit images (a 16-bit grayscale PNG opens as I;16); "I" is how
# PIL widens them. Their real range is 0-65535.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img, name):
    """``img`` as an 8-bit RGB image, its values scaled from the range of its mode.

    PIL's ``convert("RGB")`` clips 16-bit values at 255, which turns a 16-bit
    PNG into a white image; here 0-65535 maps onto 0-255 (x / 257).
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(img, dtype=np.int64)
        pixels = np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels).convert("RGB")
    if img.mode == "F":
        raise UserError(f"image {name} holds 32-bit floating-point pixels, whose range is not defined; "
                        "save it as an 8- or 16-bit PNG")
    return img.convert("RGB")


class ConcatItems(SequenceABC):
    """Several sequences of images (uint8 arrays or path lists) read as one, without copying.

    Mixing appends a synthetic set to a real one; copying a 100k-image array to
    do so would double the memory of the unlabeled set.
    """

    def __init__(self, parts):
        self.parts = [p for p in parts if len(p)]
        self._ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)

    def __len__(self):
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i):
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        part = int(np.searchsorted(self._ends, i, side="right"))
        start = int(self._ends[part - 1]) if part else 0
        return self.parts[part][i - start]


@dataclass
class ImageSet:
    """Images of one split with their labels.

    ``images`` is either a uint8 array (N, H, W) / (N, H, W, C) held in memory or
    a sequence whose items are file paths (read on access) or uint8 arrays.
    ``is_synthetic`` is the ground-truth origin flag, kept for analysis only;
    training never sees it. ``class_ids`` are alternative class keys (e.g.
    WordNet ids, the folder names of ImageNet) accepted when a synthetic source
    names its classes.
    """

    images: Union[np.ndarray, Sequence]
    labels: np.ndarray
    class_names: List[str]
    is_synthetic: Optional[np.ndarray] = None
    class_ids: Optional[List[str]] = None

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
            if item.ndim == 3 and item.shape[-1] == 1:
                item = item[..., 0]
            return Image.fromarray(item).convert("RGB")
        try:
            with Image.open(item) as img:
                return to_rgb(img, item)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read image {item}: {exc}; remove or replace the file") from None

    def subset(self, index):
        """The images at ``index`` (an integer array), as a new ImageSet."""
        index = np.asarray(index, dtype=np.int64)
        if self.lazy:
            images = [self.images[i] for i in index]
        else:
            images = self.images[index]
        return ImageSet(images, self.labels[index], self.class_names, self.is_synthetic[index], self.class_ids)

    @staticmethod
    def concat(first, second):
        """``first`` followed by ``second`` (same classes); images are not copied."""
        return ImageSet(ConcatItems([first.images, second.images]),
                        np.concatenate([first.labels, second.labels]), first.class_names,
                        np.concatenate([first.is_synthetic, second.is_synthetic]), first.class_ids)
