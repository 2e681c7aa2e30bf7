"""Synthetic source formats, real sources, and agreement with USB's own loaders."""
import argparse
import csv
import os
import pickle
import random

import numpy as np
import pytest
import scipy.io
from PIL import Image

import semilearn.datasets.utils as usb_utils
from conftest import read_log, run_train, tiny_config
from data_tools import folders, usb
from data_tools.synthetic import read_synthetic_source

CLASSES = ["cat", "dog", "frog"]


def write_png(path, value=0, size=(8, 8)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)
    return str(path)


def make_tree(root, counts, size=(8, 8)):
    """``root/<folder>/<i>.png`` for each folder -> count; pixel value encodes (folder, i)."""
    for k, (folder, n) in enumerate(counts.items()):
        for i in range(n):
            write_png(os.path.join(root, folder, f"{i}.png"), 10 * k + i, size)
    return str(root)


def args_for(**values):
    base = dict(seed=0, num_labels=10, num_classes=10, img_size=32, crop_ratio=0.875, include_lb_to_ulb=True,
                ulb_num_labels=None, lb_imb_ratio=1, ulb_imb_ratio=1, synthetic_source=None, synthetic_ratio=0.0,
                synthetic_seed=None, class_list=None, image_folder_root=None)
    base.update(values)
    return argparse.Namespace(**base)


@pytest.fixture
def private_split_files(tmp_path, monkeypatch):
    """semilearn saves (and for STL-10 reloads) split indices under its base_dir: keep them in tmp."""
    monkeypatch.setattr(usb_utils, "base_dir", str(tmp_path / "semilearn_base"))


# ----------------------------------------------------------- synthetic formats

def test_folder_source_by_name_and_by_index(tmp_path):
    by_name = make_tree(tmp_path / "names", {"Cat": 2, "dog": 3, "frog": 1})
    by_index = make_tree(tmp_path / "index", {"0": 2, "1": 3, "2": 1})
    for root in (by_name, by_index):
        s = read_synthetic_source(root, "imagefolder", CLASSES)
        assert s.lazy and s.is_synthetic.all() and s.class_names == CLASSES
        assert np.bincount(s.labels).tolist() == [2, 3, 1]
        assert os.path.basename(os.path.dirname(s.images[0])) in ("Cat", "0")


def test_manifest_source_by_label_and_by_class_name(tmp_path):
    make_tree(tmp_path / "imgs", {"a": 2, "b": 2})
    rows = [("imgs/a/0.png", 0, "frog"), ("imgs/a/1.png", 0, "frog"), ("imgs/b/0.png", 2, "dog"),
            (str(tmp_path / "imgs/b/1.png"), 2, "dog")]
    by_label = tmp_path / "by_label.csv"
    with open(by_label, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "prompt", "seed", "generator"),
                                 *[(p, l, "a photo", 1, "sd") for p, l, _ in rows]])
    s = read_synthetic_source(str(by_label), "imagefolder", CLASSES)
    assert s.labels.tolist() == [0, 0, 2, 2] and all(os.path.isfile(p) for p in s.images)
    # class_name decides when present (here the labels index another class list).
    by_name = tmp_path / "by_name.csv"
    with open(by_name, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "class_name"), *rows])
    assert read_synthetic_source(str(by_name), "imagefolder", CLASSES).labels.tolist() == [2, 2, 1, 1]


def test_folder_with_manifest_is_read_through_it(tmp_path):
    root = make_tree(tmp_path / "synth", {"cat": 3, "dog": 3})
    with open(os.path.join(root, "manifest.csv"), "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "class_name"), ("cat/0_0.png", 0, "cat"), ("dog/1_0.png", 1, "dog")])
    os.rename(os.path.join(root, "cat", "0.png"), os.path.join(root, "cat", "0_0.png"))
    os.rename(os.path.join(root, "dog", "0.png"), os.path.join(root, "dog", "1_0.png"))
    s = read_synthetic_source(root, "imagefolder", CLASSES)
    assert len(s) == 2 and s.labels.tolist() == [0, 1]


def test_npz_source_with_and_without_class_names(tmp_path):
    images = np.arange(4 * 5 * 5, dtype=np.uint8).reshape(4, 5, 5)
    np.savez(tmp_path / "plain.npz", images=images, labels=np.array([0, 1, 2, 2]))
    np.savez(tmp_path / "named.npz", images=images[..., None], labels=np.array([0, 1, 1, 0]),
             class_names=np.array(["frog", "cat"]))
    plain = read_synthetic_source(str(tmp_path / "plain.npz"), "imagefolder", CLASSES)
    assert not plain.lazy and plain.labels.tolist() == [0, 1, 2, 2] and plain.is_synthetic.all()
    named = read_synthetic_source(str(tmp_path / "named.npz"), "imagefolder", CLASSES)
    assert named.labels.tolist() == [2, 0, 0, 2] and named.load(0).size == (5, 5)


def test_indexing_opens_no_image(tmp_path, monkeypatch):
    make_tree(tmp_path / "data" / "train", {"cat": 2, "dog": 2})
    make_tree(tmp_path / "data" / "val", {"cat": 1, "dog": 1})
    synth = make_tree(tmp_path / "synth", {"cat": 2, "dog": 2})

    def no_open(*a, **k):
        raise AssertionError("an image was opened while indexing")

    monkeypatch.setattr(Image, "open", no_open)
    train, ev = folders.load_imagefolder(args_for(image_folder_root=str(tmp_path / "data")), "unused")
    assert len(train) == 4 and len(ev) == 2 and train.class_names == ["cat", "dog"]
    assert len(read_synthetic_source(synth, "imagefolder", ["cat", "dog"])) == 4


# ------------------------------------------------------------ real sources

def test_imagefolder_source_trains_end_to_end(tmp_path):
    root = tmp_path / "folder_data"
    make_tree(root / "train", {c: 12 for c in CLASSES}, size=(10, 12))
    make_tree(root / "val", {c: 3 for c in CLASSES}, size=(10, 12))
    synth = make_tree(tmp_path / "synth", {c: 12 for c in CLASSES}, size=(20, 20))
    cfg = tiny_config(tmp_path, name="imagefolder", dataset="imagefolder", image_folder_root=str(root),
                      num_classes=3, num_labels=6, synthetic_source=synth, synthetic_ratio=0.5)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "unlabeled data number: 54, labeled data number 6" in log  # 36 real + 18 synthetic
    assert "BEST_EVAL_ACC" in log


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    for k, w in enumerate(wnids):
        for i in range(3):
            write_png(root / "train" / w / "images" / f"{w}_{i}.JPEG", k)
    write_png(root / "val" / "images" / "val_0.JPEG")
    write_png(root / "val" / "images" / "val_1.JPEG")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t8\t8\nval_1.JPEG\tn01\t0\t0\t8\t8\n")
    (root / "wnids.txt").write_text("n02\nn01\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\n")
    train, ev = folders.load_tiny_imagenet(args_for(), str(tmp_path))
    assert train.class_names == ["goldfish", "tabby"] and train.class_ids == ["n01", "n02"]
    assert np.bincount(train.labels).tolist() == [3, 3] and ev.labels.tolist() == [1, 0]
    assert train.load(0).size == (8, 8)


def _imagenet_tree(root, classes, n_train, n_val):
    for k, w in enumerate(classes):
        for i in range(n_train):
            write_png(root / "train" / w / f"{w}_{i}.png", k)
        for i in range(n_val):
            write_png(root / "val" / w / f"v{w}_{i}.png", k)


@pytest.mark.parametrize("include_lb_to_ulb", [True, False])
def test_imagenet_matches_usb(tmp_path, include_lb_to_ulb):
    from semilearn.datasets.cv_datasets.imagenet import get_imagenet

    _imagenet_tree(tmp_path / "imagenet", ["n03", "n01", "n02"], 10, 2)
    args = args_for(dataset="imagenet", num_labels=7, num_classes=3, include_lb_to_ulb=include_lb_to_ulb)
    random.seed(4)
    usb_lb, usb_ulb, usb_eval = get_imagenet(args, "fixmatch", "imagenet", 7, 3, str(tmp_path), include_lb_to_ulb)
    random.seed(4)
    ours = usb.get_dataset(args, "fixmatch", "imagenet", 7, 3, str(tmp_path), include_lb_to_ulb)
    assert list(ours["train_lb"].data.images) == usb_lb.data and ours["train_lb"].targets.tolist() == usb_lb.targets
    assert list(ours["train_ulb"].data.images) == usb_ulb.data
    assert sorted(ours["eval"].data.images) == sorted(usb_eval.data)


def test_imagenet_class_list_subset(tmp_path):
    _imagenet_tree(tmp_path / "imagenet", ["n03", "n01", "n02"], 4, 1)
    listing = tmp_path / "subset.txt"
    listing.write_text("# two classes\nn03 tench, Tinca tinca\nn01\n")
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").write_text("n01 goldfish\nn02 shark\nn03 tench, Tinca\n")
    train, ev = folders.load_imagenet(args_for(class_list=str(listing)), str(tmp_path))
    assert train.class_names == ["tench", "goldfish"] and train.class_ids == ["n03", "n01"]
    assert np.bincount(train.labels).tolist() == [4, 4] and sorted(ev.labels.tolist()) == [0, 1]
    assert all("n02" not in p for p in train.images)


def _fake_cifar10(root, n_per_batch=20):
    base = root / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)


def _skip_md5(monkeypatch):
    """Fake files have no official checksums; the formats are torchvision's own."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.stl10 as tv_stl10
    import torchvision.datasets.svhn as tv_svhn
    import torchvision.datasets.utils as tv_utils

    for module in (tv_cifar, tv_stl10, tv_svhn, tv_utils):
        monkeypatch.setattr(module, "check_integrity", lambda *a, **k: True)


def _same(ours, theirs):
    images = np.stack([ours.data.images[i] for i in range(len(ours.data))])
    return np.array_equal(images, np.asarray(theirs.data)) and np.array_equal(ours.targets, theirs.targets)


def test_cifar10_matches_usb(tmp_path, monkeypatch, private_split_files):
    from semilearn.datasets.cv_datasets.cifar import get_cifar

    _fake_cifar10(tmp_path)
    _skip_md5(monkeypatch)
    args = args_for(dataset="cifar10", num_labels=10)
    np.random.seed(2)
    lb, ulb, ev = get_cifar(args, "fixmatch", "cifar10", 10, 10, str(tmp_path))
    np.random.seed(2)
    ours = usb.get_dataset(args, "fixmatch", "cifar10", 10, 10, str(tmp_path))
    assert _same(ours["train_lb"], lb) and _same(ours["train_ulb"], ulb) and _same(ours["eval"], ev)


def test_svhn_matches_usb(tmp_path, monkeypatch, private_split_files):
    from semilearn.datasets.cv_datasets.svhn import get_svhn

    rng = np.random.default_rng(0)
    (tmp_path / "svhn").mkdir()
    for split, n in (("train", 30), ("extra", 20), ("test", 10)):
        scipy.io.savemat(tmp_path / "svhn" / f"{split}_32x32.mat",
                         {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                          "y": np.tile(np.arange(1, 11), n // 10)[:, None]})
    _skip_md5(monkeypatch)
    monkeypatch.chdir(tmp_path)  # USB's SVHN loader writes ./data_statistics/
    args = args_for(dataset="svhn", num_labels=20)
    np.random.seed(2)
    lb, ulb, ev = get_svhn(args, "fixmatch", "svhn", 20, 10, str(tmp_path))
    np.random.seed(2)
    ours = usb.get_dataset(args, "fixmatch", "svhn", 20, 10, str(tmp_path))
    assert _same(ours["train_lb"], lb) and _same(ours["train_ulb"], ulb) and _same(ours["eval"], ev)
    assert ours["eval"].data.class_names[0] == "0"


def test_stl10_matches_usb(tmp_path, monkeypatch, private_split_files):
    from semilearn.datasets.cv_datasets.stl10 import get_stl10

    base = tmp_path / "stl10" / "stl10_binary"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n, labeled in (("train", 30, True), ("unlabeled", 12, False), ("test", 10, True)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(base / f"{name}_X.bin")
        if labeled:
            np.tile(np.arange(1, 11, dtype=np.uint8), n // 10).tofile(base / f"{name}_y.bin")
    (base / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                     "monkey", "ship", "truck"]))
    _skip_md5(monkeypatch)
    monkeypatch.chdir(tmp_path)  # USB's STL-10 loader writes ./data_statistics/
    args = args_for(dataset="stl10", num_labels=20)
    np.random.seed(2)
    lb, ulb, ev = get_stl10(args, "fixmatch", "stl10", 20, 10, str(tmp_path), include_lb_to_ulb=True)
    np.random.seed(2)
    ours = usb.get_dataset(args, "fixmatch", "stl10", 20, 10, str(tmp_path), include_lb_to_ulb=True)
    assert _same(ours["train_lb"], lb) and _same(ours["train_ulb"], ulb) and _same(ours["eval"], ev)
    assert len(ulb.data) == 20 + 12 + 30


def test_class_matching_rules():
    from data_tools.class_names import CIFAR100
    from data_tools.synthesis.output import folder_names
    from data_tools.synthetic import ClassMatcher

    names = ["crane", "tench", "Crane", "café au lait", *CIFAR100]
    matcher = ClassMatcher(names, [f"n{i:08d}" for i in range(len(names))])
    assert [matcher.lookup(f) for f in folder_names(names)][1:] == list(range(1, len(names)))
    assert matcher.lookup("Lawn Mower") == names.index("lawn_mower")
    assert matcher.lookup("N00000001") == 1 and matcher.lookup("7") == 7
    assert matcher.lookup("crane") is None and matcher.lookup("crane", hint=2) == 2
    assert matcher.lookup("unicorn") is None and matcher.lookup(str(len(names))) is None
    assert "ambiguous name(s) crane" in matcher.describe_failures(["crane", "unicorn"])


def test_synthesize_folders_map_back_to_their_classes(tmp_path):
    """Folders as data_tools.synthesize names them, a shared name included ("crane", "Crane_2")."""
    from data_tools.synthesis.output import folder_names

    names = ["crane", "tench", "Crane", "café"]
    root = make_tree(tmp_path / "synth", {f: 1 + i for i, f in enumerate(folder_names(names))})
    s = read_synthetic_source(root, "imagenet", names)
    assert np.bincount(s.labels).tolist() == [1, 2, 3, 4]
