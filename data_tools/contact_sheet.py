"""The contact sheet of a synthetic set: per class, some of its synthetic images beside real ones.

One drawing for every generator script (the bundled digits and the Fashion-MNIST
sources), so their sheets in ``docs/`` read alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

PAD = 2  # white pixels between tiles
TAG_ROOM = 6  # pixels under each row for the tags of marked tiles


def draw_contact_sheet(path: Path, synthetic: Sequence[Sequence[np.ndarray]], real: Sequence[Sequence[np.ndarray]],
                       row_names: Sequence[str], *, headings: Tuple[str, str], title: str,
                       marks: Optional[Dict[Tuple[int, int], str]] = None, ylabel: Optional[str] = None,
                       cell_inches: float = 0.5, dpi: int = 120) -> None:
    """Write a PNG with one row per class: its ``synthetic`` images, a blank column, its ``real`` images.

    ``synthetic[r]`` and ``real[r]`` are row ``r``'s uint8 (S, S) tiles;
    ``headings`` name the two column groups. ``marks`` maps ``(row, column)``
    of a synthetic tile to a short tag: the tile gets a red box and the tag
    below it (the rows grow to leave room).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    marks = marks or {}
    tiles = [tile for row in (*synthetic, *real) for tile in row]
    size = tiles[0].shape[0]
    n_syn = max(len(row) for row in synthetic)
    n_real = max(len(row) for row in real)
    cols, cell = n_syn + 1 + n_real, size + PAD
    row_h = cell + (TAG_ROOM if marks else 0)
    mosaic = np.full((len(row_names) * row_h + PAD, cols * cell + PAD), 255, np.uint8)
    for r in range(len(row_names)):
        placed = [*enumerate(synthetic[r]), *((n_syn + 1 + j, img) for j, img in enumerate(real[r]))]
        for col, img in placed:
            r0, c0 = PAD + r * row_h, PAD + col * cell
            mosaic[r0:r0 + size, c0:c0 + size] = img
    fig, ax = plt.subplots(figsize=(cols * cell_inches + 1.6, len(row_names) * cell_inches * row_h / cell + 1.1))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for (r, col), tag in marks.items():
        x0, y0 = PAD + col * cell, PAD + r * row_h
        ax.add_patch(Rectangle((x0 - 1, y0 - 1), size + 1, size + 1, fill=False, ec="red", lw=1.2))
        ax.text(x0 + size / 2 - 0.5, y0 + size + 0.5, tag, color="red", ha="center", va="top", fontsize=6)
    ax.set_yticks([PAD + r * row_h + size / 2 for r in range(len(row_names))])
    ax.set_yticklabels(row_names, fontsize=7)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_xticks([PAD + n_syn * cell / 2, PAD + (n_syn + 1 + n_real / 2) * cell])
    ax.set_xticklabels(headings, fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
