"""The in-memory description of a split: images (pixels or paths), labels, origin flags."""
from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .errors import UserError

# PIL's modes of 16-bit images (a 16-bit grayscale PNG opens as I;16); "I" is how
# PIL widens them. Their real range is 0-65535.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Image.Image, name: str) -> Image.Image:
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
    ``is_synthetic`` is the ground-truth origin flag and ``source`` the index of
    each image's origin in ``source_names`` (``"real"``, or a synthetic
    source's id when several are mixed), both kept for analysis only; training
    never sees them. ``class_ids`` are alternative class keys (e.g. WordNet
    ids, the folder names of ImageNet) accepted when a synthetic source names
    its classes.
    """

    images: Union[np.ndarray, Sequence]
    labels: np.ndarray
    class_names: List[str]
    is_synthetic: Optional[np.ndarray] = None
    class_ids: Optional[List[str]] = None
    source: Optional[np.ndarray] = None
    source_names: Optional[List[str]] = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.is_synthetic is None:
            self.is_synthetic = np.zeros(len(self.labels), dtype=bool)
        self.is_synthetic = np.asarray(self.is_synthetic, dtype=bool)
        if self.source is None:  # by default the flag says it: 0 real, 1 synthetic
            self.source = self.is_synthetic.astype(np.int16)
        self.source = np.asarray(self.source, dtype=np.int16)
        self.source_names = list(self.source_names or ("real", "synthetic"))
        if len(self.images) != len(self.labels) or len(self.labels) != len(self.is_synthetic) \
                or len(self.source) != len(self.labels):
            raise ValueError("images, labels, is_synthetic and source must have the same length")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        # Algorithms such as CRMatch index a dataset's ``data`` directly.
        return self.load(i)

    @property
    def lazy(self) -> bool:
        return not isinstance(self.images, np.ndarray)

    def load(self, i: int) -> Image.Image:
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

    def subset(self, index: Sequence[int]) -> ImageSet:
        """The images at ``index`` (an integer array), as a new ImageSet."""
        index = np.asarray(index, dtype=np.int64)
        if self.lazy:
            images = [self.images[i] for i in index]
        else:
            images = self.images[index]
        return ImageSet(images, self.labels[index], self.class_names, self.is_synthetic[index], self.class_ids,
                        self.source[index], self.source_names)

    def with_source(self, name: str) -> ImageSet:
        """The same images, every one of them from the source called ``name``."""
        return ImageSet(self.images, self.labels, self.class_names, self.is_synthetic, self.class_ids,
                        np.ones(len(self), dtype=np.int16), ["real", name])

    def source_of(self, i: int) -> str:
        """The name of image ``i``'s source."""
        return self.source_names[self.source[i]]

    @staticmethod
    def concat(first: ImageSet, *others: ImageSet) -> ImageSet:
        """``first`` followed by ``others`` (same classes); images are not copied, source names merged."""
        names = list(first.source_names)
        sources = [first.source]
        for other in others:
            names += [n for n in other.source_names if n not in names]
            remap = np.asarray([names.index(n) for n in other.source_names], dtype=np.int16)
            sources.append(remap[other.source])
        source = np.concatenate(sources)
        keep = sorted(set(np.unique(source).tolist()) | {0})  # drop names no image has ("real" stays first)
        compact = np.zeros(len(names), dtype=np.int16)
        compact[keep] = np.arange(len(keep))
        parts = (first,) + others
        return ImageSet(ConcatItems([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                        first.class_names, np.concatenate([p.is_synthetic for p in parts]), first.class_ids,
                        compact[source], [names[k] for k in keep])
