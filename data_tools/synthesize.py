"""Make a synthetic image set for RS-SSL with a text-to-image diffusion model (``rsmatch-synthesize``).

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

This module is the driver and the command line; the parts are in
:mod:`data_tools.synthesis` (models, prompts, rendering, output folder).

    python -m data_tools.synthesize --classes cifar10 --images-per-class 500 \\
        --out data/synthetic/cifar10_sd14
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from data_tools.class_names import canonical_name, load_class_names
from data_tools.devices import resolve_device
from data_tools.errors import InputError, UserError, command_name, report
from data_tools.number_ranges import NumberRange, check_number
from data_tools.synthesis import output, prompts as prompting
from data_tools.synthesis.models import (DEFAULT_MODEL, DEFAULT_PROMPT_MODEL, load_text_to_image, resolve_dtype,
                                         text_to_image_source)
from data_tools.synthesis.prompts import DEFAULT_PROMPTS_PER_CLASS, FORMAT_VERSION, Prompt
from data_tools.synthesis.rendering import Plan, generate

# Output size when --image-size is not given: the dataset's own resolution.
NATIVE_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "tiny_imagenet": 64, "imagenet": 224}

_COUNT = NumberRange(int, 1)


@dataclasses.dataclass
class SynthesisResult:
    out_dir: str
    manifest: str
    written: int  # images made by this call
    total: int  # images listed in the manifest


def _resolve_classes(classes: Union[str, Sequence[str]], data_dir: Optional[str]
                     ) -> Tuple[List[str], List[str], Optional[str]]:
    """(class names, prompt names, canonical dataset name or None)."""
    if isinstance(classes, (list, tuple)):
        names = [str(n).strip() for n in classes if str(n).strip()]
        if not names:
            raise InputError("the class list is empty")
        return names, [n.replace("_", " ") for n in names], None
    try:
        names = load_class_names(classes, data_dir)
        prompt_names = load_class_names(classes, data_dir, prompt_form=True)
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    dataset = None if os.path.isfile(classes) else canonical_name(classes)
    return names, prompt_names, dataset


def _check_previous_run(out_dir: str, identity: Mapping[str, Any], recipe: Mapping[str, Any],
                        class_names: Sequence[str], prompts: Optional[List[List[Prompt]]]
                        ) -> Optional[List[List[Prompt]]]:
    """Refuse a folder holding a run with other settings; return the prompts.

    ``prompts`` is None unless given by a prompts file; when resuming, the
    prompts the earlier run saved are returned so T5 need not run again.
    """
    previous = output.read_previous_settings(out_dir)
    if not previous:
        return prompts
    diffs = output.differences(previous, identity, identity.keys())
    if prompts is not None:  # a prompts file: what counts is its content
        diffs += output.differences(previous, {"prompts_sha256": prompting.prompts_digest(class_names, prompts)},
                                    ["prompts_sha256"])
    elif previous.get("prompt_recipe") != recipe:
        diffs.append("prompt_recipe")
    if diffs:
        raise InputError(f"output folder {out_dir!r} holds a run with different settings "
                         f"({'; '.join(diffs)}); pass --overwrite to replace it (deletes the images its "
                         f"{output.MANIFEST} lists, nothing else) or choose another --out")
    if prompts is None:
        path = os.path.join(out_dir, output.PROMPTS)
        prompts = prompting.load_prompts(path, class_names)
        if prompting.prompts_digest(class_names, prompts) != previous.get("prompts_sha256"):
            raise InputError(f"{path!r} was changed after the run started; pass --overwrite to start over")
    return prompts


def synthesize(classes: Union[str, Sequence[str]], out_dir: str, images_per_class: int, *,
               data_dir: Optional[str] = None, model: str = DEFAULT_MODEL, prompt_mode: str = "t5",
               prompt_model: str = DEFAULT_PROMPT_MODEL, prompts_per_class: int = DEFAULT_PROMPTS_PER_CLASS,
               prompts_file: Optional[str] = None, image_size: Optional[int] = None, batch_size: int = 8,
               seed: int = 0, device: str = "auto", dtype: str = "auto", num_inference_steps: int = 50,
               guidance_scale: float = 7.5, overwrite: bool = False, progress: bool = True) -> SynthesisResult:
    """Make (or finish) a synthetic set in out_dir; see the module docstring.

    ``classes`` is a known dataset name, a class file, or a list of names.
    Every check and model load happens before anything is written, so a
    bad input (a :class:`~data_tools.errors.UserError`) leaves the disk
    untouched. On any interruption the manifest still lists every finished
    image; call again to resume.
    """
    output.check_out_dir(out_dir, overwrite)
    images_per_class = check_number("--images-per-class", images_per_class, _COUNT)
    batch_size = check_number("--batch-size", batch_size, _COUNT)
    num_inference_steps = check_number("--num-inference-steps", num_inference_steps, _COUNT)
    seed = check_number("--seed", seed, NumberRange(int, 0))
    prompting.check_mode(prompt_mode)
    if prompt_mode == "t5" and not prompts_file:
        prompts_per_class = check_number("--prompts-per-class", prompts_per_class, _COUNT)
    class_names, prompt_names, dataset = _resolve_classes(classes, data_dir)
    if image_size is None:
        image_size = NATIVE_IMAGE_SIZE.get(dataset)
        if image_size is None:
            raise InputError(f"--image-size is required for {dataset or 'a custom class list'}")
    image_size = check_number("--image-size", image_size, _COUNT)
    device = resolve_device(device, setting="--device", indexed=True)
    torch_dtype = resolve_dtype(dtype, device)

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
    recipe = prompting.prompt_recipe(prompt_mode, prompt_model, prompts_per_class, seed, prompts_file)
    prompts = prompting.load_prompts(prompts_file, class_names) if prompts_file else None
    if not overwrite:
        prompts = _check_previous_run(out_dir, identity, recipe, class_names, prompts)

    # Fail on a missing text-to-image model before spending time on prompts.
    text_to_image_source(model)
    if prompts is None:
        prompts = prompting.make_prompts(prompt_names, prompt_mode, prompt_model=prompt_model,
                                         prompts_per_class=prompts_per_class, seed=seed, device=device,
                                         progress=progress)
    pipe = load_text_to_image(model, device, torch_dtype)

    # Everything checked: from here on the output folder is written.
    os.makedirs(out_dir, exist_ok=True)
    if overwrite and os.path.isdir(out_dir):
        output.clear_previous_run(out_dir)
    folders = output.folder_names(class_names)
    config = dict(identity, prompt_recipe=recipe,
                  prompts_sha256=prompting.prompts_digest(class_names, prompts),
                  images_per_class=images_per_class, folders=folders,
                  class_source=dataset or (classes if isinstance(classes, str) else "list"),
                  batch_size=batch_size, device=device)
    # Prompts first: a config on disk promises its prompts.json for resuming.
    prompting.save_prompts(os.path.join(out_dir, output.PROMPTS), class_names, prompts, recipe)
    output.write_text(os.path.join(out_dir, output.CONFIG), json.dumps(config, indent=1) + "\n")
    for folder in folders:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    output.remove_stale_temps(out_dir, folders)

    plan = Plan(class_names, folders, prompts, images_per_class, seed, model)
    written = generate(pipe, plan, out_dir, image_size, batch_size, num_inference_steps, float(guidance_scale),
                       progress)
    return SynthesisResult(out_dir, os.path.join(out_dir, output.MANIFEST), written,
                           len(output.scan_done(out_dir, folders, images_per_class)))


# -------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--prompt-mode", choices=prompting.MODES, default="t5",
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


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = synthesize(
            args.classes, args.out, args.images_per_class, data_dir=args.data_dir,
            model=args.model, prompt_mode=args.prompt_mode, prompt_model=args.prompt_model,
            prompts_per_class=args.prompts_per_class, prompts_file=args.prompts_file,
            image_size=args.image_size, batch_size=args.batch_size, seed=args.seed,
            device=args.device, dtype=args.dtype, num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale, overwrite=args.overwrite)
    except UserError as exc:
        return report(exc, parser.prog)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"{result.written} new images; {result.total} listed in {result.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
