"""Fashion-MNIST: the IDX reader on tiny files, the real files through the ``fashion_mnist`` source, bad files."""
import gzip
import os
import random
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import run_train, tiny_config
from data_tools import class_names, fashion_mnist, usb
from data_tools.sources import REAL_SOURCES
from rsmatch_usb.errors import UserError


def idx_bytes(array):
    """``array`` (uint8) in the IDX format: magic 0x00 0x00 0x08 ndim, big-endian dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path, array, compress):
    data = idx_bytes(array)
    if compress:
        path = str(path) + ".gz"
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return str(path)


def write_dataset(folder, per_class=2, compress=True):
    """The four Fashion-MNIST files, ``per_class`` tiny images per class in each split."""
    os.makedirs(folder, exist_ok=True)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    images = (np.arange(len(labels) * 28 * 28) % 251).astype(np.uint8).reshape(-1, 28, 28)
    for image_name, label_name in fashion_mnist.FILES.values():
        write_idx(os.path.join(folder, image_name), images, compress)
        write_idx(os.path.join(folder, label_name), labels, compress)
    return images, labels


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    """The Debian location pointed at an empty folder, so only the test's files are found."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no_debian"))


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_read_idx_round_trips(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "images-idx3-ubyte", array, compress)
    read = fashion_mnist.read_idx(path)
    assert read.dtype == np.uint8 and read.shape == (5, 28, 28)
    np.testing.assert_array_equal(read, array)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-7], "truncated or damaged"),                 # data cut short
    (lambda data: data[:6], "truncated (header)"),                    # header cut short
    (lambda data: b"\x00\x00\x42\x03" + data[4:], "wrong magic number"),  # unknown type byte
    (lambda data: b"PK\x03\x04" + data[4:], "wrong magic number"),    # some other file
])
def test_read_idx_bad_file_is_one_line_naming_it(tmp_path, damage, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(idx_bytes(np.zeros((3, 28, 28)))))
    with pytest.raises(UserError) as err:
        fashion_mnist.read_idx(str(path))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_damaged_file_gets_advice_that_fits_where_it_lies(tmp_path, monkeypatch):
    """A file in the user's data_dir is replaced, not fixed by reinstalling the Debian package; the package's is."""
    users = tmp_path / "data" / "fashion_mnist" / "train-images-idx3-ubyte"
    users.parent.mkdir(parents=True)
    users.write_bytes(idx_bytes(np.zeros((3, 28, 28)))[:-7])
    with pytest.raises(UserError) as err:
        fashion_mnist.read_idx(str(users))
    assert "--reinstall" not in str(err.value) and "replace it with the dataset's original file" in str(err.value)
    debian = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    debian.mkdir(parents=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(debian))
    packaged = debian / "train-images-idx3-ubyte"
    packaged.write_bytes(users.read_bytes())
    with pytest.raises(UserError) as err:
        fashion_mnist.read_idx(str(packaged))
    assert "apt-get install --reinstall dataset-fashion-mnist" in str(err.value)


def test_a_header_promising_more_than_int64_holds_gives_its_true_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    dims = (2 ** 31, 2 ** 31, 2 ** 31)  # a damaged header: 2^93 bytes, which int64 wraps to a negative count
    path.write_bytes(b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in dims) + b"\x00" * 10)
    with pytest.raises(UserError) as err:
        fashion_mnist.read_idx(str(path))
    assert f"holds 26 bytes, its header promises {16 + 2 ** 93}" in str(err.value)


def test_read_idx_corrupt_gzip_names_the_file(tmp_path):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10), compress=True)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])  # a gzip stream cut in the middle
    with pytest.raises(UserError, match="cannot be read") as err:
        fashion_mnist.read_idx(path)
    assert path in str(err.value)


@pytest.mark.parametrize("layout", ["fashion_mnist", "fashion_mnist/FashionMNIST/raw", "FashionMNIST/raw"])
def test_files_found_in_each_layout(tmp_path, no_debian, layout):
    images, labels = write_dataset(tmp_path / "data" / layout, compress=layout != "FashionMNIST/raw")
    read_images, read_labels = fashion_mnist.load_split("test", str(tmp_path / "data"))
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


def test_missing_files_name_the_package_and_files(tmp_path, no_debian):
    with pytest.raises(UserError) as err:
        fashion_mnist.load_split("train", str(tmp_path / "data"))
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "train-images-idx3-ubyte" in text
    assert "t10k-labels-idx1-ubyte" in text and "\n" not in text


def test_too_few_training_images_for_the_generator_split(tmp_path, no_debian):
    write_dataset(tmp_path / "data" / "fashion_mnist", per_class=3)
    with pytest.raises(UserError, match="generator split"):
        REAL_SOURCES["fashion_mnist"].load(None, str(tmp_path / "data"))


@pytest.fixture(scope="module")
def real_fashion():
    """The real dataset through the source (CI installs the Debian package)."""
    assert os.path.isdir(fashion_mnist.DEBIAN_DIR), (
        f"{fashion_mnist.DEBIAN_DIR} is missing; install it with apt-get install {fashion_mnist.DEBIAN_PACKAGE}")
    return REAL_SOURCES["fashion_mnist"].load(None, "/nonexistent")


def test_real_source_is_the_ssl_pool_and_the_test_set(real_fashion):
    train, test = real_fashion
    assert train.class_names == list(class_names.FASHION_MNIST) == list(fashion_mnist.CLASS_NAMES)
    assert len(train) == 45000 and len(test) == 10000
    assert np.bincount(train.labels).tolist() == [4500] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.shape == (45000, 28, 28) and train.images.dtype == np.uint8
    # The pool is the training set minus the generator and validation splits, in file order, labels kept.
    all_images, all_labels = fashion_mnist.load_split("train")
    pool = fashion_mnist.ssl_pool(all_labels)
    assert not set(pool) & set(fashion_mnist.generator_split(all_labels))
    assert not set(pool) & set(fashion_mnist.val_split(all_labels))
    np.testing.assert_array_equal(train.labels, all_labels[pool])
    np.testing.assert_array_equal(train.images[:50], all_images[pool[:50]])
    # The release's first labels (train: Ankle boot, T-shirt, T-shirt; test: Ankle boot, Pullover, Trouser).
    assert all_labels[:3].tolist() == [9, 0, 0] and test.labels[:3].tolist() == [9, 2, 1]
    # Documented normalisation: the pool's pixel statistics.
    pixels = train.images.astype(np.float64) / 255
    source = REAL_SOURCES["fashion_mnist"]
    assert source.mean == (round(pixels.mean(), 4),) * 3 and source.std == (round(pixels.std(), 4),) * 3
    assert train.load(0).mode == "RGB" and train.load(0).size == (28, 28)


def _image_keys(images):
    return {img.tobytes() for img in images}


def test_val_split_is_disjoint_from_every_draw_the_generators_and_the_test_split():
    """``eval_split: val`` on the real files: 500 images per class that no run, generator or test image holds.

    Compared by pixels, not only by index, so an image can't come back through
    another split; the draws of several seeds, labeled and unlabeled, as the
    train command builds them.
    """
    all_images, all_labels = fashion_mnist.load_split("train")
    test_images, _ = fashion_mnist.load_split("test")
    train, val = REAL_SOURCES["fashion_mnist"].load(SimpleNamespace(eval_split="val"), "/nonexistent")
    assert np.bincount(val.labels).tolist() == [fashion_mnist.VAL_PER_CLASS] * 10
    val_keys = _image_keys(val.images)
    assert len(val_keys) == len(val)
    assert not val_keys & _image_keys(train.images)
    assert not val_keys & _image_keys(all_images[fashion_mnist.generator_split(all_labels)])
    assert not val_keys & _image_keys(test_images)
    # The split is fixed: no run's seed moves it.
    np.testing.assert_array_equal(val.labels, all_labels[fashion_mnist.val_split(all_labels)])
    for seed in (0, 1, 7):
        args = SimpleNamespace(dataset="fashion_mnist", num_labels=40, ulb_num_labels=10000, include_lb_to_ulb=True,
                               lb_imb_ratio=1, ulb_imb_ratio=1, seed=seed, eval_split="val", synthetic_source=None,
                               synthetic_ratio=0.0, synthetic_seed=None)
        random.seed(seed)
        np.random.seed(seed)
        lb, ulb, eval_set = usb.build_datasets(args, "fixmatch", "fashion_mnist", 40, 10, "/nonexistent", True)
        drawn = _image_keys(lb.images) | _image_keys(ulb.images[np.asarray(~ulb.is_synthetic)])
        assert len(drawn) > 10000 - 1 and not drawn & val_keys
        assert _image_keys(eval_set.images) == val_keys


def test_eval_split_val_on_a_dataset_without_one_is_one_error_line(tmp_path, capsys):
    cfg = tiny_config(tmp_path, eval_split="val")
    code, run_dir = run_train(tmp_path, cfg)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not os.path.exists(run_dir)
    assert len(err.splitlines()) == 1 and "has no validation split" in err and "fashion_mnist" in err


def test_real_source_split_and_transforms(real_fashion):
    """USB's split (num_labels, ulb_num_labels, include_lb_to_ulb) and its transforms at img_size 32."""
    train, _ = real_fashion
    args = SimpleNamespace(dataset="fashion_mnist", num_labels=40, ulb_num_labels=1000, include_lb_to_ulb=False, lb_imb_ratio=1,
                           ulb_imb_ratio=1, seed=0)
    random.seed(0)
    np.random.seed(0)
    lb, ulb = REAL_SOURCES["fashion_mnist"].split(args, "fixmatch", train, 40, 10, False)
    assert np.bincount(lb.labels).tolist() == [4] * 10
    assert np.bincount(ulb.labels).tolist() == [100] * 10
    weak, strong, evaluation = usb.build_transforms(32, 0.875, REAL_SOURCES["fashion_mnist"].mean,
                                                    REAL_SOURCES["fashion_mnist"].std)
    for transform in (weak, strong, evaluation):
        assert tuple(transform(lb.load(0)).shape) == (3, 32, 32)
    for transform in (weak, evaluation):  # grayscale replicated: three equal channels (RandAugment may tint)
        x = transform(lb.load(0)).numpy()
        assert np.allclose(x[0], x[1]) and np.allclose(x[1], x[2])


def test_bad_file_stops_the_train_command(tmp_path, no_debian, capsys):
    """A truncated IDX file under data_dir: one error line naming it, exit 2, no run folder."""
    folder = tmp_path / "data" / "fashion_mnist"
    write_dataset(folder)
    bad = folder / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.arange(20) % 10)[:-3]))
    cfg = tiny_config(tmp_path, dataset="fashion_mnist", data_dir=str(tmp_path / "data"))
    code, run_dir = run_train(tmp_path, cfg)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not os.path.exists(run_dir)
    assert len(err.splitlines()) == 1 and str(bad) in err and "truncated" in err


def test_missing_files_stop_the_train_command(tmp_path, no_debian, capsys):
    cfg = tiny_config(tmp_path, dataset="fashion_mnist", data_dir=str(tmp_path / "data"))
    code, run_dir = run_train(tmp_path, cfg)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not os.path.exists(run_dir)
    assert len(err.splitlines()) == 1 and "apt-get install dataset-fashion-mnist" in err
