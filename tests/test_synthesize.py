"""Tests of data_tools.synthesize (and its parts, data_tools.synthesis) and data_tools.class_names.

Tiny text-to-image and text-to-text models with random weights are built
from configs once per session, so nothing touches the Hugging Face hub.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools import synthesize as synth
from data_tools.synthesis import output, prompts as prompting
from data_tools.synthesis.seeds import image_seed
from data_tools.class_names import CIFAR10, CIFAR100, DIGITS, DIGITS_PROMPT, load_class_names

CLASSES = ["red apple", "sea_turtle", "Crane"]
IMAGES_PER_CLASS = 4
SIZE = 12
T5_WORDS = ("a the photo of dog cat bird sits on grass near water red blue small big "
            "tree car runs fast apple turtle crane flies over sea").split()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The models are tiny: on a shared CPU, thread hand-offs cost more than the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The hub must never be tried, even where the network is up.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- tiny models

def _tiny_text_to_image(folder):
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        vocab.update({c + suffix: len(vocab) + i for i, c in enumerate(chars)})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = 77
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    # 8x8 latents, VAE factor 2: the pipeline renders 16x16 images.
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(4, 8),
        layers_per_block=1, norm_num_groups=2, cross_attention_dim=16, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 8),
        norm_num_groups=2, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)


def _tiny_text_to_text(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({w: len(vocab) + i for i, w in enumerate(T5_WORDS)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                           special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    T5ForConditionalGeneration(T5Config(
        vocab_size=len(vocab), d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
        num_decoder_layers=1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    _tiny_text_to_image(str(root / "t2i"))
    _tiny_text_to_text(str(root / "t5"))
    return {"t2i": str(root / "t2i"), "t5": str(root / "t5")}


@pytest.fixture(scope="session")
def class_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("classes") / "classes.txt"
    path.write_text("# three classes\n" + "\n".join(CLASSES) + "\n\n")
    return str(path)


def _args(class_file, out, models, *extra):
    return ["--classes", class_file, "--out", str(out), "--images-per-class",
            str(IMAGES_PER_CLASS), "--image-size", str(SIZE), "--model", models["t2i"],
            "--prompt-model", models["t5"], "--prompts-per-class", "3", "--batch-size", "3",
            "--num-inference-steps", "2", "--device", "cpu", "--seed", "7", *extra]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_models, class_file):
    """An uninterrupted t5-mode run: 3 classes x 4 images."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    assert synth.main(_args(class_file, out, tiny_models)) == 0
    return out


def _manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.reader(f))


def _snapshot(folder):
    if not os.path.exists(folder):
        return None
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


# ------------------------------------------------------------------- outputs

def test_run_writes_images_manifest_and_prompts(reference_run, tiny_models):
    out = reference_run
    rows = _manifest(out)
    assert tuple(rows[0]) == output.MANIFEST_COLUMNS
    rows = rows[1:]
    assert len(rows) == len(CLASSES) * IMAGES_PER_CLASS
    assert len({r[0] for r in rows}) == len(rows)
    prompts = json.loads((out / "prompts.json").read_text())["classes"]
    folders = output.folder_names(CLASSES)
    assert folders == ["red_apple", "sea_turtle", "Crane"]
    for path, label, name, prompt, seed, generator in rows:
        c, i = map(int, os.path.basename(path)[:-4].split("_"))
        assert path == f"{folders[c]}/{c}_{i}.png" and int(label) == c and name == CLASSES[c]
        assert prompt == prompts[c]["prompts"][i % len(prompts[c]["prompts"])]["prompt"]
        assert int(seed) == image_seed(7, c, i)
        assert generator == tiny_models["t2i"]
        with Image.open(out / path) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    assert len(list(out.glob("*/*.png"))) == 12
    config = json.loads((out / "synthesis_config.json").read_text())
    assert config["class_names"] == CLASSES and config["image_size"] == SIZE


def test_t5_prompts_come_from_the_text_to_text_model(reference_run, tiny_models):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    saved = json.loads((reference_run / "prompts.json").read_text())["classes"]
    model = (AutoTokenizer.from_pretrained(tiny_models["t5"]),
             AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"]))
    names = [n.replace("_", " ") for n in CLASSES]
    expected = prompting.make_prompts(names, "t5", prompt_model=model, prompts_per_class=3, seed=7)
    assert [entry["prompts"] for entry in saved] == expected
    templates = {t.format(n) for t in prompting.TEMPLATES for n in names}
    for plist in expected:
        assert len(plist) == 3
        for p in plist:
            assert p["prompt"] not in templates and isinstance(p["seed"], int)
            assert set(p["prompt"].split()) <= set(T5_WORDS)  # the tiny model's vocabulary


def test_interrupted_run_resumes_to_identical_files(reference_run, tiny_models, class_file,
                                                    tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real_write, calls = output.write_png, []

    def crash_after_five(image, path):
        if len(calls) == 5:  # mid-batch: image 1 of class 1's first batch of 3
            raise KeyboardInterrupt
        calls.append(path)
        real_write(image, path)

    monkeypatch.setattr(output, "write_png", crash_after_five)
    assert synth.main(_args(class_file, out, tiny_models)) == 130
    assert len(_manifest(out)) == 1 + 5
    monkeypatch.setattr(output, "write_png", real_write)

    assert synth.main(_args(class_file, out, tiny_models)) == 0
    rows = _manifest(out)
    assert len(rows) == len({tuple(r) for r in rows}) == 1 + 12
    assert rows == _manifest(reference_run)
    for path in reference_run.glob("*/*.png"):
        resumed = out / path.relative_to(reference_run)
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(resumed)))
    # A rerun of a finished set makes nothing new.
    assert synth.synthesize(class_file, str(out), IMAGES_PER_CLASS, image_size=SIZE,
                            model=tiny_models["t2i"], prompt_model=tiny_models["t5"],
                            prompts_per_class=3, batch_size=3, num_inference_steps=2,
                            device="cpu", seed=7, progress=False).written == 0


def test_prompts_file_drives_another_run(reference_run, tiny_models, class_file, tmp_path):
    out = tmp_path / "reuse"
    args = _args(class_file, out, tiny_models, "--prompts-file",
                 str(reference_run / "prompts.json"), "--prompt-model", "not/needed")
    args[args.index("--images-per-class") + 1] = "2"
    assert synth.main(args) == 0
    reference = {r[0]: r for r in _manifest(reference_run)}
    rows = _manifest(out)[1:]
    assert len(rows) == 6
    assert all(r == reference[r[0]] for r in rows)  # same prompt and seed per image


def test_template_mode(tiny_models, tmp_path):
    out = tmp_path / "template"
    assert synth.main(["--classes", "cifar10", "--images-per-class", "1", "--out", str(out),
                       "--model", tiny_models["t2i"], "--prompt-mode", "template",
                       "--num-inference-steps", "1", "--device", "cpu"]) == 0
    rows = _manifest(out)[1:]
    assert [r[3] for r in rows] == [f"a photo of a {n}" for n in CIFAR10]
    with Image.open(out / rows[0][0]) as im:
        assert im.size == (32, 32)  # CIFAR's native size by default


# ----------------------------------------------------------------- bad input

def _expect_error(capsys, argv, fragment, out):
    before = _snapshot(out)
    assert synth.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m data_tools.synthesize: error: "), captured.err
    assert fragment in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert _snapshot(out) == before
    return lines[0]


@pytest.mark.parametrize("argv_patch, fragment", [
    ({"--classes": "cifar11"}, "unknown class list 'cifar11'"),
    ({"--images-per-class": "0"}, "--images-per-class: 0 is not valid; give an integer >= 1"),
    ({"--images-per-class": "-3"}, "--images-per-class: -3 is not valid; give an integer >= 1"),
    ({"--device": "tpu"}, "--device: 'tpu' is not one of auto, cpu, cuda, cuda:N"),
    ({"--classes": "EMPTY"}, "lists no class names"),
    ({"--classes": "digits", "--image-size": None}, "--image-size is required for digits"),
    ({"--model": "no-such-org/no-such-model"},
     "cannot load text-to-image model 'no-such-org/no-such-model' (not a local folder"),
    ({"--prompt-model": "no-such-org/no-such-t5"}, "pass --prompt-model /path/to/folder"),
])
def test_bad_input_fails_cleanly(argv_patch, fragment, tiny_models, class_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _args(class_file, out, tiny_models)
    for flag, value in argv_patch.items():
        at = argv.index(flag)
        if value is None:
            del argv[at:at + 2]
        else:
            if value == "EMPTY":
                value = str(tmp_path / "empty.txt")
                (tmp_path / "empty.txt").write_text("# nothing here\n\n   \n")
            argv[at + 1] = value
    _expect_error(capsys, argv, fragment, out)
    assert not out.exists()


def test_refuses_a_folder_with_other_settings(reference_run, tiny_models, class_file, tmp_path,
                                              capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    argv = _args(class_file, out, tiny_models)
    argv[argv.index("--image-size") + 1] = "16"
    _expect_error(capsys, argv, "image_size: 12 -> 16", out)
    _expect_error(capsys, argv + ["--prompts-per-class", "5"], "prompt_recipe", out)


def test_refuses_a_foreign_manifest(tiny_models, class_file, tmp_path, capsys):
    out = tmp_path / "foreign"
    (out / "photos").mkdir(parents=True)
    (out / "photos" / "2023_0101.png").write_bytes(b"a user's photo")
    (out / "manifest.csv").write_text("path,label\nphotos/2023_0101.png,0\n")
    line = _expect_error(capsys, _args(class_file, out, tiny_models), "this tool did not write it", out)
    assert "--overwrite" not in line
    # --overwrite does not make a folder this tool did not write its own.
    _expect_error(capsys, _args(class_file, out, tiny_models, "--overwrite"),
                  "--overwrite will not delete its images", out)


def test_out_that_is_a_file_is_refused_before_loading_models(tiny_models, class_file, tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    argv = _args(class_file, out, tiny_models)
    argv[argv.index("--model") + 1] = "no-such-org/no-such-model"  # loading it would be the error otherwise
    _expect_error(capsys, argv, "is a file; give a folder", out)
    assert synth.main(argv) == 2


# ---------------------------------------------------------------- class names

def test_builtin_class_lists():
    assert load_class_names("cifar10") == list(CIFAR10)
    assert load_class_names("CIFAR-100") == list(CIFAR100) and len(set(CIFAR100)) == 100
    assert CIFAR100[:3] == ("apple", "aquarium_fish", "baby") and CIFAR100[-1] == "worm"
    assert load_class_names("cifar100", prompt_form=True)[1] == "aquarium fish"
    assert load_class_names("digits") == list(DIGITS) == [str(d) for d in range(10)]
    assert load_class_names("digits", prompt_form=True) == list(DIGITS_PROMPT)


def test_class_file_and_tiny_imagenet(tmp_path):
    listing = tmp_path / "mine.txt"
    listing.write_text("# my classes\ncat\n\n  golden retriever  # a dog\n"
                       "n01443537 goldfish, Carassius auratus\n")
    assert load_class_names(str(listing)) == ["cat", "golden retriever", "goldfish"]

    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200/wnids.txt"):
        load_class_names("tiny_imagenet", str(tmp_path))
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("n02124075\nn01443537\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\n"
                                    "n02124075\tEgyptian cat\nn09999999\tunused\n")
    # Sorted WordNet ids: the label order of an ImageFolder over train/.
    assert load_class_names("tiny-imagenet", str(tmp_path)) == ["goldfish", "Egyptian cat"]

    with pytest.raises(FileNotFoundError, match="imagenet/classnames.txt"):
        load_class_names("imagenet", str(tmp_path))
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n")
    assert load_class_names("imagenet", str(tmp_path)) == ["tench"]


def test_folder_names_are_safe_and_unique():
    assert output.folder_names(["crane", "Crane", "crane", "a/b c", "café", "..", "con"]) == [
        "crane", "Crane_1", "crane_2", "a_b_c", "cafe", "class", "con_"]


def test_image_seeds_are_distinct_and_stable():
    seeds = {image_seed(0, c, i) for c in range(10) for i in range(100)}
    assert len(seeds) == 1000 and all(0 <= s < 2 ** 63 for s in seeds)
    assert image_seed(0, 1, 2) == image_seed(0, 1, 2) != image_seed(1, 1, 2)


def test_more_images_per_class_extends_a_set(reference_run, tiny_models, class_file, tmp_path):
    out = tmp_path / "grown"
    shutil.copytree(reference_run, out)
    argv = _args(class_file, out, tiny_models)
    argv[argv.index("--images-per-class") + 1] = "5"
    assert synth.main(argv) == 0
    rows = _manifest(out)
    assert len(rows) == 1 + 15 and rows[1:5] == _manifest(reference_run)[1:5]
    assert (out / "Crane" / "2_4.png").is_file()


def test_overwrite_replaces_a_run_with_other_settings(reference_run, tiny_models, class_file,
                                                      tmp_path):
    out = tmp_path / "replaced"
    shutil.copytree(reference_run, out)
    (out / "notes.txt").write_text("not ours")
    # Named like the tool's images, but no manifest row or setting of the run names them.
    (out / "photos").mkdir()
    (out / "photos" / "2023_0101.png").write_bytes(b"a user's photo")
    (out / "Crane" / "2_99.png").write_bytes(b"another")
    argv = _args(class_file, out, tiny_models, "--overwrite", "--prompt-mode", "template")
    argv[argv.index("--image-size") + 1] = "8"
    argv[argv.index("--images-per-class") + 1] = "2"
    assert synth.main(argv) == 0
    assert len(_manifest(out)) == 1 + 6 and len(list(out.glob("*/*.png"))) == 6 + 2
    with Image.open(out / "Crane" / "2_1.png") as im:
        assert im.size == (8, 8)
    assert not (out / "Crane" / "2_3.png").exists()  # the old run's images beyond the new plan are gone
    # Only the tool's own files go.
    assert (out / "notes.txt").read_text() == "not ours"
    assert (out / "photos" / "2023_0101.png").read_bytes() == b"a user's photo"
    assert (out / "Crane" / "2_99.png").read_bytes() == b"another"


# ------------------------------------------------------------- as an RS-SSL source

def test_output_folder_trains_an_rsssl_run(reference_run, tmp_path):
    """The generated folder, used as ``synthetic_source`` as is, contaminates a real run."""
    from conftest import read_log, run_train, tiny_config

    root = tmp_path / "real"
    for split, count in (("train", 10), ("val", 3)):
        for c, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = np.full((10, 10, 3), 20 * c + i, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    cfg = tiny_config(tmp_path, name="synthesized", dataset="imagefolder", image_folder_root=str(root),
                      num_classes=3, num_labels=3, synthetic_source=str(reference_run), synthetic_ratio=0.3)
    code, run_dir = run_train(tmp_path, cfg)
    assert code == 0
    log = read_log(run_dir)
    assert "unlabeled data number: 39, labeled data number 3" in log  # 30 real + 9 synthetic
    assert "2 iteration, USE_EMA" in log
