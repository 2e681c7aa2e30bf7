"""Reading and writing checkpoint files safely: no code run on load, no torn file on a crash.

Every checkpoint this tool reads comes through :func:`load` (``weights_only=True``:
tensors and plain containers only, so a crafted file cannot run code). Every
checkpoint USB's algorithms write goes through
:func:`data_tools.atomic.torch_save` (installed over
``AlgorithmBase.save_model`` by :mod:`rsmatch_usb.runtime`), which replaces the
file only once the new one is completely on disk.
"""
from __future__ import annotations

import pickle
import re
from typing import Any

import torch


class CheckpointError(Exception):
    """A checkpoint file that cannot be loaded safely; the message is one line naming why."""


def load(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; raises :class:`CheckpointError` with a one-line reason."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a paragraph; the phrase after "WeightsUnpickler error:" names the problem.
        text = " ".join(str(exc).split())
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global| Please use"
                          r"| Check the documentation|$)", text)
        reason = found.group(1).strip() if found else text[:200]
        if "global" in reason.lower():
            raise CheckpointError(f"refused: it holds Python objects other than tensors, which could run code "
                                  f"({reason})") from None
        raise CheckpointError(f"unreadable (UnpicklingError: {reason})") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "no detail"
        raise CheckpointError(f"unreadable ({type(exc).__name__}: {detail})") from None


def iterations(path: str) -> int:
    """Completed iterations recorded in the USB checkpoint at ``path``; raises :class:`CheckpointError`."""
    ckpt = load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "it" not in ckpt:
        raise CheckpointError("not a USB training checkpoint (no 'model'/'it' entries)")
    return int(ckpt["it"])

