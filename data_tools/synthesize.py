"""Make a synthetic image set for RS-SSL with a text-to-image diffusion model.

The recipe of the RS-SSL benchmark (after He et al., ICLR 2023): a
keyword-to-sentence T5 model expands each class name into varied prompts, a
text-to-image model (Stable Diffusion v1.4 by default) renders one image per
(prompt, seed), and the image is downsized to the dataset's resolution. The
sampled sentences and the diffusion model stray from the class now and then,
so the set holds on-class images, images with semantic drift and some
unrelated ones: the contamination RS-SSL studies.

Output, ready for the ``synthetic_source`` config key::

    out/<class folder>/<class_idx>_<image_idx>.png
    out/manifest.csv          path,label,class_name,prompt,seed,generator
    out/prompts.json          prompts per class (reusable via --prompts-file)
    out/synthesis_config.json settings; a rerun with other settings is refused

Runs are resumable: rerun the same command and only missing images are made.
Every image has its own seed derived from (seed, class, image), so a resumed
run writes the same pixels as an uninterrupted one on the same device.

    python -m data_tools.synthesize --classes cifar10 --images-per-class 500 \\
        --out data/synthetic/cifar10_sd14
"""

import argparse
import csv
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import re
import sys
import time
import unicodedata
import urllib.error
import urllib.request

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from data_tools.atomic import atomic_write
from data_tools.class_names import canonical_name, load_class_names
from data_tools.errors import UserError, command_name, report

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
# T5-base fine-tuned on CommonGen (keywords -> sentence); the model He et al.
# (ICLR 2023) used for their "language enhancement" prompts.
DEFAULT_PROMPT_MODEL = "mrm8488/t5-base-finetuned-common_gen"
DEFAULT_PROMPTS_PER_CLASS = 100

TEMPLATES = (
    "a photo of a {}",
    "a photo of the {}",
    "a close-up photo of a {}",
    "a bright photo of a {}",
    "a cropped photo of a {}",
    "a photo of a small {}",
    "a photo of a large {}",
    "a good photo of a {}",
)

# Output size when --image-size is not given: the dataset's own resolution.
NATIVE_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "tiny_imagenet": 64, "imagenet": 224}

MANIFEST = "manifest.csv"
CONFIG = "synthesis_config.json"
PROMPTS = "prompts.json"
MANIFEST_COLUMNS = ("path", "label", "class_name", "prompt", "seed", "generator")
FORMAT_VERSION = 1

_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
# Distinct SeedSequence spawn keys keep image and prompt seeds independent.
_IMAGE_STREAM, _PROMPT_STREAM = 0, 1
_IMAGE_FILE = re.compile(r"^\d+_\d+\.png(\.tmp)?$")
_MANIFEST_EVERY_S = 30.0
_T5_MAX_NEW_TOKENS = 32
_T5_SAMPLES_PER_CALL = 32


class SynthesisError(UserError):
    """A problem the user can fix; the CLI prints it as one error line."""


@dataclasses.dataclass
class SynthesisResult:
    out_dir: str
    manifest: str
    written: int  # images made by this call
    total: int  # images listed in the manifest


# ---------------------------------------------------------------- seeds, names

def _derived_seed(seed, *key):
    """63-bit seed from (seed, *key); 63 bits keep torch's manual_seed happy."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def image_seed(seed, class_idx, image_idx):
    """The seed of one image, independent of batching and resumption."""
    return _derived_seed(seed, _IMAGE_STREAM, class_idx, image_idx)


def prompt_seed(seed, class_idx, call_idx):
    """The seed of one T5 sampling call for a class."""
    return _derived_seed(seed, _PROMPT_STREAM, class_idx, call_idx)


def _sanitize(name):
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:80] or "class"
    # Names Windows reserves for devices cannot be folders there.
    if re.fullmatch(r"(con|prn|aux|nul|com\d|lpt\d)", text, re.IGNORECASE):
        text += "_"
    return text


def folder_names(class_names):
    """Filesystem-safe, unique folder names, one per class.

    Duplicates (ImageNet has two "crane" classes) and names equal up to case
    (case-insensitive filesystems) get the class index appended.
    """
    folders, seen = [], set()
    for idx, name in enumerate(class_names):
        folder = _sanitize(name)
        while folder.lower() in seen:
            folder = f"{folder}_{idx}"
        seen.add(folder.lower())
        folders.append(folder)
    return folders


# ----------------------------------------------------------------------- models

def _hub_reachable(timeout=5.0):
    """True when the Hugging Face hub answers; False offline, without hanging."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    # The env var is read again: huggingface_hub only reads it at import.
    offline_env = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    if constants.HF_HUB_OFFLINE or offline_env:
        return False
    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the hub answered, if only with an error status
    except (OSError, ValueError):
        return False
    return True


def _in_hf_cache(repo_id, filename):
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # invalid repo id, unusual cache layout: treat as absent
        return False


def _model_source(name, what, flag, probe_file):
    """Return (name, from_pretrained kwargs) or raise a one-line error.

    from_pretrained on an unreachable hub can stall on retries, so the
    network is only tried when the model is neither a folder nor cached and
    a quick probe says the hub answers.
    """
    if os.path.isdir(name):
        return name, {}
    hint = f"download it elsewhere and pass {flag} /path/to/folder"
    if os.path.isabs(name) or name.startswith((".", "~")):
        raise SynthesisError(f"cannot load {what} {name!r} (no such folder); {hint}")
    if _in_hf_cache(name, probe_file):
        return name, {"local_files_only": True}
    if _hub_reachable():
        return name, {}
    raise SynthesisError(f"cannot load {what} {name!r} (not a local folder, not in the "
                         f"Hugging Face cache, and the hub is unreachable); {hint}")


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _require(module):
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise SynthesisError(f"synthesis needs {module}: pip install 'rsmatch-usb[synth]'") from exc


def load_text_to_image(model, device, dtype):
    """Load a diffusers text-to-image pipeline onto device in dtype."""
    _require("diffusers")
    from diffusers import AutoPipelineForText2Image
    source, kwargs = _model_source(model, "text-to-image model", "--model", "model_index.json")
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(source, **kwargs, **_dtype_kwarg(dtype))
        pipe = pipe.to(device)
    except Exception as exc:
        raise SynthesisError(
            f"cannot load text-to-image model {model!r}: {_first_line(exc)}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dtype_kwarg(dtype):
    """from_pretrained's dtype keyword: diffusers renamed torch_dtype to dtype."""
    try:
        from diffusers.utils import deprecation_utils
        renamed = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        renamed = False
    return {"dtype" if renamed else "torch_dtype": dtype}


def load_prompt_model(prompt_model, device):
    """Load a text-to-text (seq2seq) model and its tokenizer, in float32.

    T5 overflows in float16, and the model is small next to the diffusion one.
    """
    _require("transformers")
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    source, kwargs = _model_source(prompt_model, "prompt model", "--prompt-model", "config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs).to(device).eval()
    except Exception as exc:
        raise SynthesisError(
            f"cannot load prompt model {prompt_model!r}: {_first_line(exc)}") from exc
    return tokenizer, model


# ---------------------------------------------------------------------- prompts

def make_prompts(prompt_names, mode="t5", *, prompt_model=DEFAULT_PROMPT_MODEL,
                 prompts_per_class=DEFAULT_PROMPTS_PER_CLASS, seed=0, device="cpu",
                 progress=False):
    """Prompts per class: a list (one per class) of ``{"prompt", "seed"}``.

    ``template`` formats TEMPLATES with each name (seed None). ``t5`` samples
    sentences from a keyword-to-sentence model fed with the class name, as
    He et al. did; duplicates are dropped, so a class may get fewer than
    ``prompts_per_class`` prompts (images cycle through them anyway).
    ``prompt_model`` is a hub id, a folder, or a loaded (tokenizer, model).
    """
    if mode == "template":
        return [[{"prompt": t.format(name), "seed": None} for t in TEMPLATES]
                for name in prompt_names]
    if mode != "t5":
        raise SynthesisError(f"unknown prompt mode {mode!r}; use t5 or template")
    _positive(prompts_per_class, "--prompts-per-class")
    if isinstance(prompt_model, (tuple, list)):
        tokenizer, model = prompt_model
    else:
        tokenizer, model = load_prompt_model(prompt_model, device)
    names = tqdm(prompt_names, desc="prompts", unit="class", disable=not progress)
    return [_sample_prompts(tokenizer, model, name, c, prompts_per_class, seed)
            for c, name in enumerate(names)]


def _sample_prompts(tokenizer, model, name, class_idx, count, seed):
    device = model.device
    # Keyword-to-sentence models read space-separated keywords.
    inputs = tokenizer([name.replace(",", " ")], return_tensors="pt").to(device)
    prompts, seen = [], set()
    calls = math.ceil(4 * count / _T5_SAMPLES_PER_CALL)  # bounded retries for duplicates
    for call in range(calls):
        call_seed = prompt_seed(seed, class_idx, call)
        # generate() samples from the global RNG; fork it so callers' streams stay untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(call_seed)
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=True, top_k=50, top_p=1.0,
                                     temperature=1.0, max_new_tokens=_T5_MAX_NEW_TOKENS,
                                     num_return_sequences=_T5_SAMPLES_PER_CALL)
        for text in tokenizer.batch_decode(out, skip_special_tokens=True):
            text = " ".join(text.split())
            if text and text not in seen:
                seen.add(text)
                prompts.append({"prompt": text, "seed": call_seed})
                if len(prompts) == count:
                    return prompts
    # A model that only emits empty text still yields a usable prompt.
    return prompts or [{"prompt": name, "seed": None}]


def _prompts_digest(class_names, prompts):
    canonical = json.dumps([[name, [p["prompt"] for p in plist]]
                            for name, plist in zip(class_names, prompts)],
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save_prompts(path, class_names, prompts, recipe):
    """Write prompts.json: the recipe and, per class, its prompts with seeds."""
    doc = {"format_version": FORMAT_VERSION, "recipe": recipe,
           "classes": [{"label": c, "class_name": name, "prompts": plist}
                       for c, (name, plist) in enumerate(zip(class_names, prompts))]}
    _atomic_write(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def load_prompts(path, class_names):
    """Read a prompts.json written by this tool and match it to class_names."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        by_label = {int(e["label"]): (e["class_name"], [
            {"prompt": str(p["prompt"]), "seed": p.get("seed")}
            for p in e["prompts"] if str(p["prompt"]).strip()]) for e in doc["classes"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SynthesisError(f"cannot read prompts file {path!r}: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from exc
    prompts = []
    for c, name in enumerate(class_names):
        found, plist = by_label.get(c, (None, []))
        if found != name:
            raise SynthesisError(f"prompts file {path!r} does not match the classes: label {c} "
                                 f"is {found!r} there, {name!r} here")
        if not plist:
            raise SynthesisError(f"prompts file {path!r} has no prompt for class {name!r}")
        prompts.append(plist)
    return prompts


# ------------------------------------------------------------------ file output

def _atomic_write(path, text):
    """Write text so that readers see the old or the new file, never a torn one."""
    # Fixed <path>.tmp names: the cleanup of an interrupted run knows them.
    with atomic_write(path, "w", unique=False, encoding="utf-8", newline="") as f:
        f.write(text)


def _write_png(image, path):
    with atomic_write(path, "wb", unique=False) as f:
        image.save(f, format="PNG")


def _to_size(image, size):
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    # Crop to a square before downsizing so objects keep their aspect ratio.
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)


def _scan_done(out_dir, folders, images_per_class):
    """(class, image) pairs whose PNG exists; PNGs appear atomically."""
    done = set()
    for c, folder in enumerate(folders):
        try:
            present = set(os.listdir(os.path.join(out_dir, folder)))
        except FileNotFoundError:
            continue
        done.update((c, i) for i in range(images_per_class) if f"{c}_{i}.png" in present)
    return done


def _write_manifest(out_dir, plan, done):
    """Rewrite the manifest from the images on disk: rows never duplicate."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for key, row in plan.rows():
        if key in done:
            writer.writerow(row)
    _atomic_write(os.path.join(out_dir, MANIFEST), buf.getvalue())


def _own_image(relpath):
    """``relpath`` normalised if it names an image this tool writes (``<folder>/<c>_<i>.png``), else None."""
    parts = os.path.normpath(str(relpath)).split(os.sep)
    if (len(parts) == 2 and not os.path.isabs(str(relpath)) and parts[0] not in ("", ".", "..")
            and not parts[0].startswith(".") and _IMAGE_FILE.match(parts[1]) and not parts[1].endswith(".tmp")):
        return os.path.join(*parts)
    return None


def _previous_images(out_dir, settings):
    """The images an earlier run of this tool in ``out_dir`` wrote or was writing, as relative paths.

    The rows of its manifest, and, when its settings are readable, every image
    its plan names (a run killed between two manifest checkpoints wrote some
    not yet listed). Only paths of the tool's own form count, so a manifest
    row pointing elsewhere deletes nothing.
    """
    listed = set()
    try:
        with open(os.path.join(out_dir, MANIFEST), newline="", encoding="utf-8-sig") as f:
            listed.update(row.get("path") or "" for row in csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # no manifest, or an unreadable one: the plan still names the images
    folders, per_class = settings.get("folders"), settings.get("images_per_class")
    if isinstance(folders, list) and isinstance(per_class, int):
        listed.update(f"{folder}/{c}_{i}.png" for c, folder in enumerate(folders) for i in range(per_class))
    return sorted({p for p in map(_own_image, listed) if p})


def _clear_previous_run(out_dir):
    """Delete what an earlier run of this tool wrote (:func:`_previous_images`, its manifest, settings
    and prompts), and nothing else: other files, even ones named like its images, stay."""
    try:
        settings = _read_previous_settings(out_dir)
    except SynthesisError:
        settings = {}  # unreadable settings: the manifest's rows still name the images
    images = _previous_images(out_dir, settings)
    for rel in images:
        for path in (os.path.join(out_dir, rel), os.path.join(out_dir, rel + ".tmp")):
            if os.path.isfile(path):
                os.remove(path)
    for folder in sorted({os.path.dirname(rel) for rel in images}):
        path = os.path.join(out_dir, folder)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    for name in (MANIFEST, CONFIG, PROMPTS):
        for path in (os.path.join(out_dir, name), os.path.join(out_dir, name + ".tmp")):
            if os.path.isfile(path):
                os.remove(path)


def _check_out_dir(out_dir, overwrite):
    """Refuse an ``--out`` that is a file, or (with ``--overwrite``) a folder holding a manifest this tool did not write."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SynthesisError(f"--out {out_dir!r} is a file; give a folder (it is created if missing)")
    if (overwrite and os.path.isfile(os.path.join(out_dir, MANIFEST))
            and not os.path.isfile(os.path.join(out_dir, CONFIG))):
        raise SynthesisError(f"output folder {out_dir!r} holds a {MANIFEST} without {CONFIG}, so this tool did "
                             "not write it and --overwrite will not delete its images; choose another --out")


def _remove_stale_temps(out_dir, folders):
    for folder in folders:
        path = os.path.join(out_dir, folder)
        if os.path.isdir(path):
            for name in os.listdir(path):
                if name.endswith(".png.tmp") and _IMAGE_FILE.match(name):
                    os.remove(os.path.join(path, name))


@dataclasses.dataclass
class _Plan:
    """What image (class c, index i) is: file, prompt, seed."""
    class_names: list
    folders: list
    prompts: list
    images_per_class: int
    seed: int
    generator: str
    _seeds: dict = dataclasses.field(default_factory=dict)

    def image_seed(self, c, i):
        # Cached: deriving a seed costs ~10 us and the manifest is rewritten often.
        if c not in self._seeds:
            self._seeds[c] = [image_seed(self.seed, c, k) for k in range(self.images_per_class)]
        return self._seeds[c][i]

    def path(self, c, i):
        return f"{self.folders[c]}/{c}_{i}.png"

    def prompt(self, c, i):
        plist = self.prompts[c]
        return plist[i % len(plist)]["prompt"]

    def rows(self):
        for c, name in enumerate(self.class_names):
            for i in range(self.images_per_class):
                yield (c, i), (self.path(c, i), c, name, self.prompt(c, i),
                               self.image_seed(c, i), self.generator)


# ------------------------------------------------------------------- settings

def _read_previous_settings(out_dir):
    """The config of the run already in out_dir, {} for none, or an error."""
    config = os.path.join(out_dir, CONFIG)
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            raise SynthesisError(f"cannot read {config!r} ({_first_line(exc)}); pass --overwrite to replace "
                                 f"that run (deletes the images its {MANIFEST} lists, nothing else)") from exc
    if os.path.isfile(os.path.join(out_dir, MANIFEST)):
        raise SynthesisError(f"output folder {out_dir!r} holds a {MANIFEST} without {CONFIG}, so this tool did "
                             "not write it; choose another --out")
    return {}


def _check_previous_run(out_dir, identity, recipe, class_names, prompts):
    """Refuse a folder holding a run with other settings; return the prompts.

    ``prompts`` is None unless given by a prompts file; when resuming, the
    prompts the earlier run saved are returned so T5 need not run again.
    """
    previous = _read_previous_settings(out_dir)
    if not previous:
        return prompts
    diffs = _differences(previous, identity, identity.keys())
    if prompts is not None:  # a prompts file: what counts is its content
        diffs += _differences(previous, {"prompts_sha256": _prompts_digest(class_names, prompts)},
                              ["prompts_sha256"])
    elif previous.get("prompt_recipe") != recipe:
        diffs.append("prompt_recipe")
    if diffs:
        raise SynthesisError(f"output folder {out_dir!r} holds a run with different settings "
                             f"({'; '.join(diffs)}); pass --overwrite to replace it (deletes the images its "
                             f"{MANIFEST} lists, nothing else) or choose another --out")
    if prompts is None:
        path = os.path.join(out_dir, PROMPTS)
        prompts = load_prompts(path, class_names)
        if _prompts_digest(class_names, prompts) != previous.get("prompts_sha256"):
            raise SynthesisError(f"{path!r} was changed after the run started; "
                                 "pass --overwrite to start over")
    return prompts


def _differences(previous, current, keys):
    diffs = []
    for key in keys:
        old, new = previous.get(key), current.get(key)
        if old != new:
            short = all(isinstance(v, (int, float, str, type(None))) and len(str(v)) < 60
                        for v in (old, new))
            diffs.append(f"{key}: {old!r} -> {new!r}" if short else key)
    return diffs


def _resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise SynthesisError(f"unknown --device {device!r}; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SynthesisError(f"--device {device} requested but CUDA is not available")
    return str(dev)


def _resolve_dtype(dtype, device):
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise SynthesisError(f"unknown --dtype {dtype!r}; use auto, fp16, bf16 or fp32")
    return _DTYPES[dtype]


def _positive(value, flag):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SynthesisError(f"{flag} must be a positive integer (got {value!r})")


def _resolve_classes(classes, data_dir):
    """(class names, prompt names, canonical dataset name or None)."""
    if isinstance(classes, (list, tuple)):
        names = [str(n).strip() for n in classes if str(n).strip()]
        if not names:
            raise SynthesisError("the class list is empty")
        return names, [n.replace("_", " ") for n in names], None
    try:
        names = load_class_names(classes, data_dir)
        prompt_names = load_class_names(classes, data_dir, prompt_form=True)
    except (OSError, ValueError) as exc:
        raise SynthesisError(str(exc)) from exc
    dataset = None if os.path.isfile(classes) else canonical_name(classes)
    return names, prompt_names, dataset


# ------------------------------------------------------------------------ main

def synthesize(classes, out_dir, images_per_class, *, data_dir=None, model=DEFAULT_MODEL,
               prompt_mode="t5", prompt_model=DEFAULT_PROMPT_MODEL,
               prompts_per_class=DEFAULT_PROMPTS_PER_CLASS, prompts_file=None,
               image_size=None, batch_size=8, seed=0, device="auto", dtype="auto",
               num_inference_steps=50, guidance_scale=7.5, overwrite=False, progress=True):
    """Make (or finish) a synthetic set in out_dir; see the module docstring.

    ``classes`` is a known dataset name, a class file, or a list of names.
    Every check and model load happens before anything is written, so a
    SynthesisError leaves the disk untouched. On any interruption the
    manifest still lists every finished image; call again to resume.
    """
    _check_out_dir(out_dir, overwrite)
    _positive(images_per_class, "--images-per-class")
    _positive(batch_size, "--batch-size")
    _positive(num_inference_steps, "--num-inference-steps")
    if not isinstance(seed, int) or seed < 0:
        raise SynthesisError(f"--seed must be a non-negative integer (got {seed!r})")
    if prompt_mode not in ("t5", "template"):
        raise SynthesisError(f"unknown prompt mode {prompt_mode!r}; use t5 or template")
    if prompt_mode == "t5" and not prompts_file:
        _positive(prompts_per_class, "--prompts-per-class")
    class_names, prompt_names, dataset = _resolve_classes(classes, data_dir)
    if image_size is None:
        image_size = NATIVE_IMAGE_SIZE.get(dataset)
        if image_size is None:
            raise SynthesisError(f"--image-size is required for {dataset or 'a custom class list'}")
    _positive(image_size, "--image-size")
    device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)

    # What makes two runs produce different images; batch size and device only
    # change floating-point rounding, so they are recorded but not compared.
    identity = {
        "format_version": FORMAT_VERSION,
        "class_names": class_names,
        "model": model,
        "image_size": image_size,
        "seed": seed,
        "num_inference_steps": num_inference_steps,
        "guidance_scale": float(guidance_scale),
        "dtype": str(torch_dtype).replace("torch.", ""),
    }
    if prompts_file:
        prompts = load_prompts(prompts_file, class_names)
        recipe = {"mode": "file", "source": os.path.abspath(prompts_file)}
    else:
        prompts = None
        recipe = {"mode": prompt_mode}
        if prompt_mode == "t5":
            recipe.update(model=prompt_model, prompts_per_class=prompts_per_class, seed=seed)
        else:
            recipe.update(templates=list(TEMPLATES))

    if not overwrite:
        prompts = _check_previous_run(out_dir, identity, recipe, class_names, prompts)

    # Fail on a missing text-to-image model before spending time on prompts.
    _model_source(model, "text-to-image model", "--model", "model_index.json")
    if prompts is None:
        prompts = make_prompts(prompt_names, prompt_mode, prompt_model=prompt_model,
                               prompts_per_class=prompts_per_class, seed=seed, device=device,
                               progress=progress)
    pipe = load_text_to_image(model, device, torch_dtype)

    # Everything checked: from here on the output folder is written.
    os.makedirs(out_dir, exist_ok=True)
    if overwrite and os.path.isdir(out_dir):
        _clear_previous_run(out_dir)
    folders = folder_names(class_names)
    config = dict(identity, prompt_recipe=recipe,
                  prompts_sha256=_prompts_digest(class_names, prompts),
                  images_per_class=images_per_class, folders=folders,
                  class_source=dataset or (classes if isinstance(classes, str) else "list"),
                  batch_size=batch_size, device=device)
    # Prompts first: a config on disk promises its prompts.json for resuming.
    save_prompts(os.path.join(out_dir, PROMPTS), class_names, prompts, recipe)
    _atomic_write(os.path.join(out_dir, CONFIG), json.dumps(config, indent=1) + "\n")
    for folder in folders:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    _remove_stale_temps(out_dir, folders)

    plan = _Plan(class_names, folders, prompts, images_per_class, seed, model)
    written = _generate(pipe, plan, out_dir, image_size, batch_size,
                        num_inference_steps, float(guidance_scale), progress)
    return SynthesisResult(out_dir, os.path.join(out_dir, MANIFEST), written,
                           len(_scan_done(out_dir, folders, images_per_class)))


def _generate(pipe, plan, out_dir, image_size, batch_size, steps, guidance, progress):
    """Render the missing images; returns how many were written."""
    done = _scan_done(out_dir, plan.folders, plan.images_per_class)
    total = len(plan.class_names) * plan.images_per_class
    written, last_manifest, manifest_cost = 0, time.monotonic(), 0.0
    bar = tqdm(total=total, initial=len(done), unit="img", desc="synthesizing",
               disable=not progress, dynamic_ncols=True)
    try:
        for c in range(len(plan.class_names)):
            # Batches sit on a fixed grid and a batch with any missing image is
            # rendered whole: the same batches as an uninterrupted run, so the
            # same floating-point results (batch size can change rounding).
            for start in range(0, plan.images_per_class, batch_size):
                batch = range(start, min(start + batch_size, plan.images_per_class))
                if all((c, i) in done for i in batch):
                    continue
                images = _render(pipe, [plan.prompt(c, i) for i in batch],
                                 [plan.image_seed(c, i) for i in batch], steps, guidance)
                for i, image in zip(batch, images):
                    if (c, i) not in done:
                        path = os.path.join(out_dir, plan.path(c, i))
                        _write_png(_to_size(image, image_size), path)
                        done.add((c, i))
                        written += 1
                        bar.update(1)
                # Checkpoint the manifest now and then, less often for huge sets.
                if time.monotonic() - last_manifest > max(_MANIFEST_EVERY_S, 20 * manifest_cost):
                    started = time.monotonic()
                    _write_manifest(out_dir, plan, done)
                    last_manifest = time.monotonic()
                    manifest_cost = last_manifest - started
    finally:
        bar.close()
        _write_manifest(out_dir, plan, done)
    return written


def _render(pipe, prompts, seeds, steps, guidance):
    # One CPU generator per image: its noise depends on its seed alone, and
    # CPU noise is the same whatever device runs the model.
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.inference_mode():
        out = pipe(prompt=list(prompts), generator=generators, num_inference_steps=steps,
                   guidance_scale=guidance, output_type="pil")
    return out.images


# -------------------------------------------------------------------------- CLI

def build_parser():
    p = argparse.ArgumentParser(
        prog=command_name("rsmatch-synthesize", "data_tools.synthesize"),
        description="Make a synthetic image set for RS-SSL: prompts from class names "
                    "(T5 or templates), images from a text-to-image diffusion model. "
                    "Rerun the same command to resume.")
    p.add_argument("--classes", required=True,
                   help="cifar10, cifar100, digits, fashion_mnist, tiny_imagenet, imagenet, or a text file "
                        "with one class name per line (label order)")
    p.add_argument("--images-per-class", type=int, required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-dir", default="./data",
                   help="dataset root for tiny_imagenet/imagenet class names (default ./data)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"text-to-image model: hub id or local folder (default {DEFAULT_MODEL})")
    p.add_argument("--prompt-mode", choices=("t5", "template"), default="t5",
                   help="t5: sentences sampled from a keyword-to-sentence model; "
                        "template: 'a photo of a {}' and similar (default t5)")
    p.add_argument("--prompt-model", default=DEFAULT_PROMPT_MODEL,
                   help=f"text-to-text model for t5 mode (default {DEFAULT_PROMPT_MODEL})")
    p.add_argument("--prompts-per-class", type=int, default=DEFAULT_PROMPTS_PER_CLASS,
                   help="distinct prompts sampled per class in t5 mode; image i uses "
                        f"prompt i mod n (default {DEFAULT_PROMPTS_PER_CLASS})")
    p.add_argument("--prompts-file", help="reuse the prompts.json of another run")
    p.add_argument("--image-size", type=int,
                   help="output size in pixels (default: the dataset's, e.g. 32 for cifar; "
                        "required for other class lists)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                   help="auto: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--num-inference-steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous run of this tool in --out (the images its manifest and "
                        "settings name, the manifest, settings and prompts; nothing else) and start over "
                        "(needed when the settings differ)")
    return p


def main(argv=None):
    """CLI entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        result = synthesize(
            args.classes, args.out, args.images_per_class, data_dir=args.data_dir,
            model=args.model, prompt_mode=args.prompt_mode, prompt_model=args.prompt_model,
            prompts_per_class=args.prompts_per_class, prompts_file=args.prompts_file,
            image_size=args.image_size, batch_size=args.batch_size, seed=args.seed,
            device=args.device, dtype=args.dtype, num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale, overwrite=args.overwrite)
    except SynthesisError as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"{result.written} new images; {result.total} listed in {result.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
