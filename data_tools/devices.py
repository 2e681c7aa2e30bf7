"""Where a command runs: the one reading of a ``device`` setting (auto, cpu, cuda).

The train command's ``device`` key, ``rsmatch-detect --device`` and
``rsmatch-synthesize --device`` all resolve through :func:`resolve_device`, so
``auto`` means the same everywhere and a GPU that is asked for but not there
is the same one error line. Imports nothing of the project but
:mod:`data_tools.errors`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .errors import UserError

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str | None, *, setting: str = "device", indexed: bool = False,
                   gpu_request: Sequence[str] = ()) -> str:
    """``requested`` (auto, cpu, cuda; ``cuda:N`` too when ``indexed``) as the torch device to use.

    ``auto`` is CUDA when torch sees a GPU, else the CPU. ``setting`` names
    where the value came from in error lines: ``device`` (a config key) or a
    flag such as ``--device``. ``gpu_request``: the config's keys that ask for
    a GPU (e.g. ``gpu: 0``); under ``auto`` they make a GPU a requirement, so a
    job without one (or with a driver too old for torch) stops with one error
    line instead of quietly training on the CPU.
    """
    flag = setting.startswith("-")
    use_cpu, or_auto = (f"{setting} cpu", "(or auto)") if flag else (f"'{setting}: cpu'", "(or 'auto')")
    text = str(requested or "auto").lower()
    choices = ", ".join(CHOICES + (("cuda:N",) if indexed else ()))
    try:
        device = torch.device(text) if text != "auto" else None
    except (RuntimeError, ValueError):
        device = None
    if text != "auto" and (device is None or device.type not in CHOICES
                           or (device.index is not None and not indexed) or text.endswith(":")):
        fix = f"give {setting} one of them" if flag else f"fix the '{setting}' key"
        raise UserError(f"{setting}: {requested!r} is not one of {choices}; {fix}")
    available = torch.cuda.is_available()
    if device is not None and device.type == "cuda" and not available:
        raise UserError(f"{setting}: {text} was requested but no CUDA GPU is visible to torch; "
                        f"set {use_cpu} {or_auto} or run on a machine with a GPU")
    if text == "auto" and gpu_request and not available:
        raise UserError(f"{setting}: auto found no CUDA GPU visible to torch, but the config asks for one "
                        f"({', '.join(gpu_request)}); run where torch sees a GPU, or set {use_cpu} "
                        "to train on the CPU")
    if text == "auto":
        return "cuda" if available else "cpu"
    return str(device)
