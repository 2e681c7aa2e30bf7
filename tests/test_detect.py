"""rsmatch-detect end to end: a small RSMatch run's detector scores a folder, a manifest and an .npz of images."""
import csv
import hashlib
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_train, tiny_config
from data_tools import synthetic
from rsmatch_usb import detect


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 4-iteration RSMatch run on contaminated digits (its checkpoint holds a detector and its scoring settings)."""
    tmp = tmp_path_factory.mktemp("detect_run")
    # detector_input rgb: what every checkpoint from before the key holds, which the "older checkpoint" test
    # imitates by stripping the recorded settings.
    cfg = tiny_config(tmp, name="rsmatch", algorithm="rsmatch", detector_width=4, synthetic_source="bundled",
                      synthetic_ratio=1.0, num_train_iter=4, num_eval_iter=4, detector_input="rgb")
    code, folder = run_train(tmp, cfg)
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """12 bundled synthetic and 12 real digits (up-sampled to 16 px): an .npz, a class-folder tree, a flat folder."""
    from data_tools.sources import load_digits_source

    tmp = tmp_path_factory.mktemp("detect_images")
    with np.load(synthetic.BUNDLED["digits"]) as z:
        syn_images, syn_labels = z["images"][:12], z["labels"][:12]
    real = load_digits_source()[0]
    # The real digits are 8 px, the synthetic ones 16: one .npz holds one size.
    pictures = np.concatenate((syn_images, np.kron(real.images[:12], np.ones((2, 2), dtype=np.uint8))))
    labels = np.concatenate((syn_labels, real.labels[:12]))
    np.savez(tmp / "mixed.npz", images=pictures, labels=labels)
    for i, (img, label) in enumerate(zip(pictures, labels)):
        (tmp / "tree" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp / "tree" / str(label) / f"img{i}.png")
        (tmp / "flat").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp / "flat" / f"img{i}.png")
    return tmp


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_checkpoint_records_the_threshold_and_the_eval_view(run_dir):
    ckpt = torch.load(os.path.join(run_dir, "latest_model.pth"), weights_only=True)
    scoring = ckpt["rsmatch_state"]["scoring"]
    assert float(scoring["routing_threshold"]) == pytest.approx(0.5)
    assert scoring["eval_view"] == {"resize": [16, 16], "interpolation": "bilinear", "crop": None,
                                    "mean": pytest.approx([0.305] * 3), "std": pytest.approx([0.376] * 3)}
    assert ckpt["detector_ema"]["_extra_state"] == {"width": 4, "in_chans": 3, "input": "rgb"}


def test_scores_every_image_reports_the_share_and_keeps_the_real_ones(run_dir, images, tmp_path, capsys):
    before = _digest(images / "tree")
    out = tmp_path / "scores.csv"
    code = detect.main([run_dir, str(images / "tree"), "--csv", str(out), "--keep-real", str(tmp_path / "kept")])
    printed = capsys.readouterr().out
    assert code == 0
    rows = _rows(out)
    assert len(rows) == 24 and len({r["image"] for r in rows}) == 24
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    judged = sum(r["judged"] == "synthetic" for r in rows)
    assert all((r["judged"] == "synthetic") == (float(r["score"]) >= 0.5) for r in rows)  # the run's threshold
    assert f"estimated synthetic share {judged / 24:.1%} ({judged} of 24" in printed
    assert Image.open(tmp_path / "scores.png").size[0] > 100
    # The images judged real, byte for byte under their class folders, with a manifest; the input untouched.
    kept = {r["image"] for r in rows if r["judged"] == "real"}
    copied = _digest(tmp_path / "kept")
    manifest = _rows(tmp_path / "kept" / "manifest.csv")
    assert len(manifest) == len(kept) == len(copied) - 1
    assert {os.path.relpath(p, images / "tree") for p in kept} == {m["path"] for m in manifest}
    assert all(copied[m["path"]] == before[m["path"]] for m in manifest)
    assert _digest(images / "tree") == before


def test_npz_manifest_and_flat_folder_give_the_same_scores(run_dir, images, tmp_path):
    # A threshold between the 12th and 13th score, so that both judgements occur (the 4-iteration detector's
    # scores lie close together).
    assert detect.main([run_dir, str(images / "mixed.npz"), "--csv", str(tmp_path / "first.csv")]) == 0
    ranked = sorted(float(r["score"]) for r in _rows(tmp_path / "first.csv"))
    threshold = (ranked[11] + ranked[12]) / 2
    scores = {}
    for name, spec in (("npz", images / "mixed.npz"), ("flat", images / "flat"), ("tree", images / "tree")):
        assert detect.main([run_dir, str(spec), "--csv", str(tmp_path / f"{name}.csv"), "--threshold", str(threshold),
                            "--keep-real", str(tmp_path / f"kept_{name}")]) == 0
        rows = _rows(tmp_path / f"{name}.csv")
        key = (lambda r: int(r["index"])) if name == "npz" else (lambda r: int(r["image"].rsplit("img", 1)[1][:-4]))
        scores[name] = [float(r["score"]) for r in sorted(rows, key=key)]
        assert sum(r["judged"] == "synthetic" for r in rows) == 12
        assert all((r["judged"] == "synthetic") == (float(r["score"]) >= threshold) for r in rows)
    # PNG round trips are lossless, so the three layouts score alike.
    assert scores["npz"] == pytest.approx(scores["flat"], abs=1e-6)
    assert scores["npz"] == pytest.approx(scores["tree"], abs=1e-6)
    # The .npz's images judged real were written as PNGs with a manifest that reads back as a source.
    kept = synthetic.read_own_classes(str(tmp_path / "kept_npz"))
    assert len(kept) == 12
    assert len(list((tmp_path / "kept_flat").iterdir())) == 12  # no classes: the files alone, no manifest


def test_an_older_checkpoint_scores_alike_from_its_log_or_from_flags(run_dir, images, tmp_path):
    ckpt = torch.load(os.path.join(run_dir, "latest_model.pth"), weights_only=True)
    del ckpt["rsmatch_state"]["scoring"]
    for entry in ("detector", "detector_ema"):
        del ckpt[entry]["_extra_state"]
    beside_log, alone = tmp_path / "with_log", tmp_path / "alone"
    for folder in (beside_log, alone):
        folder.mkdir()
        torch.save(ckpt, folder / "latest_model.pth")
    shutil.copy(os.path.join(run_dir, "log.txt"), beside_log / "log.txt")
    spec = str(images / "mixed.npz")
    assert detect.main([run_dir, spec, "--csv", str(tmp_path / "new.csv")]) == 0
    assert detect.main([str(beside_log), spec, "--csv", str(tmp_path / "log.csv")]) == 0
    assert detect.main([str(alone / "latest_model.pth"), spec, "--csv", str(tmp_path / "flags.csv"),
                        "--dataset", "digits", "--img-size", "16", "--crop-ratio", "0.875", "--threshold", "0.5"]) == 0
    new, from_log, from_flags = (_rows(tmp_path / f"{n}.csv") for n in ("new", "log", "flags"))
    assert [r["score"] for r in new] == [r["score"] for r in from_log] == [r["score"] for r in from_flags]
    assert [r["judged"] for r in new] == [r["judged"] for r in from_log]


def _bad(capsys, argv):
    code = detect.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    # The prefix is how the command was started: rsmatch-detect, or python -m rsmatch_usb.detect as here.
    assert err.count("\n") == 1 and re.match(r"(rsmatch-detect|python -m rsmatch_usb\.detect): error: ", err), err
    return err


def test_bad_input_is_one_error_line_and_exit_2_with_nothing_written(run_dir, images, tmp_path, capsys):
    out = str(tmp_path / "scores.csv")
    assert "does not exist" in _bad(capsys, [run_dir, str(tmp_path / "missing"), "--csv", out])
    (tmp_path / "empty").mkdir()
    assert "IMAGES:" in _bad(capsys, [run_dir, str(tmp_path / "empty"), "--csv", out])
    assert "does not exist" in _bad(capsys, [str(tmp_path / "no_run"), str(images / "mixed.npz"), "--csv", out])
    torch.save({"model": {}}, tmp_path / "fixmatch.pth")
    assert "no RSMatch detector" in _bad(capsys, [str(tmp_path / "fixmatch.pth"), str(images / "mixed.npz"),
                                                  "--csv", out])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert "unreadable" in _bad(capsys, [str(tmp_path / "junk.pth"), str(images / "mixed.npz"), "--csv", out])
    assert "--threshold" in _bad(capsys, [run_dir, str(images / "mixed.npz"), "--csv", out, "--threshold", "1.5"])
    assert "inside IMAGES" in _bad(capsys, [run_dir, str(images / "tree"), "--csv", out,
                                            "--keep-real", str(images / "tree" / "kept")])
    assert "IMAGES itself" in _bad(capsys, [run_dir, str(images / "mixed.npz"), "--csv", str(images / "mixed.npz"),
                                            "--overwrite"])
    assert "records how the run viewed" in _bad(capsys, [run_dir, str(images / "mixed.npz"), "--csv", out,
                                                         "--img-size", "32"])
    assert sorted(os.listdir(tmp_path)) == ["empty", "fixmatch.pth", "junk.pth"]
    # An existing output is not replaced without --overwrite.
    (tmp_path / "scores.csv").write_text("keep me")
    assert "--overwrite" in _bad(capsys, [run_dir, str(images / "mixed.npz"), "--csv", out])
    assert (tmp_path / "scores.csv").read_text() == "keep me"
    assert not (images / "tree" / "kept").exists()


def test_images_are_read_in_their_own_classes(tmp_path):
    # A manifest naming classes by name and by index, and an .npz with class names: no dataset needed.
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "list.csv").write_text("path,label,class_name\na.png,,cat\nb.png,2,\nc.png,0,\n")
    listed = synthetic.read_own_classes(str(tmp_path / "list.csv"))
    assert [listed.class_names[i] for i in listed.labels] == ["cat", "2", "0"]
    np.savez(tmp_path / "named.npz", images=np.zeros((3, 4, 4), dtype=np.uint8), labels=np.array([1, 0, 1]),
             class_names=np.array(["shirt", "shoe"]))
    named = synthetic.read_own_classes(str(tmp_path / "named.npz"))
    assert [named.class_names[i] for i in named.labels] == ["shoe", "shirt", "shoe"]
