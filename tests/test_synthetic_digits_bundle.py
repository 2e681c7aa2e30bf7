"""Checks for the bundled synthetic digits set and the script that makes it."""

from pathlib import Path

import numpy as np
import pytest

from data_tools import make_synthetic_digits as msd

BUNDLE = Path(msd.__file__).resolve().parent / "bundled" / "digits_synthetic.npz"
PER_CLASS, OFF_SHARE = 300, 0.1  # the script's defaults, which made the bundle


@pytest.fixture(scope="module")
def bundle():
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing; run python -m data_tools.make_synthetic_digits")
    with np.load(BUNDLE) as z:
        return {k: z[k] for k in z.files}


def test_bundle_keys_dtypes_shapes(bundle):
    assert {"images", "labels", "drawn_class", "kind", "seed", "generator", "image_size"} <= set(bundle)
    n = msd.NUM_CLASSES * PER_CLASS
    size = int(bundle["image_size"])
    assert size == 16
    assert bundle["images"].dtype == np.uint8 and bundle["images"].shape == (n, size, size)
    for key in ("labels", "drawn_class", "kind"):
        assert bundle[key].dtype == np.int64 and bundle[key].shape == (n,)
    assert str(bundle["generator"]).startswith("diffusers-UNet2DModel")
    assert BUNDLE.stat().st_size < 2_000_000


def test_bundle_class_counts_and_off_class_share(bundle):
    labels, kind = bundle["labels"], bundle["kind"]
    assert np.bincount(labels, minlength=msd.NUM_CLASSES).tolist() == [PER_CLASS] * msd.NUM_CLASSES
    for c in range(msd.NUM_CLASSES):
        off = kind[labels == c] != msd.KIND_ON
        assert off.mean() == pytest.approx(OFF_SHARE, abs=0.01)
    # Shuffled storage: the first half alone already has about the nominal share.
    assert (kind[: len(kind) // 2] != msd.KIND_ON).mean() == pytest.approx(OFF_SHARE, abs=0.03)


def test_bundle_values_and_kind_consistency(bundle):
    images, labels, drawn, kind = bundle["images"], bundle["labels"], bundle["drawn_class"], bundle["kind"]
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 128  # not blank
    assert set(np.unique(kind)) <= {msd.KIND_ON, msd.KIND_WRONG, msd.KIND_NULL}
    assert np.all(drawn[kind == msd.KIND_ON] == labels[kind == msd.KIND_ON])
    wrong = kind == msd.KIND_WRONG
    assert np.all((drawn[wrong] != labels[wrong]) & (drawn[wrong] < msd.NULL_CLASS))
    assert np.all(drawn[kind == msd.KIND_NULL] == msd.NULL_CLASS)
    assert np.all((labels >= 0) & (labels < msd.NUM_CLASSES))


TINY = ["--channels", "8,16", "--train-steps", "2", "--batch-size", "8", "--per-class", "4",
        "--off-class-share", "0.5", "--sample-steps", "2", "--no-acceptance"]


def _run(tmp_path, name, *extra):
    out, sheet = tmp_path / f"{name}.npz", tmp_path / f"{name}.png"
    rc = msd.main(TINY + ["--out", str(out), "--sheet", str(sheet), *extra])
    return rc, out, sheet


def test_tiny_run_outputs_deterministic_and_no_overwrite(tmp_path, capsys):
    rc, out, sheet = _run(tmp_path, "a")
    assert rc == 0 and out.exists() and sheet.stat().st_size > 0
    with np.load(out) as z:
        a = {k: z[k] for k in z.files}
    assert a["images"].shape == (40, 16, 16) and a["images"].dtype == np.uint8
    assert np.bincount(a["labels"]).tolist() == [4] * 10
    assert np.bincount(a["kind"], minlength=3).tolist() == [20, 10, 10]  # 2 off per class

    before = out.stat().st_mtime_ns
    capsys.readouterr()
    rc, _, _ = _run(tmp_path, "a")
    err = capsys.readouterr().err
    assert rc != 0 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.stat().st_mtime_ns == before

    rc, _, _ = _run(tmp_path, "a", "--overwrite")
    assert rc == 0
    with np.load(out) as z:  # same seed, same set
        assert np.array_equal(z["images"], a["images"])
        assert np.array_equal(z["drawn_class"], a["drawn_class"])
