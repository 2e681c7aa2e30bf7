"""Rendering: what each image is (:class:`Plan`) and the text-to-image pipeline calls that make the missing ones.

The pipeline comes loaded (:mod:`.models`); this module only calls it, one
CPU noise generator per image, and writes each image as it is done, so an
interrupted run resumes where it stopped with the same pixels.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from . import output
from .output import Key
from .prompts import Prompt
from .seeds import image_seed

_MANIFEST_EVERY_S = 30.0


@dataclasses.dataclass
class Plan:
    """What image (class c, index i) is: file, prompt, seed."""
    class_names: List[str]
    folders: List[str]
    prompts: List[List[Prompt]]
    images_per_class: int
    seed: int
    generator: str
    _seeds: Dict[int, List[int]] = dataclasses.field(default_factory=dict)

    def image_seed(self, c: int, i: int) -> int:
        # Cached: deriving a seed costs ~10 us and the manifest is rewritten often.
        if c not in self._seeds:
            self._seeds[c] = [image_seed(self.seed, c, k) for k in range(self.images_per_class)]
        return self._seeds[c][i]

    def path(self, c: int, i: int) -> str:
        return output.image_path(self.folders, c, i)

    def prompt(self, c: int, i: int) -> str:
        plist = self.prompts[c]
        return plist[i % len(plist)]["prompt"]

    def rows(self) -> Iterator[Tuple[Key, tuple]]:
        """Every planned image's key and manifest row (:data:`.output.MANIFEST_COLUMNS`)."""
        for c, name in enumerate(self.class_names):
            for i in range(self.images_per_class):
                yield (c, i), (self.path(c, i), c, name, self.prompt(c, i),
                               self.image_seed(c, i), self.generator)


def to_size(image: Image.Image, size: int) -> Image.Image:
    """``image`` as an RGB square of ``size`` pixels."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    # Crop to a square before downsizing so objects keep their aspect ratio.
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)


def render(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float) -> List[Image.Image]:
    """One image per (prompt, seed) from the text-to-image pipeline."""
    # One CPU generator per image: its noise depends on its seed alone, and
    # CPU noise is the same whatever device runs the model.
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.inference_mode():
        out = pipe(prompt=list(prompts), generator=generators, num_inference_steps=steps,
                   guidance_scale=guidance, output_type="pil")
    return out.images


def generate(pipe: Any, plan: Plan, out_dir: str, image_size: int, batch_size: int, steps: int,
             guidance: float, progress: bool) -> int:
    """Render the missing images of ``plan`` into ``out_dir``; returns how many were written."""
    done = output.scan_done(out_dir, plan.folders, plan.images_per_class)
    total = len(plan.class_names) * plan.images_per_class
    written, last_manifest, manifest_cost = 0, time.monotonic(), 0.0
    bar = tqdm(total=total, initial=len(done), unit="img", desc="synthesizing",
               disable=not progress, dynamic_ncols=True)
    try:
        for c in range(len(plan.class_names)):
            # Batches sit on a fixed grid and a batch with any missing image is
            # rendered whole: the same batches as an uninterrupted run, so the
            # same floating-point results (batch size can change rounding).
            for start in range(0, plan.images_per_class, batch_size):
                batch = range(start, min(start + batch_size, plan.images_per_class))
                if all((c, i) in done for i in batch):
                    continue
                images = render(pipe, [plan.prompt(c, i) for i in batch],
                                [plan.image_seed(c, i) for i in batch], steps, guidance)
                for i, image in zip(batch, images):
                    if (c, i) not in done:
                        output.write_png(to_size(image, image_size), os.path.join(out_dir, plan.path(c, i)))
                        done.add((c, i))
                        written += 1
                        bar.update(1)
                # Checkpoint the manifest now and then, less often for huge sets.
                if time.monotonic() - last_manifest > max(_MANIFEST_EVERY_S, 20 * manifest_cost):
                    started = time.monotonic()
                    output.write_manifest(out_dir, plan.rows(), done)
                    last_manifest = time.monotonic()
                    manifest_cost = last_manifest - started
    finally:
        bar.close()
        output.write_manifest(out_dir, plan.rows(), done)
    return written
