"""Bad RS-SSL data input: one error line, exit code 2, no run folder; and the inspection CLI."""
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_train, tiny_config, write_config
from rsmatch_usb import inspect_data


pytestmark = pytest.mark.usefixtures("bundled_digits")


def digit_tree(root, per_class=2, classes=range(10)):
    for c in classes:
        os.makedirs(root / str(c), exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(root / str(c) / f"{i}.png")
    return root


def corrupt_tree(root):
    digit_tree(root)
    (root / "3" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return root


def empty_class_tree(root):
    digit_tree(root)
    for name in os.listdir(root / "7"):
        os.remove(root / "7" / name)
    return root


def wrong_names_tree(root):
    digit_tree(root, classes=range(8))
    digit_tree(root, classes=["cat", "eight"])
    return root


def bad_manifest(root):
    digit_tree(root)
    (root / "manifest.csv").write_text("file,label\n0/0.png,0\n")
    return root


def _bundled_copy(root, keep=lambda labels: labels >= 0):
    """The bundled digits (the images whose label ``keep`` accepts) saved as another .npz under ``root``."""
    from data_tools import synthetic

    data = np.load(synthetic.BUNDLED["digits"])
    mask = keep(data["labels"])
    os.makedirs(root, exist_ok=True)
    np.savez(root / "copy.npz", images=data["images"][mask], labels=data["labels"][mask])
    return root / "copy.npz"


def two_sources(root):
    return f"[bundled, {_bundled_copy(root)}]"


def source_without_nines(root):
    return f"[bundled, {_bundled_copy(root, lambda labels: labels != 9)}]"


# (extra config, what the one error line must say); a callable builds its source under tmp_path.
CASES = {
    "missing path": (dict(synthetic_source="/no/such/folder", synthetic_ratio=1), "does not exist"),
    "empty class folder": (dict(synthetic_source=empty_class_tree, synthetic_ratio=0.01), "without images"),
    "corrupt image": (dict(synthetic_source=corrupt_tree, synthetic_ratio=0.0149), "1.png is unreadable or corrupt"),
    "class names": (dict(synthetic_source=wrong_names_tree, synthetic_ratio=0.01), "unknown class(es) cat, eight"),
    "negative ratio": (dict(synthetic_source="bundled", synthetic_ratio=-0.5),
                       "synthetic_ratio: -0.5 is not valid; give a number >= 0"),
    "same source twice": (dict(synthetic_source="[bundled, bundled:digits_synthetic]", synthetic_ratio=0.1),
                          "bundled and digits_synthetic name the same images"),
    # Split over the sources one image at a time before the check, 1e9 hung.
    "absurd ratio over sources": (dict(synthetic_source=two_sources, synthetic_ratio=1e9),
                                  "673500000000 of them from synthetic_source bundled, which holds only 3000; "
                                  "lower synthetic_ratio to about 4.4543"),
    # Was "lower synthetic_ratio to about 0".
    "a class no source image has": (dict(synthetic_source=source_without_nines, synthetic_ratio=0.5),
                                    "too few images for any balanced draw (2700 in all, 0 in class 9)"),
    "too few images": (dict(synthetic_source="bundled", synthetic_ratio=3), "4041 synthetic images (405 per class)"),
    "absurd ratio": (dict(synthetic_source="bundled", synthetic_ratio=1e308),
                     "needs more synthetic images than the 3000 synthetic_source holds; lower synthetic_ratio"),
    "no labels": (dict(num_labels=0), "num_labels: 0 is not valid; give an integer in [1, "),
    "no bundled set": (dict(dataset="cifar10", synthetic_source="bundled", synthetic_ratio=1),
                       "dataset 'cifar10' has no bundled synthetic set"),
    "ratio without source": (dict(synthetic_ratio=0.5), "needs synthetic_source"),
    "manifest columns": (dict(synthetic_source=bad_manifest, synthetic_ratio=0.01), "needs a 'path' column"),
    "missing real data": (dict(dataset="cifar10"), "cifar-10-batches-py"),
    "imagefolder without root": (dict(dataset="imagefolder", num_classes=3), "image_folder_root"),
    "ulb_num_labels not divisible": (dict(ulb_num_labels=15), "ulb_num_labels: 15 is not divisible"),
    "ulb_num_labels too large": (dict(ulb_num_labels=2000), "needs 204 training images per class"),
}


def resolve(tmp_path, overrides):
    overrides = dict(overrides)
    if callable(overrides.get("synthetic_source")):
        overrides["synthetic_source"] = str(overrides["synthetic_source"](tmp_path / "synth"))
    return overrides


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(tmp_path, capsys, case):
    overrides, expected = CASES[case]
    cfg = tiny_config(tmp_path, name="bad", data_dir=str(tmp_path / "data"), **resolve(tmp_path, overrides))
    code, run_dir = run_train(tmp_path, cfg)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("rsmatch-train: error: "), err
    assert expected in err, err
    assert not os.path.exists(run_dir) and not os.path.exists(cfg["save_dir"])


def test_load_error_names_the_file(tmp_path):
    from data_tools.imageset import ImageSet
    from rsmatch_usb.errors import UserError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.png"):
        ImageSet([str(bad)], [0], ["a"]).load(0)


def test_inspect_prints_counts_and_alpha(tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(tmp_path, synthetic_source="bundled", synthetic_ratio=0.5))
    assert inspect_data.main(["--c", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "eval split: test (450 images)"
    assert out[2].split() == ["class", "labeled", "real_unlabeled", "synthetic_unlabeled", "eval"]
    assert out[-2].split() == ["total", "40", "1347", "674", "450"]
    assert out[-1].startswith("alpha achieved: 0.5004 (674 synthetic / 1347 real unlabeled")
    per_class = [line.split() for line in out[3:13]]
    assert {int(r[3]) for r in per_class} == {67, 68} and all(r[1] == "4" for r in per_class)


def test_inspect_bad_input(tmp_path, capsys):
    path = write_config(tmp_path, tiny_config(tmp_path, synthetic_source="bundled", synthetic_ratio=-1))
    assert inspect_data.main(["--c", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m rsmatch_usb.inspect_data: error: synthetic_ratio")
