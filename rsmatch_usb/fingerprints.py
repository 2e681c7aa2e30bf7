"""Short hashes of model state, logged at the end of a run to show that DDP ranks stayed identical."""
import hashlib
import logging
import re
from typing import Dict, Iterable

import torch


def fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """The first 16 hex digits of the SHA-256 of ``tensors``' bytes, in order."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def log_fingerprint(logger: logging.Logger, what: str, value: str) -> None:
    """Log ``what`` and its fingerprint ``value`` once, at INFO.

    Under DDP every rank's value is gathered and rank 0 logs them all on one
    line (a WARNING when they differ), so the line also reaches the run's
    log.txt, which only rank 0 writes. USB's train.py logs its end-of-run line
    per rank at WARNING level; a normal end is not a warning.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        logger.info(f"{what} {value}")
        return
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if dist.get_rank() != 0:
        return
    per_rank = ", ".join(f"rank {rank}: {v}" for rank, v in enumerate(values))
    if len(set(values)) == 1:
        logger.info(f"{what} {per_rank} (ranks in sync)")
    else:
        logger.warning(f"{what} {per_rank} (the ranks DIFFER)")


def logged_fingerprints(text: str, what: str) -> Dict[str, str]:
    """``{rank: fingerprint}`` from the line :func:`log_fingerprint` wrote for ``what`` in log ``text``.

    ``{"0": value}`` for a run without DDP; ``{}`` when no such line is there.
    """
    for line in text.splitlines():
        if what in line:
            tail = line.split(what, 1)[1]
            per_rank = re.findall(r"rank (\d+): (\w+)", tail)
            return dict(per_rank) if per_rank else {"0": tail.split()[0]}
    return {}
