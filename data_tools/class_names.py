"""Class-name lists for the datasets of the RS-SSL benchmark.

The synthesizer writes prompts from these names and the data loaders use
them to name labels, so this module must stay importable without any
third-party package (standard library only).

Label order matters: index ``i`` of a list is label ``i`` of the dataset.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "DIGITS",
    "DIGITS_PROMPT",
    "FASHION_MNIST",
    "KNOWN_LISTS",
    "canonical_name",
    "load_class_names",
    "read_class_file",
]

# torchvision / the CIFAR "meta" file order.
CIFAR10 = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# The 100 CIFAR-100 fine labels in label-index order (alphabetical).
CIFAR100 = (
    "apple", "aquarium_fish", "baby", "bear", "beaver",
    "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly",
    "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach",
    "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew",
    "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table",
    "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe",
    "whale", "willow_tree", "wolf", "woman", "worm",
)

# Digit datasets label images by the digit itself ...
DIGITS = tuple(str(d) for d in range(10))
# ... which a text-to-image model reads poorly, hence a spelled-out form
# that also fits templates such as "a photo of a {}".
DIGITS_PROMPT = tuple(
    "handwritten digit " + word
    for word in ("zero", "one", "two", "three", "four",
                 "five", "six", "seven", "eight", "nine")
)

# Fashion-MNIST's labels 0-9, as the dataset's release names them.
FASHION_MNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Lists shipped with this module; tiny_imagenet and imagenet are read from
# the dataset's own files (see load_class_names).
KNOWN_LISTS = ("cifar10", "cifar100", "digits", "fashion_mnist", "tiny_imagenet", "imagenet")

_ALIASES = {re.sub(r"[-_\s]", "", name): name for name in KNOWN_LISTS}
_WNID = re.compile(r"^n\d{8}$")


def canonical_name(name: str) -> Optional[str]:
    """Return the known list's canonical name for ``name`` or None.

    Accepts spelling variants such as ``CIFAR-10`` or ``tiny-imagenet``.
    """
    return _ALIASES.get(re.sub(r"[-_\s]", "", str(name).lower()))


def read_class_file(path: str) -> List[str]:
    """Read class names from a text file, one per line, in label order.

    Blank lines and ``#`` comments are ignored. A line may start with a
    WordNet id (``n01440764 tench, Tinca tinca``, the LOC_synset_mapping.txt
    format); then the id is dropped and the first synonym is kept.
    """
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            head, _, rest = line.partition(" ")
            if _WNID.match(head) and rest.strip():
                line = _first_synonym(rest)
            names.append(line)
    if not names:
        raise ValueError(f"class file {path!r} lists no class names")
    return names


def load_class_names(name_or_path: str, data_dir: Optional[str] = None, prompt_form: bool = False) -> List[str]:
    """Return the class names (label order) of a known dataset or a file.

    ``name_or_path`` is one of KNOWN_LISTS (spelling variants accepted) or a
    text file for read_class_file. ``tiny_imagenet`` and ``imagenet`` need
    ``data_dir``, the folder holding ``tiny-imagenet-200/`` or ``imagenet/``.
    With ``prompt_form`` the names are rewritten for text prompts
    (underscores become spaces; digits are spelled out).

    Raises ValueError (unknown name, empty list) or FileNotFoundError
    (missing dataset file, naming the expected path).
    """
    if os.path.isfile(name_or_path):
        names = read_class_file(name_or_path)
        return [_for_prompt(n) for n in names] if prompt_form else names

    known = canonical_name(name_or_path)
    if known is None:
        if os.sep in name_or_path or name_or_path.endswith(".txt"):
            raise FileNotFoundError(f"class file {name_or_path!r} not found")
        raise ValueError(
            f"unknown class list {name_or_path!r}; use one of "
            f"{', '.join(KNOWN_LISTS)} or a text file with one class per line")

    if known == "digits":
        return list(DIGITS_PROMPT if prompt_form else DIGITS)
    if known == "cifar10":
        names = list(CIFAR10)
    elif known == "fashion_mnist":
        names = list(FASHION_MNIST)
    elif known == "cifar100":
        names = list(CIFAR100)
    elif known == "tiny_imagenet":
        names = _tiny_imagenet_names(_require_data_dir(known, data_dir))
    else:
        names = _imagenet_names(_require_data_dir(known, data_dir))
    return [_for_prompt(n) for n in names] if prompt_form else names


def _for_prompt(name):
    return name.replace("_", " ")


def _first_synonym(text):
    return text.split(",")[0].strip()


def _require_data_dir(name, data_dir):
    if not data_dir:
        raise ValueError(f"class names of {name!r} are read from the dataset; "
                         "pass its data_dir")
    return data_dir


def _tiny_imagenet_names(data_dir):
    """Names of Tiny-ImageNet's 200 classes from wnids.txt + words.txt.

    Labels follow the sorted WordNet ids, the order of an ImageFolder over
    ``train/`` (wnids.txt itself is not sorted).
    """
    root = os.path.join(data_dir, "tiny-imagenet-200")
    if not os.path.isdir(root) and os.path.isfile(os.path.join(data_dir, "wnids.txt")):
        root = data_dir  # data_dir already is the tiny-imagenet-200 folder
    wnids_path = os.path.join(root, "wnids.txt")
    words_path = os.path.join(root, "words.txt")
    for path in (wnids_path, words_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Tiny-ImageNet class names need {path!r} (from tiny-imagenet-200.zip)")
    with open(wnids_path, encoding="utf-8") as f:
        wnids = sorted({line.strip() for line in f if line.strip()})
    wanted = set(wnids)
    words = {}
    with open(words_path, encoding="utf-8") as f:
        for line in f:
            wnid, _, text = line.rstrip("\n").partition("\t")
            if wnid in wanted:
                words[wnid] = _first_synonym(text)
    if not wnids:
        raise ValueError(f"{wnids_path!r} lists no classes")
    missing = [w for w in wnids if not words.get(w)]
    if missing:
        raise ValueError(f"{words_path!r} has no name for {', '.join(missing[:5])}")
    return [words[w] for w in wnids]


def _imagenet_names(data_dir):
    """Names of ImageNet (or a subset of it) from a class-list file.

    ImageNet ships no plain list of names, so one of
    ``imagenet/classnames.txt`` (one name per line, label order) or
    ``imagenet/LOC_synset_mapping.txt`` (``wnid name, synonyms`` per line)
    must be put under data_dir; a subset such as ImageNet-100 simply lists
    fewer lines.
    """
    root = os.path.join(data_dir, "imagenet")
    candidates = [os.path.join(root, f) for f in ("classnames.txt", "LOC_synset_mapping.txt")]
    for path in candidates:
        if os.path.isfile(path):
            return read_class_file(path)
    raise FileNotFoundError(
        f"ImageNet class names need {candidates[0]!r} (one class name per line, "
        f"in label order) or {candidates[1]!r}")
