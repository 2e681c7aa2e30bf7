"""What the plugin's algorithms share for training and evaluation: the labeled/unlabeled forward, dataset
views, the eval-time guard and the synthetic-AUROC hook.

Plain helpers on semilearn's ``AlgorithmBase`` and ``Hook``, so that no
algorithm imports another's folder. The helpers RSMatch's USB export carries
(image reads, the private RNG stream, the queue's draws) are in :mod:`.utils`;
the extra-state and CPU-input mixins, which the export does without, are here.
"""
from inspect import signature
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from semilearn.core.hooks import Hook
from torch.utils.data import DataLoader, Dataset

from rsmatch_usb.heads import unwrap
from rsmatch_usb.origin import auroc_by_source, unlabeled_origin

from .utils import read_image

# Unlabeled samples scored for eval/synthetic_auroc: enough for an AUROC within ~0.02,
# few enough to cost well under one evaluation of a CIFAR-sized test set.
MAX_AUROC_SAMPLES = 1000


def forward_all(algorithm: Any, parts: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and features of the concatenated inputs ``parts``, in one pass when ``use_cat``."""
    if algorithm.use_cat:
        out = algorithm.model(torch.cat(parts))
        return out["logits"], out["feat"]
    outs = [algorithm.model(x) for x in parts]
    return torch.cat([o["logits"] for o in outs]), torch.cat([o["feat"] for o in outs])


def at_eval_on_main_rank(hook: Hook, algorithm: Any) -> bool:
    """True at USB's evaluation iterations (every ``num_eval_iter`` and the last), on the main process only."""
    if not (hook.every_n_iters(algorithm, algorithm.num_eval_iter) or hook.is_last_iter(algorithm)):
        return False
    return not (algorithm.distributed and algorithm.rank % algorithm.ngpus_per_node != 0)


class IndexedImages(Dataset):
    """``transform(image)`` for the given indices (None: all) of a USB dataset, e.g. under the eval transform."""

    def __init__(self, dataset, indices, transform):
        self.dataset = dataset
        self.indices = None if indices is None else [int(i) for i in indices]
        self.transform = transform

    def __len__(self):
        return len(self.dataset) if self.indices is None else len(self.indices)

    def __getitem__(self, i):
        return self.transform(read_image(self.dataset, i if self.indices is None else self.indices[i]))


@torch.no_grad()
def score_unlabeled(algorithm: Any, indices: torch.Tensor) -> torch.Tensor:
    """``algorithm.outlier_score`` of the unlabeled samples ``indices``, a CPU float tensor.

    Uses the online backbone and heads in eval mode: the heads have no EMA copy,
    so pairing them with the EMA backbone would mix two different networks.
    """
    view = IndexedImages(algorithm.dataset_dict["train_ulb"], None, algorithm.dataset_dict["eval"].transform)
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


def synthetic_flags(algorithm: Any) -> Optional[np.ndarray]:
    """Ground-truth synthetic flags of the unlabeled set, or None when the dataset has none."""
    origin = unlabeled_origin(algorithm)
    return None if origin is None else origin[0]


class SyntheticAUROCHook(Hook):
    """Logs ``eval/synthetic_auroc``: how well the outlier score ranks synthetic unlabeled images first.

    For an algorithm with ``outlier_score(logits, head_outputs)`` (one score per
    sample, higher meaning "more likely an outlier") and extra heads. Runs when
    USB's EvaluationHook does (register it after that hook), on the main
    process, only when the unlabeled set has both real and synthetic images,
    and on a fixed seeded subset of at most ``max_samples`` of them. With
    several synthetic sources it also logs ``eval/synthetic_auroc/<source>``.
    """

    def __init__(self, max_samples=MAX_AUROC_SAMPLES):
        super().__init__()
        self.max_samples = max_samples
        self.indices = None
        self.flags = None
        self.source, self.source_names = None, None

    def before_run(self, algorithm: Any) -> None:
        origin = unlabeled_origin(algorithm)
        if origin is None or origin[0].all() or not origin[0].any():
            return
        flags, source, self.source_names = origin
        generator = torch.Generator().manual_seed(algorithm.args.seed)
        indices = torch.randperm(len(flags), generator=generator)[:self.max_samples].sort().values
        subset = flags[indices.numpy()]
        if subset.all() or not subset.any():
            return
        self.indices, self.flags, self.source = indices, subset, source[indices.numpy()]

    def after_train_step(self, algorithm: Any) -> None:
        if self.indices is None or not at_eval_on_main_rank(self, algorithm):
            return
        scores = score_unlabeled(algorithm, self.indices).numpy()
        algorithm.log_dict.update(auroc_by_source("eval/synthetic_auroc", self.flags, scores, self.source,
                                                  self.source_names))


class ExtraStateMixin:
    """Saves ``extra_state()`` (``{checkpoint key: value}``) beside USB's checkpoint; ``load_extra_state`` restores it.

    A missing key or a mismatch raises KeyError/ValueError.
    """

    def extra_state(self):
        return {}

    def load_extra_state(self, checkpoint):
        pass

    def get_save_dict(self):
        save_dict = super().get_save_dict()
        save_dict.update(self.extra_state())
        return save_dict

    def load_model(self, load_path):
        checkpoint = super().load_model(load_path)
        self.load_extra_state(checkpoint)
        return checkpoint


class CPUInputsMixin:
    """Keeps the train-step inputs named in ``cpu_inputs`` on the CPU (USB's ``process_batch`` moves all to the GPU).

    Sample indices that only index CPU bookkeeping would otherwise need a
    device-to-host copy each step, which waits for the GPU's queued work.
    """

    cpu_inputs = ()

    def process_batch(self, input_args=None, **kwargs):
        kept = {name: kwargs.pop(name) for name in self.cpu_inputs if kwargs.get(name) is not None}
        batch = super().process_batch(input_args, **kwargs)
        if input_args is None:
            input_args = signature(self.train_step).parameters
        batch.update({name: value for name, value in kept.items() if name in input_args})
        return batch
