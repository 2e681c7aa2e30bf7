"""Measurements of a synthetic image set against real images, shared by the synthetic-set scripts.

Two questions, answered with scikit-learn on raw pixels so the figures are
cheap and reproducible on CPU: does a classifier of real images see the
intended class in the synthetic images (``real_classifier``), and can a
linear probe tell synthetic from real images (``probe_auroc``)?
"""

from __future__ import annotations

import numpy as np


def pixel_features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H*W) in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def real_classifier(images: np.ndarray, labels: np.ndarray, max_iter: int = 3000):
    """Multinomial logistic regression on pixels, trained on real images."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=max_iter, C=0.1).fit(pixel_features(images), labels)


def probe_auroc(real_features: np.ndarray, synth_features: np.ndarray, real_strata: np.ndarray,
                synth_strata: np.ndarray, seed: int) -> float:
    """Held-out AUROC of a linear real-vs-synthetic probe (standardised logistic regression).

    Half of each side (stratified by ``*_strata``, e.g. class) trains the probe,
    the other half scores it, so the figure is not a memorisation of the images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real_features, synth_features])
    is_synth = np.r_[np.zeros(len(real_features)), np.ones(len(synth_features))]
    # Distinct strata per side keep the real/synthetic ratio equal in both halves.
    offset = int(real_strata.max()) + 1
    strata = np.r_[real_strata, synth_strata + offset]
    tr, te = train_test_split(np.arange(len(x)), test_size=0.5, stratify=strata, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    probe.fit(x[tr], is_synth[tr])
    return float(roc_auc_score(is_synth[te], probe.predict_proba(x[te])[:, 1]))
