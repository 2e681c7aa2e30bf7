"""The output folder of a synthesis run: what is in it, how it is written, and what ``--overwrite`` deletes.

::

    out/<class folder>/<class_idx>_<image_idx>.png
    out/manifest.csv          path,label,class_name,prompt,seed,generator
    out/prompts.json          prompts per class (reusable via --prompts-file)
    out/synthesis_config.json settings; a rerun with other settings is refused

Every file is written atomically under a fixed ``<name>.tmp`` name (one run
owns the folder), so an interrupted run leaves whole files and temporaries
this module knows how to remove.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from PIL import Image

from data_tools.atomic import atomic_write
from data_tools.errors import InputError, first_line

MANIFEST = "manifest.csv"
CONFIG = "synthesis_config.json"
PROMPTS = "prompts.json"
MANIFEST_COLUMNS = ("path", "label", "class_name", "prompt", "seed", "generator")
_IMAGE_FILE = re.compile(r"^\d+_\d+\.png(\.tmp)?$")

Key = Tuple[int, int]  # (class index, image index)


def _sanitize(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:80] or "class"
    # Names Windows reserves for devices cannot be folders there.
    if re.fullmatch(r"(con|prn|aux|nul|com\d|lpt\d)", text, re.IGNORECASE):
        text += "_"
    return text


def folder_names(class_names: Sequence[str]) -> List[str]:
    """Filesystem-safe, unique folder names, one per class.

    Duplicates (ImageNet has two "crane" classes) and names equal up to case
    (case-insensitive filesystems) get the class index appended.
    """
    folders, seen = [], set()
    for idx, name in enumerate(class_names):
        folder = _sanitize(name)
        while folder.lower() in seen:
            folder = f"{folder}_{idx}"
        seen.add(folder.lower())
        folders.append(folder)
    return folders


def image_path(folders: Sequence[str], c: int, i: int) -> str:
    """Image ``i`` of class ``c``, relative to the output folder."""
    return f"{folders[c]}/{c}_{i}.png"


# ------------------------------------------------------------------ writing

def write_text(path: str, text: str) -> None:
    """Write text so that readers see the old or the new file, never a torn one."""
    # Fixed <path>.tmp names: the cleanup of an interrupted run knows them.
    with atomic_write(path, "w", unique=False, encoding="utf-8", newline="") as f:
        f.write(text)


def write_png(image: Image.Image, path: str) -> None:
    with atomic_write(path, "wb", unique=False) as f:
        image.save(f, format="PNG")


def scan_done(out_dir: str, folders: Sequence[str], images_per_class: int) -> Set[Key]:
    """(class, image) pairs whose PNG exists; PNGs appear atomically."""
    done = set()
    for c, folder in enumerate(folders):
        try:
            present = set(os.listdir(os.path.join(out_dir, folder)))
        except FileNotFoundError:
            continue
        done.update((c, i) for i in range(images_per_class) if f"{c}_{i}.png" in present)
    return done


def write_manifest(out_dir: str, rows: Iterable[Tuple[Key, tuple]], done: Set[Key]) -> None:
    """Rewrite the manifest from the images on disk (``rows``: every planned image's key and row): rows never
    duplicate."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for key, row in rows:
        if key in done:
            writer.writerow(row)
    write_text(os.path.join(out_dir, MANIFEST), buf.getvalue())


def remove_stale_temps(out_dir: str, folders: Sequence[str]) -> None:
    """Remove the ``.png.tmp`` files an interrupted run left in the class folders."""
    for folder in folders:
        path = os.path.join(out_dir, folder)
        if os.path.isdir(path):
            for name in os.listdir(path):
                if name.endswith(".png.tmp") and _IMAGE_FILE.match(name):
                    os.remove(os.path.join(path, name))


# ------------------------------------------------------------ an earlier run

def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or (with ``--overwrite``) a folder holding a manifest this tool
    did not write."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--out {out_dir!r} is a file; give a folder (it is created if missing)")
    if (overwrite and os.path.isfile(os.path.join(out_dir, MANIFEST))
            and not os.path.isfile(os.path.join(out_dir, CONFIG))):
        raise InputError(f"output folder {out_dir!r} holds a {MANIFEST} without {CONFIG}, so this tool did "
                         "not write it and --overwrite will not delete its images; choose another --out")


def read_previous_settings(out_dir: str) -> Dict[str, Any]:
    """The config of the run already in out_dir, {} for none, or an error."""
    config = os.path.join(out_dir, CONFIG)
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {config!r} ({first_line(exc)}); pass --overwrite to replace "
                             f"that run (deletes the images its {MANIFEST} lists, nothing else)") from exc
    if os.path.isfile(os.path.join(out_dir, MANIFEST)):
        raise InputError(f"output folder {out_dir!r} holds a {MANIFEST} without {CONFIG}, so this tool did "
                         "not write it; choose another --out")
    return {}


def differences(previous: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str]) -> List[str]:
    """``key: old -> new`` (or the key alone, for long values) for each of ``keys`` whose value changed."""
    diffs = []
    for key in keys:
        old, new = previous.get(key), current.get(key)
        if old != new:
            short = all(isinstance(v, (int, float, str, type(None))) and len(str(v)) < 60
                        for v in (old, new))
            diffs.append(f"{key}: {old!r} -> {new!r}" if short else key)
    return diffs


def _own_image(relpath: str) -> Optional[str]:
    """``relpath`` normalised if it names an image this tool writes (``<folder>/<c>_<i>.png``), else None."""
    parts = os.path.normpath(str(relpath)).split(os.sep)
    if (len(parts) == 2 and not os.path.isabs(str(relpath)) and parts[0] not in ("", ".", "..")
            and not parts[0].startswith(".") and _IMAGE_FILE.match(parts[1]) and not parts[1].endswith(".tmp")):
        return os.path.join(*parts)
    return None


def _previous_images(out_dir: str, settings: Mapping[str, Any]) -> List[str]:
    """The images an earlier run of this tool in ``out_dir`` wrote or was writing, as relative paths.

    The rows of its manifest, and, when its settings are readable, every image
    its plan names (a run killed between two manifest checkpoints wrote some
    not yet listed). Only paths of the tool's own form count, so a manifest
    row pointing elsewhere deletes nothing.
    """
    listed = set()
    try:
        with open(os.path.join(out_dir, MANIFEST), newline="", encoding="utf-8-sig") as f:
            listed.update(row.get("path") or "" for row in csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # no manifest, or an unreadable one: the plan still names the images
    folders, per_class = settings.get("folders"), settings.get("images_per_class")
    if isinstance(folders, list) and isinstance(per_class, int):
        listed.update(image_path(folders, c, i) for c in range(len(folders)) for i in range(per_class))
    return sorted({p for p in map(_own_image, listed) if p})


def clear_previous_run(out_dir: str) -> None:
    """Delete what an earlier run of this tool wrote (:func:`_previous_images`, its manifest, settings
    and prompts), and nothing else: other files, even ones named like its images, stay."""
    try:
        settings = read_previous_settings(out_dir)
    except InputError:
        settings = {}  # unreadable settings: the manifest's rows still name the images
    images = _previous_images(out_dir, settings)
    for rel in images:
        for path in (os.path.join(out_dir, rel), os.path.join(out_dir, rel + ".tmp")):
            if os.path.isfile(path):
                os.remove(path)
    for folder in sorted({os.path.dirname(rel) for rel in images}):
        path = os.path.join(out_dir, folder)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    for name in (MANIFEST, CONFIG, PROMPTS):
        for path in (os.path.join(out_dir, name), os.path.join(out_dir, name + ".tmp")):
            if os.path.isfile(path):
                os.remove(path)
