"""Several synthetic sources in one unlabeled set: counts per source and class, seeding, ids, AUROC per source."""
import hashlib
import os

import numpy as np
import pytest

from conftest import build_datasets, digits_args, read_log, run_train, tiny_config
from data_tools import mixing, synthetic, usb
from rsmatch_usb import inspect_data
from rsmatch_usb.errors import UserError
from rsmatch_usb.origin import auroc_by_source


def write_source(path, marker, per_class=400, size=8):
    """An .npz source whose images all hold ``marker`` in pixel (0, 0) and a unique index after it."""
    n = 10 * per_class
    images = np.zeros((n, size, size), dtype=np.uint8)
    images[:, 0, 0] = marker
    images[:, 0, 1] = np.arange(n) % 256
    images[:, 0, 2] = np.arange(n) // 256
    np.savez_compressed(path, images=images, labels=np.repeat(np.arange(10), per_class))
    return str(path)


@pytest.fixture
def sources(tmp_path):
    return {name: write_source(tmp_path / f"{name}.npz", marker)
            for name, marker in (("ddim", 201), ("fewstep", 202), ("cgan", 203))}


def contaminated_args(**overrides):
    """Digits data arguments with as many synthetic images as real unlabeled ones, unless overridden."""
    return digits_args(**{"synthetic_ratio": 1.0, **overrides})


def build(args):
    return build_datasets(args)[1]


def weighted(sources, weights=(1, 1, 2)):
    return [{"source": path, "weight": w} for path, w in zip(sources.values(), weights)]


def test_exact_counts_per_source_and_class(sources):
    ulb = build(contaminated_args(synthetic_source=weighted(sources)))
    n_real = int((~ulb.is_synthetic).sum())
    total = mixing.synthetic_total(n_real, 1.0)
    assert ulb.source_names == ["real", "ddim", "fewstep", "cgan"]
    # The total split 1:1:2 by largest remainders (1347 / 4 = 336.75), the classes as for one source.
    totals = mixing.source_totals(total, [1, 1, 2])
    assert totals.tolist() == [337, 337, 673]
    table = np.stack([np.bincount(ulb.labels[ulb.source == s], minlength=10) for s in (1, 2, 3)])
    assert table.sum(axis=1).tolist() == totals.tolist()
    assert np.array_equal(table.sum(axis=0), mixing.per_class_counts(total, 10, seed=0))
    assert np.array_equal(table, mixing.source_class_counts(total, 10, [1, 1, 2], seed=0))
    # Each source spread evenly over the classes.
    assert (table.max(axis=1) - table.min(axis=1)).max() <= 2
    # Every image with a source id is one of that source's images (pixel marker), none repeated.
    markers = np.asarray([ulb.images[i][0, 0] for i in range(len(ulb))])
    assert np.array_equal(markers[ulb.source == 0], [ulb.images[i][0, 0] for i in np.flatnonzero(~ulb.is_synthetic)])
    for s, marker in ((1, 201), (2, 202), (3, 203)):
        assert (markers[ulb.source == s] == marker).all()
        keys = {ulb.images[i].tobytes() for i in np.flatnonzero(ulb.source == s)}
        assert len(keys) == totals[s - 1]
    assert (ulb.is_synthetic == (ulb.source > 0)).all() and not ulb.is_synthetic[:n_real].any()


def test_counts_always_exact():
    for total in (0, 1, 7, 29, 1000, 10041):
        for weights in ([1, 1, 1], [1, 2], [0.3, 0.3, 0.4], [5, 1, 1, 1]):
            table = mixing.source_class_counts(total, 10, weights, seed=3)
            assert table.sum() == total
            assert np.array_equal(table.sum(axis=1), mixing.source_totals(total, weights))
            assert np.array_equal(table.sum(axis=0), mixing.per_class_counts(total, 10, seed=3))


def test_deterministic_and_seeded(sources):
    args = contaminated_args(synthetic_source=list(sources.values()), synthetic_ratio=0.5)

    def synthetic_keys(ulb):
        return [(ulb.images[i].tobytes(), int(ulb.source[i])) for i in np.flatnonzero(ulb.is_synthetic)]

    first = synthetic_keys(build(args))
    assert first == synthetic_keys(build(args))
    assert first != synthetic_keys(build(contaminated_args(synthetic_source=list(sources.values()), synthetic_ratio=0.5,
                                                     synthetic_seed=7)))
    # A source's draw depends on its id, not on its place in the list: reordering moves at most the
    # remainders between sources, so per class one order's images of a source extend the other's.
    original, reordered = build(args), build(contaminated_args(synthetic_source=list(reversed(sources.values())),
                                                         synthetic_ratio=0.5))
    for name in sources:
        for c in range(10):
            a, b = ({ulb.images[i].tobytes() for i in np.flatnonzero((ulb.labels == c) & ulb.is_synthetic)
                     if ulb.source_of(i) == name} for ulb in (original, reordered))
            assert a <= b or b <= a


@pytest.mark.parametrize("seed, ratio, count, digest", [(0, 0.5, 674, "08864daae161744b"),
                                                        (1, 1.0, 1347, "a76806766c613c3e")])
@pytest.mark.parametrize("form", ["string", "list", "weighted list"])
def test_single_source_unchanged(bundled_digits, seed, ratio, count, digest, form):
    """One source, in any form, draws the images the single-source code drew (digests recorded before)."""
    spec = {"string": "bundled", "list": ["bundled"], "weighted list": [{"source": "bundled", "weight": 3}]}[form]
    ulb = build(contaminated_args(seed=seed, synthetic_ratio=ratio, synthetic_source=spec))
    h = hashlib.sha256()
    for i in np.flatnonzero(ulb.is_synthetic):
        h.update(np.ascontiguousarray(ulb.images[i]).tobytes())
        h.update(bytes([ulb.labels[i]]))
    assert int(ulb.is_synthetic.sum()) == count and h.hexdigest()[:16] == digest
    assert ulb.source_names == ["real", "bundled"]


def test_flags_and_source_ids_reach_usb_samples(sources):
    args = contaminated_args(synthetic_source=list(sources.values()), synthetic_ratio=0.3)
    np.random.seed(0)
    datasets = usb.get_dataset(args, "fixmatch", "digits", 40, 10)
    ulb = datasets["train_ulb"]
    names = ulb.data.source_names
    for i in (0, len(ulb) - 1) + tuple(np.flatnonzero(ulb.data.source == 2)[:1]):
        sample = ulb[i]
        assert sample["source_ulb"] == ulb.data.source[i]
        assert sample["is_synthetic_ulb"] == (names[sample["source_ulb"]] != "real")
    assert names[ulb[len(ulb) - 1]["source_ulb"]] == "cgan" and ulb[0]["source_ulb"] == 0
    assert "source_ulb" not in datasets["train_lb"][0]


def test_bundled_by_name_and_source_ids(tmp_path, monkeypatch, sources):
    monkeypatch.setattr(synthetic, "BUNDLED_DIR", tmp_path)
    entries = synthetic.source_entries(["bundled:ddim", {"source": "bundled:cgan", "weight": 2, "name": "gan"},
                                        sources["fewstep"]])
    assert [(e.name, e.weight) for e in entries] == [("ddim", 1.0), ("gan", 2.0), ("fewstep", 1.0)]
    assert synthetic.resolve_source("bundled:ddim", "digits") == sources["ddim"]
    assert synthetic.resolve_source("bundled", "digits") == str(synthetic.BUNDLED["digits"])
    # The command line gives a list in YAML flow style.
    assert [e.spec for e in synthetic.source_entries("[bundled:ddim, bundled:cgan]")] == ["bundled:ddim",
                                                                                            "bundled:cgan"]
    ulb = build(contaminated_args(synthetic_source="[bundled:ddim, bundled:cgan]", synthetic_ratio=0.2))
    assert ulb.source_names == ["real", "ddim", "cgan"]


@pytest.mark.parametrize("spec, message", [
    (["bundled:nope"], "no bundled set 'nope'"),
    ([{"source": "bundled", "weight": 0}], "must be a number > 0"),
    (["bundled", "bundled"], "used twice"),
    ([{"path": "x.npz"}], "must be a string or a mapping"),
    ([], "non-empty list"),
])
def test_bad_source_lists(bundled_digits, spec, message):
    with pytest.raises(UserError, match=message):
        build(contaminated_args(synthetic_source=spec))


def test_unmeetable_ratio_names_the_source(tmp_path, sources, capsys):
    small = write_source(tmp_path / "small.npz", 9, per_class=20)
    cfg = tiny_config(tmp_path, name="short", synthetic_source=[sources["ddim"], small], synthetic_ratio=0.5)
    code, run_dir = run_train(tmp_path, cfg)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not os.path.exists(run_dir) and len(err.splitlines()) == 1
    assert "337 of them from synthetic_source small, which holds only 200; lower synthetic_ratio to about" in err


def test_inspect_prints_counts_per_source(tmp_path, sources, capsys):
    from conftest import write_config

    cfg = tiny_config(tmp_path, synthetic_source=weighted(sources), synthetic_ratio=1.0)
    assert inspect_data.main(["--c", write_config(tmp_path, cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["class", "labeled", "real_unlabeled", "synthetic_unlabeled", "synthetic:ddim",
                                "synthetic:fewstep", "synthetic:cgan", "eval"]
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[1:] == ["40", "1347", "1347", "337", "337", "673", "450"]


def test_auroc_by_source():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    source = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.25, 0.05])  # source a separable, b not
    out = auroc_by_source("eval/detector_auroc", truth, scores, source, ["real", "a", "b"])
    assert out["eval/detector_auroc/a"] == 1.0 and out["eval/detector_auroc/b"] == pytest.approx(0.25)
    assert out["eval/detector_auroc"] == pytest.approx(0.625)
    single = auroc_by_source("k", truth, scores, np.where(truth, 1, 0), ["real", "a"])
    assert list(single) == ["k"]  # one source: the overall value only, as before


@pytest.mark.parametrize("algorithm, key", [("rsmatch", "eval/detector_auroc"), ("openmatch", "eval/synthetic_auroc")])
def test_auroc_logged_per_source(tmp_path, sources, algorithm, key):
    extra = dict(start_fix=0, select_interval=1) if algorithm == "openmatch" else {}
    cfg = tiny_config(tmp_path, algorithm=algorithm, synthetic_source=list(sources.values()), synthetic_ratio=0.5,
                      **extra)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    for name in sources:
        assert f"{key}/{name}: " in log
    assert f"{key}: " in log
