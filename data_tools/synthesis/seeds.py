"""Seeds of the synthesis: one per image and one per T5 sampling call, derived from the run's seed.

Each image has its own seed derived from (seed, class, image), so a resumed run
writes the same pixels as an uninterrupted one on the same device, whatever
the batching.
"""
import numpy as np

# Distinct SeedSequence spawn keys keep image and prompt seeds independent.
_IMAGE_STREAM, _PROMPT_STREAM = 0, 1


def _derived_seed(seed: int, *key: int) -> int:
    """63-bit seed from (seed, *key); 63 bits keep torch's manual_seed happy."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def image_seed(seed: int, class_idx: int, image_idx: int) -> int:
    """The seed of one image, independent of batching and resumption."""
    return _derived_seed(seed, _IMAGE_STREAM, class_idx, image_idx)


def prompt_seed(seed: int, class_idx: int, call_idx: int) -> int:
    """The seed of one T5 sampling call for a class."""
    return _derived_seed(seed, _PROMPT_STREAM, class_idx, call_idx)
