"""Image sources stored as files: indexed by path, read lazily.

Indexing lists directory entries (``os.scandir``, also what ``os.walk`` uses)
and never opens an image, so a folder of a million images costs its paths.
Sources: a generic ImageFolder tree, Tiny-ImageNet and ImageNet (or a subset).
"""
from __future__ import annotations

import os
from argparse import Namespace
from typing import Dict, List, Tuple

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from .errors import UserError
from .imageset import ImageSet


def require_dir(path: str, what: str, how: str) -> str:
    """``path`` if it is a directory, else a UserError naming it and how to provide it."""
    if not os.path.isdir(path):
        raise UserError(f"{what}: expected a folder at {path}, which does not exist; {how}")
    return path


def class_folders(root: str) -> List[str]:
    """Sorted names of the visible sub-folders of ``root``.

    Hidden folders (``.ipynb_checkpoints``, ``.git``) are skipped: torchvision's
    find_classes would make them classes.
    """
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def index_class_folders(root: str, class_to_idx: Dict[str, int], what: str) -> Tuple[List[str], np.ndarray]:
    """(paths, labels) of the images under ``root/<folder>/`` for each folder in ``class_to_idx``.

    Uses torchvision's ``make_dataset`` (sorted, recursive), so the order is the
    same on every file system. A folder without images is a UserError.
    """
    paths, labels, empty = [], [], []
    for folder, label in sorted(class_to_idx.items()):
        # One call per folder, so that an empty one is known by name.
        found = [path for path, _ in make_dataset(root, {folder: label}, extensions=IMG_EXTENSIONS,
                                                  allow_empty=True)]
        if not found:
            empty.append(folder)
        paths += found
        labels += [label] * len(found)
    if empty:
        raise UserError(f"{what}: class folder(s) without images under {root}: {', '.join(empty[:10])}"
                        f"{' ...' if len(empty) > 10 else ''} (image types: {', '.join(IMG_EXTENSIONS)}); "
                        "add images or remove the folder(s)")
    labels = np.asarray(labels, dtype=np.int64)
    return paths, labels


# ----------------------------------------------------------------- imagefolder

IMAGEFOLDER_HOW = ("set image_folder_root to a folder holding train/<class>/*.png|jpg and val/<class>/ "
                   "(or test/<class>/)")


def load_imagefolder(args: Namespace, data_dir: str) -> Tuple[ImageSet, ImageSet]:
    """A generic ImageFolder tree: ``image_folder_root/train/<class>/`` and ``val/`` (or ``test/``).

    Classes are the sorted sub-folders of ``train/`` (torchvision's ImageFolder
    order); the eval folder may hold a subset of them.
    """
    root = getattr(args, "image_folder_root", None)
    if not root:
        raise UserError(f"image_folder_root: dataset 'imagefolder' needs it; {IMAGEFOLDER_HOW}")
    train_dir = require_dir(os.path.join(root, "train"), "image_folder_root", IMAGEFOLDER_HOW)
    eval_dir = next((os.path.join(root, d) for d in ("val", "test") if os.path.isdir(os.path.join(root, d))), None)
    if eval_dir is None:
        raise UserError(f"image_folder_root: no val/ or test/ folder in {root}; {IMAGEFOLDER_HOW}")
    classes = class_folders(train_dir)
    if not classes:
        raise UserError(f"image_folder_root: {train_dir} has no class sub-folders; {IMAGEFOLDER_HOW}")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    eval_classes = class_folders(eval_dir)
    unknown = sorted(set(eval_classes) - set(classes))
    if unknown:
        raise UserError(f"image_folder_root: {eval_dir} has class folders that train/ lacks: "
                        f"{', '.join(unknown[:10])}; the eval classes must be training classes")
    train = ImageSet(*index_class_folders(train_dir, class_to_idx, "image_folder_root"), classes)
    evaluation = ImageSet(*index_class_folders(eval_dir, {c: class_to_idx[c] for c in eval_classes},
                                               "image_folder_root"), classes)
    return train, evaluation


# ---------------------------------------------------------------- tiny imagenet

TINY_HOW = ("download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into data_dir "
            "(train/<wnid>/images/*.JPEG, val/images/, val/val_annotations.txt)")


def scan_images(folder: str) -> List[str]:
    """Sorted paths of the image files directly in ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.is_file() and is_image_file(e.name))


def load_tiny_imagenet(args: Namespace, data_dir: str) -> Tuple[ImageSet, ImageSet]:
    """Tiny-ImageNet-200 in its distribution layout under ``data_dir/tiny-imagenet-200``.

    Labels follow the sorted WordNet ids; the labeled val split is the eval set.
    """
    from .class_names import load_class_names

    root = require_dir(os.path.join(data_dir, "tiny-imagenet-200"), "dataset tiny_imagenet", TINY_HOW)
    train_dir = require_dir(os.path.join(root, "train"), "dataset tiny_imagenet", TINY_HOW)
    wnids = class_folders(train_dir)
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        files = scan_images(os.path.join(train_dir, wnid, "images"))
        if not files:
            raise UserError(f"dataset tiny_imagenet: no images in {os.path.join(train_dir, wnid, 'images')}; "
                            f"{TINY_HOW}")
        paths += files
        labels += [label] * len(files)
    annotations = os.path.join(root, "val", "val_annotations.txt")
    require_dir(os.path.join(root, "val", "images"), "dataset tiny_imagenet", TINY_HOW)
    if not os.path.isfile(annotations):
        raise UserError(f"dataset tiny_imagenet: {annotations} does not exist; {TINY_HOW}")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    val_paths, val_labels = [], []
    with open(annotations, encoding="utf-8") as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1] in index:
                val_paths.append(os.path.join(root, "val", "images", fields[0]))
                val_labels.append(index[fields[1]])
    try:
        names = load_class_names("tiny_imagenet", data_dir)
    except (OSError, ValueError):
        names = None  # words.txt absent or incomplete: the ids name the classes
    if not names or len(names) != len(wnids):
        names = list(wnids)
    return (ImageSet(paths, labels, names, class_ids=list(wnids)),
            ImageSet(val_paths, val_labels, names, class_ids=list(wnids)))


# --------------------------------------------------------------------- imagenet

IMAGENET_HOW = ("put ImageNet in USB's ImageFolder layout: data_dir/imagenet/train/<wnid>/*.JPEG and "
                "data_dir/imagenet/val/<wnid>/*.JPEG")


def read_class_list(path: str) -> List[str]:
    """Folder names (e.g. WordNet ids) from a class-list file, in label order.

    One class per line; the first whitespace-separated token is the folder name
    and the rest is ignored, so ``LOC_synset_mapping.txt`` lines work as they
    are. Blank lines and ``#`` comments are skipped.
    """
    if not os.path.isfile(path):
        raise UserError(f"class_list: {path} does not exist; give a text file with one class folder per line")
    with open(path, encoding="utf-8") as f:
        ids = [line.split("#", 1)[0].split()[0] for line in f if line.split("#", 1)[0].strip()]
    if not ids:
        raise UserError(f"class_list: {path} lists no classes")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UserError(f"class_list: {path} lists {', '.join(duplicates[:10])} more than once")
    return ids


def _imagenet_names(data_dir, wnids, subset):
    """Readable class names: LOC_synset_mapping.txt (wnid -> first synonym), else classnames.txt, else the ids."""
    from .class_names import load_class_names

    mapping = os.path.join(data_dir, "imagenet", "LOC_synset_mapping.txt")
    if os.path.isfile(mapping):
        names = {}
        with open(mapping, encoding="utf-8") as f:
            for line in f:
                wnid, _, text = line.strip().partition(" ")
                names[wnid] = text.split(",")[0].strip()
        if all(names.get(w) for w in wnids):
            return [names[w] for w in wnids]
    if not subset:
        try:
            names = load_class_names("imagenet", data_dir)  # classnames.txt: label order of all folders
        except (OSError, ValueError):
            names = None
        if names and len(names) == len(wnids):
            return names
    return list(wnids)


def _walk_order_images(folder):
    """Image files directly in ``folder``, in directory-listing order.

    USB's ImageNet loader shuffles the listing with Python's ``random``; to
    reproduce its labeled split the order must be the listing's, not sorted.
    """
    with os.scandir(folder) as entries:
        return [e.path for e in entries if e.is_file() and is_image_file(e.name)]


def load_imagenet(args: Namespace, data_dir: str) -> Tuple[ImageSet, ImageSet]:
    """ImageNet in USB's layout, or the classes a ``class_list`` file names (label order = file order).

    Without a class list the classes are the sorted train folders, as in USB.
    Train images keep the directory-listing order within a class (see
    :func:`data_tools.splits.imagenet_split`).
    """
    root = require_dir(os.path.join(data_dir, "imagenet"), "dataset imagenet", IMAGENET_HOW)
    train_dir = require_dir(os.path.join(root, "train"), "dataset imagenet", IMAGENET_HOW)
    val_dir = require_dir(os.path.join(root, "val"), "dataset imagenet", IMAGENET_HOW)
    class_list = getattr(args, "class_list", None)
    folders = class_folders(train_dir)
    if class_list:
        wnids = read_class_list(class_list)
        missing = [w for w in wnids if w not in set(folders)]
        if missing:
            raise UserError(f"class_list: {len(missing)} listed class(es) have no folder in {train_dir}: "
                            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    else:
        wnids = folders
    if not wnids:
        raise UserError(f"dataset imagenet: {train_dir} has no class folders; {IMAGENET_HOW}")
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        files = _walk_order_images(os.path.join(train_dir, wnid))
        if not files:
            raise UserError(f"dataset imagenet: class folder {os.path.join(train_dir, wnid)} has no images")
        paths += files
        labels += [label] * len(files)
    val_folders = set(class_folders(val_dir))
    present = {w: i for i, w in enumerate(wnids) if w in val_folders}
    if not present:
        raise UserError(f"dataset imagenet: {val_dir} has none of the training class folders; {IMAGENET_HOW}")
    names = _imagenet_names(data_dir, wnids, subset=bool(class_list))
    evaluation = ImageSet(*index_class_folders(val_dir, present, "dataset imagenet"), names, class_ids=list(wnids))
    return ImageSet(paths, labels, names, class_ids=list(wnids)), evaluation
