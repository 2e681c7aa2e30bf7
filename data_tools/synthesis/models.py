"""The synthesis's two models: a text-to-text prompt model (T5) and a diffusers text-to-image pipeline.

Loading only: a hub id or a local folder, found without stalling when the hub
is unreachable, loaded onto a device in a dtype. What the models then do is in
:mod:`.prompts` (T5 sampling) and :mod:`.rendering` (the pipeline calls).
"""
from __future__ import annotations

import importlib
import os
import urllib.error
import urllib.request
from typing import Any, Dict, Tuple

import torch

from data_tools.errors import InputError, first_line

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
# T5-base fine-tuned on CommonGen (keywords -> sentence); the model He et al.
# (ICLR 2023) used for their "language enhancement" prompts.
DEFAULT_PROMPT_MODEL = "mrm8488/t5-base-finetuned-common_gen"

DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def _hub_reachable(timeout: float = 5.0) -> bool:
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


def _in_hf_cache(repo_id: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # invalid repo id, unusual cache layout: treat as absent
        return False


def model_source(name: str, what: str, flag: str, probe_file: str) -> Tuple[str, Dict[str, Any]]:
    """Return (name, from_pretrained kwargs) or raise a one-line error.

    from_pretrained on an unreachable hub can stall on retries, so the
    network is only tried when the model is neither a folder nor cached and
    a quick probe says the hub answers.
    """
    if os.path.isdir(name):
        return name, {}
    hint = f"download it elsewhere and pass {flag} /path/to/folder"
    if os.path.isabs(name) or name.startswith((".", "~")):
        raise InputError(f"cannot load {what} {name!r} (no such folder); {hint}")
    if _in_hf_cache(name, probe_file):
        return name, {"local_files_only": True}
    if _hub_reachable():
        return name, {}
    raise InputError(f"cannot load {what} {name!r} (not a local folder, not in the "
                     f"Hugging Face cache, and the hub is unreachable); {hint}")


def text_to_image_source(model: str) -> Tuple[str, Dict[str, Any]]:
    """:func:`model_source` of a text-to-image model (``--model``)."""
    return model_source(model, "text-to-image model", "--model", "model_index.json")


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"synthesis needs {module}: pip install 'rsmatch-usb[synth]'") from exc


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``--dtype`` (auto, fp16, bf16, fp32) as a torch dtype; auto is fp16 on CUDA, fp32 on the CPU."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}; use auto, fp16, bf16 or fp32")
    return DTYPES[dtype]


def _dtype_kwarg(dtype: torch.dtype) -> Dict[str, torch.dtype]:
    """from_pretrained's dtype keyword: diffusers renamed torch_dtype to dtype."""
    try:
        from diffusers.utils import deprecation_utils
        renamed = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        renamed = False
    return {"dtype" if renamed else "torch_dtype": dtype}


def load_text_to_image(model: str, device: str, dtype: torch.dtype) -> Any:
    """Load a diffusers text-to-image pipeline onto device in dtype."""
    _require("diffusers")
    from diffusers import AutoPipelineForText2Image
    source, kwargs = text_to_image_source(model)
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(source, **kwargs, **_dtype_kwarg(dtype))
        pipe = pipe.to(device)
    except Exception as exc:
        raise InputError(f"cannot load text-to-image model {model!r}: {first_line(exc)}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_prompt_model(prompt_model: str, device: str) -> Tuple[Any, Any]:
    """Load a text-to-text (seq2seq) model and its tokenizer, in float32.

    T5 overflows in float16, and the model is small next to the diffusion one.
    """
    _require("transformers")
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    source, kwargs = model_source(prompt_model, "prompt model", "--prompt-model", "config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs).to(device).eval()
    except Exception as exc:
        raise InputError(f"cannot load prompt model {prompt_model!r}: {first_line(exc)}") from exc
    return tokenizer, model
