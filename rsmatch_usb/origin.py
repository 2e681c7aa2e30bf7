"""Ground truth of where unlabeled samples come from, and detector AUROC overall and per synthetic source.

RS-SSL datasets (:mod:`data_tools`) keep, beside each unlabeled image,
``is_synthetic`` and ``source`` (an index into ``source_names``; 0 is
``"real"``). The evaluation hooks read them here; a train step reads them
only under the diagnostic ``detector_oracle`` (RSMatch routing by the truth).
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from sklearn.metrics import roc_auc_score


def unlabeled_origin(algorithm: Any) -> Optional[Tuple[np.ndarray, np.ndarray, list]]:
    """``(is_synthetic, source, source_names)`` of the unlabeled set, or None when the dataset has no flags."""
    data = getattr(algorithm.dataset_dict["train_ulb"], "data", None)
    flags = getattr(data, "is_synthetic", None)
    if flags is None:
        return None
    flags = np.asarray(flags, dtype=bool)
    source = getattr(data, "source", None)
    names = list(getattr(data, "source_names", None) or ("real", "synthetic"))
    source = flags.astype(np.int64) if source is None else np.asarray(source, dtype=np.int64)
    return flags, source, names


def auroc_by_source(key: str, truth: Sequence[bool], scores: Sequence[float], source: Sequence[int],
                    names: Sequence[str]) -> Dict[str, float]:
    """``{key: AUROC}`` over all samples, plus ``{key/<name>: AUROC}`` of each synthetic source vs the real.

    Per-source values are given only when two or more synthetic sources are
    present, so a single-source run logs what it logged before.
    """
    truth, scores, source = np.asarray(truth, dtype=bool), np.asarray(scores), np.asarray(source)
    out = {key: float(roc_auc_score(truth, scores))}
    present = [s for s in np.unique(source[truth]).tolist()]
    real = ~truth
    if len(present) > 1 and real.any():
        for s in present:
            mask = real | (source == s)
            out[f"{key}/{names[s]}"] = float(roc_auc_score(truth[mask], scores[mask]))
    return out
