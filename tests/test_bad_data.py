"""Bad data is an error, not silently wrong training data: pixel range, degenerate arrays, manifest rows."""
import numpy as np
import pytest
from PIL import Image

from data_tools.class_names import FASHION_MNIST
from data_tools.imageset import ImageSet
from data_tools.synthetic import ClassMatcher, read_synthetic_source
from rsmatch_usb.errors import UserError

CLASSES = ["cat", "dog", "frog"]


def _pngs(root, count=3):
    paths = []
    for i in range(count):
        path = root / f"{i}.png"
        Image.fromarray(np.full((4, 4, 3), 10 * i, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    # A ramp over the whole 16-bit range: 0 .. 65535 must read as 0 .. 255, not clip to white.
    ramp = (np.arange(16, dtype=np.uint32).reshape(4, 4) * 4369).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")  # PIL reads it as a 16-bit image
    pixels = np.asarray(ImageSet([str(tmp_path / "deep.png")], [0], ["a"]).load(0))
    assert pixels.shape == (4, 4, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) == 16


def test_eight_bit_images_read_as_before(tmp_path):
    Image.fromarray(np.full((4, 4), 77, dtype=np.uint8)).save(tmp_path / "gray.png")
    assert np.all(np.asarray(ImageSet([str(tmp_path / "gray.png")], [0], ["a"]).load(0)) == 77)


@pytest.mark.parametrize("shape", [(5, 0, 0), (5, 8, 0), (0, 8, 8), (5, 0, 8, 3)])
def test_degenerate_npz_is_an_error(tmp_path, shape):
    path = tmp_path / "synthetic.npz"
    np.savez(path, images=np.zeros(shape, dtype=np.uint8), labels=np.zeros(shape[0], dtype=np.int64))
    with pytest.raises(UserError, match=r"holds no pixels or no images"):
        read_synthetic_source(str(path), "imagefolder", CLASSES)


@pytest.mark.parametrize("label", ["-1", "3", "17"])
def test_manifest_label_outside_the_classes_is_an_error(tmp_path, label):
    _pngs(tmp_path)
    (tmp_path / "manifest.csv").write_text(f"path,label\n0.png,0\n1.png,{label}\n2.png,2\n")
    with pytest.raises(UserError, match=rf"outside the class indices 0-2: {label} \(line 3\)"):
        read_synthetic_source(str(tmp_path / "manifest.csv"), "imagefolder", CLASSES)


def test_duplicate_manifest_rows_are_an_error_naming_them(tmp_path):
    _pngs(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\n0.png,0\n1.png,1\n./0.png,0\n2.png,2\n1.png,2\n")
    with pytest.raises(UserError) as exc:
        read_synthetic_source(str(tmp_path / "manifest.csv"), "imagefolder", CLASSES)
    assert "lists 2 image(s) more than once: 0.png (lines 2, 4); 1.png (lines 3, 6)" in str(exc.value)


def test_manifest_with_byte_order_mark_is_read(tmp_path):
    _pngs(tmp_path)
    # As spreadsheet programs save "CSV UTF-8".
    (tmp_path / "manifest.csv").write_bytes("path,class_name\n0.png,cat\n1.png,dog\n2.png,frog\n"
                                            .encode("utf-8-sig"))
    source = read_synthetic_source(str(tmp_path / "manifest.csv"), "imagefolder", CLASSES)
    assert source.labels.tolist() == [0, 1, 2]


def test_misspelled_class_suggests_the_close_name_and_lists_all():
    message = ClassMatcher(FASHION_MNIST).describe_failures(["pulover"])
    assert "unknown class(es) pulover (did you mean Pullover?)" in message
    assert "classes are " + ", ".join(FASHION_MNIST) + " (names" in message
