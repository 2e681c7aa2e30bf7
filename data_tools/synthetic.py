"""Synthetic image sources: read one into an :class:`ImageSet` labeled with the dataset's classes.

A ``synthetic_source`` is one of

* a folder tree ``<root>/<class>/*.png``, one sub-folder per class, named by
  class name or class index (a folder holding ``manifest.csv``, as
  ``data_tools.synthesize`` writes, is read through its manifest);
* a manifest CSV with columns ``path`` and ``label`` and/or ``class_name``,
  paths relative to the CSV's folder (other columns such as ``prompt``,
  ``seed``, ``generator`` are allowed and ignored here);
* an ``.npz`` with ``images`` (uint8, N x H x W or N x H x W x C) and
  ``labels`` (class indices, or indices into an optional ``class_names``);
* ``bundled``: the set shipped for the dataset (:data:`BUNDLED`);
  ``bundled:<name>``: the shipped ``data_tools/bundled/<name>.npz``.

Several sources mix in one unlabeled set: ``synthetic_source`` is then a list
whose entries are such strings or mappings ``{source: ..., weight: ...,
name: ...}`` (see :func:`source_entries`); the mixing rules are in
:mod:`data_tools.mixing`.

Folders and manifests are indexed by path, never opened here; mixing verifies
the images it draws. Every image gets the index of the dataset class it is
filed under; :class:`ClassMatcher` says how names map.
"""
from __future__ import annotations

import csv
import difflib
import math
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Set

import numpy as np

from .errors import UserError, shown
from .folders import IMG_EXTENSIONS, class_folders, index_class_folders, scan_images
from .imageset import ImageSet

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED = {"digits": BUNDLED_DIR / "digits_synthetic.npz"}
BUNDLED_HOW = {"digits": "python -m data_tools.make_synthetic_digits"}
MANIFEST = "manifest.csv"
_LISTED_CLASSES = 100  # an error lists every class name of a dataset with at most this many


@dataclass(frozen=True)
class SourceEntry:
    """One synthetic source of a run: its id (``name``), what it names (``spec``) and its ``weight``."""
    name: str
    spec: str
    weight: float = 1.0


def _default_name(spec):
    """A source's id: ``bundled``, the ``<name>`` of ``bundled:<name>``, else the file or folder stem."""
    if spec == "bundled":
        return "bundled"
    if spec.startswith("bundled:"):
        return spec.split(":", 1)[1]
    return Path(os.path.expanduser(spec.rstrip("/\\"))).stem or spec


def source_entries(value: Any) -> Optional[List[SourceEntry]]:
    """The ``synthetic_source`` config value as :class:`SourceEntry` list; None when it names no source.

    ``value`` is a string (one source, weight 1), a list of strings and/or
    mappings with ``source`` and optional ``weight`` (> 0, default 1) and
    ``name`` (the id reported per source, default from the source), or a
    string holding such a list in YAML flow style (``[a.npz, b.npz]``, for the
    command line).
    """
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None", "none", "null"):
            return None
        if not text.startswith("["):
            return [SourceEntry(_default_name(text), text)]
        from ruamel.yaml import YAMLError

        from .config_files import YAMLTooLargeError, parse_yaml

        try:
            value = parse_yaml(text)
        except YAMLError as exc:
            raise UserError(f"synthetic_source: {shown(text)} is not a YAML list "
                            f"({str(exc).splitlines()[0]})") from None
        except YAMLTooLargeError as exc:
            raise UserError(f"synthetic_source: the YAML list {exc}") from None
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"synthetic_source: {shown(value)} is neither a source nor a non-empty list of sources")
    entries = []
    for item in value:
        if isinstance(item, str):
            item = {"source": item}
        if not isinstance(item, dict) or not isinstance(item.get("source"), str) \
                or set(item) - {"source", "weight", "name"}:
            raise UserError(f"synthetic_source: list entry {shown(item)} must be a string or a mapping with "
                            "'source' and optional 'weight' and 'name'")
        weight = item.get("weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = math.nan
        if not math.isfinite(weight) or weight <= 0:
            raise UserError(f"synthetic_source: weight {shown(item.get('weight'))} of {shown(item['source'])} "
                            "must be a number > 0")
        entries.append(SourceEntry(str(item.get("name") or _default_name(item["source"])), item["source"], weight))
    names = [e.name for e in entries]
    clash = sorted({n for n in names if names.count(n) > 1 or n == "real"})
    if clash:
        raise UserError(f"synthetic_source: source id(s) {', '.join(clash)} used twice or reserved ('real'); "
                        "give each entry a distinct 'name'")
    return entries


def normalize_name(name: Any) -> str:
    """Case-, accent-, space- and punctuation-insensitive form of a class name ("Lawn mower" == "lawn_mower").

    Accents are folded as ``data_tools.synthesize`` folds them in folder names ("café" == "cafe").
    """
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^0-9a-z]+", "_", ascii_name.casefold()).strip("_")


class ClassMatcher:
    """Maps a source's class keys onto the dataset's label indices.

    A key matches, in this order: a class name or class id (normalised, see
    :func:`normalize_name`); ``<name>_<index>`` for class ``index`` named
    ``name`` (how ``data_tools.synthesize`` names folders of duplicate names);
    a whole number, as a class index. A name two classes share (ImageNet's two
    "crane") is ambiguous and must be given by index or id.
    """

    def __init__(self, class_names, class_ids=None):
        self.class_names = list(class_names)
        self._by_name = {}
        for i, names in enumerate(zip(self.class_names, class_ids or self.class_names)):
            for key in {normalize_name(n) for n in names}:
                self._by_name.setdefault(key, set()).add(i)

    def candidates(self, key: Any) -> Set[int]:
        """Indices of the classes whose name or id is ``key`` (several for a shared name)."""
        return set(self._by_name.get(normalize_name(key), ()))

    def lookup(self, key: Any, hint: Optional[int] = None) -> Optional[int]:
        """The index for ``key`` or None; ``hint`` (an index) settles a name two classes share."""
        norm = normalize_name(key)
        found = self._by_name.get(norm, set())
        if len(found) == 1:
            return next(iter(found))
        if len(found) > 1:
            return hint if hint in found else None
        head, _, tail = norm.rpartition("_")
        if tail.isdigit() and int(tail) in self._by_name.get(head, ()):
            return int(tail)
        text = str(key).strip()
        if text.isdigit() and int(text) < len(self.class_names):
            return int(text)
        return None

    def closest(self, key: Any) -> Optional[str]:
        """The class name nearest to ``key`` in spelling (difflib), or None."""
        by_norm = {normalize_name(n): n for n in self.class_names}
        match = difflib.get_close_matches(normalize_name(key), list(by_norm), n=1, cutoff=0.75)
        return by_norm[match[0]] if match else None

    def describe_failures(self, keys: Iterable[Any]) -> str:
        """One sentence naming unknown and ambiguous keys, the close class name of each, and the classes."""
        keys = sorted(set(map(str, keys)))
        ambiguous = [k for k in keys if len(self._by_name.get(normalize_name(k), ())) > 1]
        unknown = [k for k in keys if k not in ambiguous]
        parts = []
        if unknown:
            named = []
            for key in unknown[:10]:
                near = self.closest(key)
                named.append(f"{key} (did you mean {near}?)" if near else key)
            parts.append(f"unknown class(es) {', '.join(named)}{' ...' if len(unknown) > 10 else ''}")
        if ambiguous:
            parts.append(f"ambiguous name(s) {', '.join(ambiguous[:10])} (several classes have it; "
                         "use the class index)")
        count = len(self.class_names)
        # All names where a line can hold them; the first ones of a long list (ImageNet's 1000).
        shown = ", ".join(self.class_names if count <= _LISTED_CLASSES
                          else list(self.class_names[:_LISTED_CLASSES]) + ["..."])
        return f"{'; '.join(parts)}; the dataset's {count} classes are {shown} (names, or indices 0-{count - 1})"


def resolve_source(spec: str, dataset: Optional[str]) -> str:
    """The file or folder ``spec`` names (``bundled[:<name>]`` resolved); a UserError if there is none."""
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        path = BUNDLED_DIR / f"{name}.npz"
        if not path.is_file():
            have = ", ".join(sorted(p.stem for p in BUNDLED_DIR.glob("*.npz"))) or "none"
            raise UserError(f"synthetic_source: no bundled set {name!r} ({path} is missing); "
                            f"the bundled sets are: {have}")
        return str(path)
    if spec == "bundled":
        path = BUNDLED.get(dataset)
        if path is None:
            have = ", ".join(sorted(BUNDLED))
            raise UserError(f"synthetic_source: dataset {dataset!r} has no bundled synthetic set (only {have} "
                            "does); give a folder, a manifest CSV or an .npz instead")
        if not path.is_file():
            raise UserError(f"synthetic_source: the bundled set {path} is missing; make it with "
                            f"{BUNDLED_HOW[dataset]}")
        return str(path)
    path = os.path.expanduser(str(spec))
    if not os.path.exists(path):
        raise UserError(f"synthetic_source: {path} does not exist; give a folder, a manifest CSV, an .npz "
                        "or 'bundled'")
    if not (os.path.isdir(path) or path.lower().endswith((".csv", ".npz"))):
        raise UserError(f"synthetic_source: {path} is not a folder, a .csv manifest or an .npz file")
    return path


def read_synthetic_source(spec: str, dataset: Optional[str], class_names: Sequence[str],
                          class_ids: Optional[Sequence[str]] = None) -> ImageSet:
    """The synthetic images ``spec`` names, labeled with the dataset's class indices."""
    path = resolve_source(spec, dataset)
    matcher = ClassMatcher(class_names, class_ids)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, MANIFEST)):
            return read_manifest(os.path.join(path, MANIFEST), matcher)
        return read_folder(path, matcher)
    if path.lower().endswith(".csv"):
        return read_manifest(path, matcher)
    return read_npz(path, matcher)


def read_own_classes(spec: str) -> ImageSet:
    """The images of a folder, manifest CSV or ``.npz`` read as ``synthetic_source`` reads them, in their own classes.

    For tools that look at images of any dataset (``rsmatch-detect``): the
    class keys the source names (its class folders; a manifest's class names
    and labels; an ``.npz``'s ``class_names``, else its labels) are its
    classes, a numeric label keeping its index (class ``str(label)``). A
    folder that holds images and no class sub-folder is one class named ``""``.
    """
    path = resolve_source(spec, None)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, MANIFEST)) and not class_folders(path):
        paths = scan_images(path)
        if not paths:
            raise UserError(f"synthetic_source: {path} holds no images (image types: {', '.join(IMG_EXTENSIONS)}) "
                            f"and no class sub-folders")
        return ImageSet(paths, np.zeros(len(paths), dtype=np.int64), [""])
    return read_synthetic_source(path, None, _own_class_names(path))


def _own_class_names(path):
    """The class names a source at ``path`` names itself (see :func:`read_own_classes`)."""
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, MANIFEST)):
        return class_folders(path)
    if os.path.isdir(path) or path.lower().endswith(".csv"):
        manifest = os.path.join(path, MANIFEST) if os.path.isdir(path) else path
        keys = {row.get("class_name") or row.get("label", "") for row in _manifest_rows(manifest)}
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "class_names" in z.files:
                    return [str(n) for n in z["class_names"]]
                keys = {str(k) for k in np.unique(z["labels"])} if "labels" in z.files else set()
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return []  # read_npz says what is wrong with the file
    # A numeric label is a class index, so indices 0..max all need a class.
    numbers = [int(k) for k in keys if re.fullmatch(r"\d+", k)]
    names = [str(i) for i in range(max(numbers) + 1)] if numbers else []
    taken = {normalize_name(n) for n in names}
    return names + sorted(k for k in keys if normalize_name(k) not in taken and k)


def read_folder(root: str, matcher: ClassMatcher) -> ImageSet:
    """``root/<class>/`` folders, each named by class name or index."""
    folders = class_folders(root)
    if not folders:
        raise UserError(f"synthetic_source: {root} has no class sub-folders (expected <root>/<class>/*.png) "
                        f"and no {MANIFEST}")
    mapping = {f: matcher.lookup(f) for f in folders}
    # A shared name left for one class once the other folders are placed is that class:
    # data_tools.synthesize names duplicates "crane" and "crane_517".
    claimed = {i for i in mapping.values() if i is not None}
    for folder, index in mapping.items():
        left = matcher.candidates(folder) - claimed if index is None else ()
        if len(left) == 1:
            mapping[folder] = left.pop()
    bad = [f for f, i in mapping.items() if i is None]
    if bad:
        raise UserError(f"synthetic_source: folder names of {root} do not match the dataset: "
                        f"{matcher.describe_failures(bad)}")
    paths, labels = index_class_folders(root, mapping, "synthetic_source")
    return _synthetic_set(paths, labels, matcher)


def read_manifest(path: str, matcher: ClassMatcher) -> ImageSet:
    """A CSV manifest: ``path`` and ``label`` (index or name) and/or ``class_name`` (name) per image.

    When ``class_name`` is given it decides the class, so a manifest written
    for a class list in another order still maps right; ``label`` then only
    settles names two classes share.
    """
    base = os.path.dirname(os.path.abspath(path))
    rows = _manifest_rows(path)
    num_classes = len(matcher.class_names)
    # Where the label decides the class it must be an index ("-1" would otherwise read as the name "1").
    out_of_range = [(line, row["label"]) for line, row in enumerate(rows, start=2)
                    if not row.get("class_name") and re.fullmatch(r"[+-]?\d+", row.get("label", ""))
                    and not 0 <= int(row["label"]) < num_classes]
    if out_of_range:
        shown = ", ".join(f"{label} (line {line})" for line, label in out_of_range[:5])
        raise UserError(f"synthetic_source: manifest {path} has label(s) outside the class indices "
                        f"0-{num_classes - 1}: {shown}{' ...' if len(out_of_range) > 5 else ''}; "
                        "fix or remove those rows")
    paths, labels, bad = [], [], []
    for row in rows:
        label = row.get("label", "")
        hint = int(label) if label.isdigit() else None
        if row.get("class_name"):
            key, index = row["class_name"], matcher.lookup(row["class_name"], hint)
        else:
            key = label
            index = hint if hint is not None else matcher.lookup(label)
        if index is None:
            bad.append(key)
            continue
        paths.append(row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"]))
        labels.append(index)
    if bad:
        raise UserError(f"synthetic_source: labels in manifest {path} do not match the dataset: "
                        f"{matcher.describe_failures(bad)}")
    _check_unique_paths(path, paths)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"synthetic_source: {len(missing)} image(s) listed in {path} do not exist, e.g. "
                        f"{', '.join(missing[:3])}; fix the paths (relative to the manifest's folder)")
    return _synthetic_set(paths, labels, matcher)


def _manifest_rows(path):
    """The rows of manifest ``path`` as dicts of stripped strings; a UserError unless it has the needed columns."""
    try:
        # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = {c.strip() for c in reader.fieldnames or []}
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"synthetic_source: cannot read manifest {path} ({exc})") from None
    if "path" not in columns or not columns & {"label", "class_name"}:
        raise UserError(f"synthetic_source: manifest {path} needs a 'path' column and a 'label' or "
                        f"'class_name' column (it has: {', '.join(sorted(columns)) or 'no header'})")
    if not rows:
        raise UserError(f"synthetic_source: manifest {path} lists no images")
    return rows


def _check_unique_paths(manifest, paths):
    """A UserError naming the images a manifest lists more than once (a draw without replacement
    would otherwise pick them several times)."""
    lines = {}
    for line, p in enumerate(paths, start=2):
        lines.setdefault(os.path.normcase(os.path.normpath(p)), []).append(line)
    repeated = [(p, at) for p, at in lines.items() if len(at) > 1]
    if repeated:
        shown = "; ".join(f"{os.path.relpath(p, os.path.dirname(os.path.abspath(manifest)))} "
                          f"(lines {', '.join(map(str, at))})" for p, at in repeated[:5])
        raise UserError(f"synthetic_source: manifest {manifest} lists {len(repeated)} image(s) more than once: "
                        f"{shown}{' ...' if len(repeated) > 5 else ''}; keep one row per image")


def read_npz(path: str, matcher: ClassMatcher) -> ImageSet:
    """An ``.npz`` with ``images`` (uint8) and ``labels``; an optional ``class_names`` array names them."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise UserError(f"synthetic_source: {path} lacks array(s) {', '.join(sorted(missing))}; "
                                "an .npz source needs 'images' and 'labels'")
            images, labels = z["images"], z["labels"]
            names = [str(n) for n in z["class_names"]] if "class_names" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"synthetic_source: cannot read {path} ({type(exc).__name__}: {exc}); "
                        "is it an .npz written by numpy.savez?") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise UserError(f"synthetic_source: {path}: 'images' must be uint8 N x H x W or N x H x W x C "
                        f"(C = 1, 3 or 4), not {images.dtype} {images.shape}")
    if 0 in images.shape:
        raise UserError(f"synthetic_source: {path}: 'images' has shape {images.shape}, which holds no pixels "
                        "or no images; save N x H x W (x C) arrays with N, H, W >= 1")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"synthetic_source: {path}: 'labels' must be {len(images)} integers, "
                        f"not {labels.dtype} {labels.shape}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if names is not None:
        index = {i: matcher.lookup(n) for i, n in enumerate(names)}
        keys = {i: n for i, n in enumerate(names)}
    else:
        index = {i: i if 0 <= i < len(matcher.class_names) else None for i in np.unique(labels).tolist()}
        keys = {i: str(i) for i in index}
    bad = [keys.get(i, str(i)) for i in np.unique(labels).tolist() if index.get(i) is None]
    if bad:
        raise UserError(f"synthetic_source: labels in {path} do not match the dataset: "
                        f"{matcher.describe_failures(bad)}")
    mapped = np.vectorize(index.get, otypes=[np.int64])(labels) if len(labels) else labels.astype(np.int64)
    return _synthetic_set(images, mapped, matcher)


def _synthetic_set(images, labels, matcher):
    return ImageSet(images, labels, matcher.class_names, np.ones(len(labels), dtype=bool))
