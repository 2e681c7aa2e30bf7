"""Hooks that run an algorithm's outlier detector over the unlabeled set.

An algorithm that uses them defines ``outlier_score(logits, head_outputs)``:
one score per sample, higher meaning "more likely an outlier". OpenMatch
scores with its one-vs-all head; IOMatch reuses the AUROC hook with its
open-set head.
"""
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from semilearn.core.hooks import Hook
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, Dataset

from rsmatch_usb.heads import unwrap

# Unlabeled samples scored for eval/synthetic_auroc: enough for an AUROC within ~0.02,
# few enough to cost well under one evaluation of a CIFAR-sized test set.
MAX_AUROC_SAMPLES = 1000


class EvalView(Dataset):
    """Images of a USB dataset under another transform (the evaluation one), unaugmented."""

    def __init__(self, dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        img, _ = self.dataset.__sample__(idx)
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        return self.transform(img)


@torch.no_grad()
def score_unlabeled(algorithm, indices):
    """``algorithm.outlier_score`` of the unlabeled samples ``indices``, a CPU float tensor.

    Uses the online backbone and heads in eval mode: the heads have no EMA copy,
    so pairing them with the EMA backbone would mix two different networks.
    """
    view = EvalView(algorithm.dataset_dict["train_ulb"], algorithm.dataset_dict["eval"].transform)
    # An explicit generator keeps the DataLoader from drawing its seed from the
    # global RNG, so scoring does not shift the training run's random stream.
    loader = DataLoader(view, batch_size=algorithm.args.eval_batch_size, sampler=indices.tolist(),
                        num_workers=algorithm.args.num_workers, generator=torch.Generator())
    model, heads = unwrap(algorithm.model), unwrap(algorithm.extra_heads)
    device = next(model.parameters()).device
    model_mode, heads_mode = model.training, heads.training
    model.eval()
    heads.eval()
    try:
        scores = []
        for x in loader:
            out = model(x.to(device))
            scores.append(algorithm.outlier_score(out["logits"], heads(out["feat"])).float().cpu())
    finally:
        model.train(model_mode)
        heads.train(heads_mode)
    return torch.cat(scores) if scores else torch.zeros(0)


def synthetic_flags(algorithm):
    """Ground-truth synthetic flags of the unlabeled set, or None when the dataset has none."""
    data = getattr(algorithm.dataset_dict["train_ulb"], "data", None)
    flags = getattr(data, "is_synthetic", None)
    return None if flags is None else np.asarray(flags, dtype=bool)


class SyntheticAUROCHook(Hook):
    """Logs ``eval/synthetic_auroc``: how well the outlier score ranks synthetic unlabeled images first.

    Runs when USB's EvaluationHook does (register it after that hook), on the
    main process, only when the unlabeled set has both real and synthetic
    images, and on a fixed seeded subset of at most ``max_samples`` of them.
    """

    def __init__(self, max_samples=MAX_AUROC_SAMPLES):
        super().__init__()
        self.max_samples = max_samples
        self.indices = None
        self.flags = None

    def before_run(self, algorithm):
        flags = synthetic_flags(algorithm)
        if flags is None or flags.all() or not flags.any():
            return
        generator = torch.Generator().manual_seed(algorithm.args.seed)
        indices = torch.randperm(len(flags), generator=generator)[:self.max_samples].sort().values
        subset = flags[indices.numpy()]
        if subset.all() or not subset.any():
            return
        self.indices, self.flags = indices, subset

    def after_train_step(self, algorithm):
        if self.indices is None:
            return
        if not (self.every_n_iters(algorithm, algorithm.num_eval_iter) or self.is_last_iter(algorithm)):
            return
        if algorithm.distributed and algorithm.rank % algorithm.ngpus_per_node != 0:
            return
        scores = score_unlabeled(algorithm, self.indices).numpy()
        algorithm.log_dict["eval/synthetic_auroc"] = float(roc_auc_score(self.flags, scores))


class InlierSelectionHook(Hook):
    """OpenMatch's inlier selection over the whole unlabeled set.

    From iteration ``start_fix`` on, and again every ``select_interval``
    iterations (OpenMatch re-selects once per epoch), every unlabeled sample is
    scored and those with outlier score below 0.5 are kept for FixMatch. Under
    DDP each rank scores a shard and the shards are summed, so all ranks hold
    the same selection. ``inlier_mask`` is saved in checkpoints.
    """

    def __init__(self, num_ulb, start_fix, select_interval):
        super().__init__()
        self.start_fix = start_fix
        self.select_interval = max(1, select_interval)
        self.inlier_mask = torch.zeros(num_ulb, dtype=torch.bool)

    def due(self, it):
        return it >= self.start_fix and (it - self.start_fix) % self.select_interval == 0

    def before_train_step(self, algorithm):
        if self.due(algorithm.it):
            self.select(algorithm)

    def select(self, algorithm):
        num_ulb = len(self.inlier_mask)
        indices = torch.arange(num_ulb)
        distributed = algorithm.distributed and dist.is_initialized()
        if distributed:
            indices = indices[dist.get_rank()::dist.get_world_size()]
        device = next(unwrap(algorithm.model).parameters()).device
        scores = torch.zeros(num_ulb, device=device)
        scores[indices.to(device)] = score_unlabeled(algorithm, indices).to(device)
        if distributed:
            dist.all_reduce(scores)
        self.inlier_mask = (scores < 0.5).cpu()

        message = f"OpenMatch: {int(self.inlier_mask.sum())}/{num_ulb} unlabeled samples selected as inliers"
        flags = synthetic_flags(algorithm)
        if flags is not None and flags.any():
            selected = self.inlier_mask.numpy()
            share = f"{flags[selected].mean():.3f}" if selected.any() else "n/a"
            message += f"; synthetic: {share} of the selected, {flags.mean():.3f} of all"
        algorithm.print_fn(message)
