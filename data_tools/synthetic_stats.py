"""Measurements of a synthetic image set against real images, shared by the synthetic-set scripts.

Two questions, answered with scikit-learn on raw pixels so the figures are
cheap and reproducible on CPU: does a classifier of real images see the
intended class in the synthetic images (``real_classifier``), and can a
linear probe tell synthetic from real images (``probe_auroc``)?
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def pixel_features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H*W) in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def real_classifier(images: np.ndarray, labels: np.ndarray, max_iter: int = 3000) -> Any:
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


# ------------------------------------------------------------ CNN classifier
def cnn_classifier(num_classes: int = 10) -> torch.nn.Module:
    """A small CNN for 28x28 grayscale images (two conv blocks, one hidden layer): about 90% on Fashion-MNIST.

    A linear pixel classifier reads many real garments as a neighbouring class
    (84% on Fashion-MNIST's test images), which caps what an intended-class
    share can show; this one is the judge of the synthetic fashion sets.
    """
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # 28 -> 14
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(128, num_classes))


def _to_input(images: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1.0


def train_cnn_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 8, batch_size: int = 128,
                         lr: float = 1e-3, seed: int = 0) -> torch.nn.Module:
    """Train :func:`cnn_classifier` on uint8 (N, 28, 28) images with flips and 2-px shifts; eval mode on return."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = cnn_classifier(int(labels.max()) + 1)
        x_all, y_all = _to_input(images), torch.from_numpy(labels).long()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(x_all) // batch_size))
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x_all), generator=gen).split(batch_size):
                x = x_all[idx]
                flip = torch.rand(len(x), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
                x = torch.roll(x, (dy, dx), (2, 3))
                loss = F.cross_entropy(net(x), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net.eval()


def cnn_outputs(net: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted class, penultimate features)`` of uint8 (N, 28, 28) images."""
    import torch

    preds, feats = [], []
    body, head = net[:-2], net[-2:]  # features: the hidden layer's activations (before dropout)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            h = body(_to_input(images[start:start + batch_size]))
            feats.append(h.numpy())
            preds.append(head(h).argmax(1).numpy())
    return np.concatenate(preds), np.concatenate(feats)


def within_class_spread(features: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over classes of the mean pairwise Euclidean distance between a class's feature vectors."""
    from sklearn.metrics import pairwise_distances

    spreads = []
    for c in range(num_classes):
        f = features[labels == c]
        if len(f) > 1:
            d = pairwise_distances(f)
            spreads.append(d.sum() / (len(f) * (len(f) - 1)))
    return float(np.mean(spreads))
