"""Prompts per class: sentences sampled from a keyword-to-sentence T5 model, or fixed templates.

As He et al. (ICLR 2023) did for their "language enhancement": the class name
goes into a T5 model fine-tuned on CommonGen, which samples varied sentences
about it; the sentences stray from the class now and then, part of the
contamination RS-SSL studies. ``prompts.json`` keeps them, so a resumed or
another run reuses them without T5.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from tqdm import tqdm

from data_tools.errors import InputError, first_line
from data_tools.number_ranges import NumberRange, check_number

from .models import DEFAULT_PROMPT_MODEL, load_prompt_model
from .output import write_text
from .seeds import prompt_seed

DEFAULT_PROMPTS_PER_CLASS = 100
FORMAT_VERSION = 1  # of prompts.json and synthesis_config.json
MODES = ("t5", "template")

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

_T5_MAX_NEW_TOKENS = 32
_T5_SAMPLES_PER_CALL = 32

Prompt = Dict[str, Any]  # {"prompt": text, "seed": the T5 call's seed or None}


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InputError(f"unknown prompt mode {mode!r}; use t5 or template")


def make_prompts(prompt_names: Sequence[str], mode: str = "t5", *,
                 prompt_model: Union[str, Tuple[Any, Any]] = DEFAULT_PROMPT_MODEL,
                 prompts_per_class: int = DEFAULT_PROMPTS_PER_CLASS, seed: int = 0, device: str = "cpu",
                 progress: bool = False) -> List[List[Prompt]]:
    """Prompts per class: a list (one per class) of ``{"prompt", "seed"}``.

    ``template`` formats TEMPLATES with each name (seed None). ``t5`` samples
    sentences from a keyword-to-sentence model fed with the class name, as
    He et al. did; duplicates are dropped, so a class may get fewer than
    ``prompts_per_class`` prompts (images cycle through them anyway).
    ``prompt_model`` is a hub id, a folder, or a loaded (tokenizer, model).
    """
    check_mode(mode)
    if mode == "template":
        return [[{"prompt": t.format(name), "seed": None} for t in TEMPLATES]
                for name in prompt_names]
    prompts_per_class = check_number("--prompts-per-class", prompts_per_class, NumberRange(int, 1))
    if isinstance(prompt_model, (tuple, list)):
        tokenizer, model = prompt_model
    else:
        tokenizer, model = load_prompt_model(prompt_model, device)
    names = tqdm(prompt_names, desc="prompts", unit="class", disable=not progress)
    return [_sample_prompts(tokenizer, model, name, c, prompts_per_class, seed)
            for c, name in enumerate(names)]


def _sample_prompts(tokenizer: Any, model: Any, name: str, class_idx: int, count: int, seed: int) -> List[Prompt]:
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


def prompt_recipe(mode: str, prompt_model: str, prompts_per_class: int, seed: int,
                  prompts_file: Optional[str] = None) -> Dict[str, Any]:
    """How the prompts are made, as recorded in the settings: a resumed run must make them the same way."""
    if prompts_file:
        return {"mode": "file", "source": os.path.abspath(prompts_file)}
    if mode == "t5":
        return {"mode": mode, "model": prompt_model, "prompts_per_class": prompts_per_class, "seed": seed}
    return {"mode": mode, "templates": list(TEMPLATES)}


def prompts_digest(class_names: Sequence[str], prompts: Sequence[Sequence[Prompt]]) -> str:
    """SHA-256 of the prompt texts per class: what a run's settings record of its prompts."""
    canonical = json.dumps([[name, [p["prompt"] for p in plist]]
                            for name, plist in zip(class_names, prompts)],
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save_prompts(path: str, class_names: Sequence[str], prompts: Sequence[Sequence[Prompt]],
                 recipe: Mapping[str, Any]) -> None:
    """Write prompts.json: the recipe and, per class, its prompts with seeds."""
    doc = {"format_version": FORMAT_VERSION, "recipe": recipe,
           "classes": [{"label": c, "class_name": name, "prompts": plist}
                       for c, (name, plist) in enumerate(zip(class_names, prompts))]}
    write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def load_prompts(path: str, class_names: Sequence[str]) -> List[List[Prompt]]:
    """Read a prompts.json written by this tool and match it to class_names."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        by_label = {int(e["label"]): (e["class_name"], [
            {"prompt": str(p["prompt"]), "seed": p.get("seed")}
            for p in e["prompts"] if str(p["prompt"]).strip()]) for e in doc["classes"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read prompts file {path!r}: "
                         f"{type(exc).__name__}: {first_line(exc)}") from exc
    prompts = []
    for c, name in enumerate(class_names):
        found, plist = by_label.get(c, (None, []))
        if found != name:
            raise InputError(f"prompts file {path!r} does not match the classes: label {c} "
                             f"is {found!r} there, {name!r} here")
        if not plist:
            raise InputError(f"prompts file {path!r} has no prompt for class {name!r}")
        prompts.append(plist)
    return prompts
