"""Where semilearn 0.3.2 is adapted to run on CPU as well as on CUDA.

semilearn 0.3.2 assumes CUDA throughout. Rather than forking it, the train
command (or an explicit call to :func:`activate`) installs the small set of
adaptations below; importing :mod:`rsmatch_usb` patches nothing. Every change
is listed in :func:`activate` with the reason it is needed. On CUDA only the
dataset hook, the checkpoint fixes (atomic writes, the final iteration count),
exact resume, the structured metrics hook and a GradScaler that resumes from a
CPU checkpoint are installed, so USB's GPU path (single GPU, DDP with NCCL) is
otherwise USB's own.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import torch

_ORIGINALS = {}
_ORIGINAL_ITEMS = {}  # id(mapping): (mapping, {key: original value})


class WallClockEvent:
    """Stand-in for ``torch.cuda.Event`` on CPU: same ``record``/``elapsed_time`` API."""

    def __init__(self, enable_timing=True, **kwargs):
        self._t = None

    def record(self, stream: Any = None) -> None:
        self._t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: WallClockEvent) -> float:
        """Milliseconds from this event to ``end``, as CUDA events report."""
        if self._t is None or end._t is None:
            return 0.0
        return (end._t - self._t) * 1000.0


def _tensor_to_cpu(self, device=None, non_blocking=False, **kwargs):
    return self.to("cpu")


class ResumableGradScaler(torch.amp.GradScaler):
    """USB's GradScaler, which also resumes from the empty state of a disabled scaler.

    A run on the CPU (or any disabled scaler) saves ``loss_scaler: {}``; torch's
    ``load_state_dict`` refuses that on an enabled scaler, so resuming a
    CPU-written checkpoint on CUDA failed. Empty state means "no scale learnt
    yet": the scaler keeps its fresh initial scale.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        super().load_state_dict(state_dict)


def _grad_scaler_factory(device):
    """What AlgorithmBase's ``GradScaler()`` builds: enabled on CUDA (USB's), disabled on the CPU."""
    def grad_scaler(*args, **kwargs):
        return ResumableGradScaler(device, enabled=device == "cuda")
    return grad_scaler


def _after_run_recording_completed_iterations(original):
    def after_run(self, algorithm):
        # EvaluationHook.after_run saves latest_model.pth after the loop has
        # already counted the last step, and get_save_dict adds one more, so the
        # file claimed k + 1 iterations and a resume skipped one.
        algorithm.it -= 1
        # It saves from every rank unless multiprocessing_distributed is set; under
        # torchrun or hand-started ranks the ranks then overwrite one another's
        # file. Only a node's main process writes, as everywhere else in USB.
        not_main = algorithm.distributed and algorithm.rank % algorithm.ngpus_per_node != 0
        if not_main:
            algorithm.save_model = lambda *args, **kwargs: None
        try:
            return original(self, algorithm)
        finally:
            algorithm.it += 1
            if not_main:
                del algorithm.save_model
    return after_run


def _save_model_atomically(self, save_name, save_path):
    """AlgorithmBase.save_model, writing through :func:`data_tools.atomic.torch_save`.

    A failed write (a full disk) raises its OSError with the previous checkpoint
    intact; the train command reports it as one error line. One writer per run
    folder (the train command locks it), so the fixed temporary name suffices.
    """
    from data_tools.atomic import torch_save

    path = os.path.join(save_path, save_name)
    os.makedirs(save_path, exist_ok=True)
    torch_save(self.get_save_dict(), path)
    self.print_fn(f"model saved: {path}")


def _patch_item(mapping, key, value):
    if key not in _ORIGINAL_ITEMS.setdefault(id(mapping), (mapping, {}))[1]:
        _ORIGINAL_ITEMS[id(mapping)][1][key] = mapping[key]
    mapping[key] = value


def _set_data_loader_resumable(original):
    def set_data_loader(self):
        from . import resume

        return resume.prepare_loaders(original(self))
    return set_data_loader


def _get_save_dict_with_resume_state(original):
    def get_save_dict(self):
        from . import resume

        save_dict = original(self)
        save_dict["resume_state"] = resume.state(self)
        return save_dict
    return get_save_dict


def _load_model_resuming(original):
    def load_model(self, load_path):
        from . import resume

        checkpoint = original(self, load_path)
        resume.restore(self, checkpoint)
        return checkpoint
    return load_model


def _patch(owner, name, value):
    key = (owner, name)
    if key not in _ORIGINALS:
        _ORIGINALS[key] = getattr(owner, name)
    setattr(owner, name, value)


def resolve_device(requested: Optional[str], gpu_request: Sequence[str] = ()) -> str:
    """The train command's ``device`` key: :func:`data_tools.devices.resolve_device`, the one resolver.

    Imported when called: this module imports nothing of the project at load
    (the USB export's test loads it alone into a USB checkout).
    """
    from data_tools.devices import resolve_device as resolve

    return resolve(requested, gpu_request=gpu_request)


def _restore(owner, name):
    original = _ORIGINALS.pop((owner, name), None)
    if original is not None:
        setattr(owner, name, original)


# The adaptations installed on the CPU only; activate('cuda') removes them again.
_CPU_ONLY = ((torch.Tensor, "cuda"), (torch.cuda, "Event"), (torch.cuda, "synchronize"))


def activate(device: str) -> None:
    """Install the adaptations for ``device`` ('cpu' or 'cuda'); idempotent.

    Switching device in one process (a notebook, a library user) removes the
    other device's adaptations: after ``activate('cpu')``, ``activate('cuda')``
    leaves ``Tensor.cuda`` and the CUDA events as torch defines them.
    """
    import semilearn.core.algorithmbase as algorithmbase
    import semilearn.datasets.samplers as samplers
    from semilearn.core.hooks import EvaluationHook

    from data_tools import usb as usb_data

    from . import metrics, resume

    # Plugin datasets (digits, ImageFolder sources, RS-SSL contamination) are built
    # by data_tools; AlgorithmBase.set_dataset looks get_dataset up in its module,
    # so this is the one place every USB algorithm picks them up unchanged.
    _patch(algorithmbase, "get_dataset", usb_data.get_dataset)
    if (EvaluationHook, "after_run") not in _ORIGINALS:
        _patch(EvaluationHook, "after_run", _after_run_recording_completed_iterations(EvaluationHook.after_run))
    # save_model writes in place: a kill or full disk mid-write destroyed the only resume point.
    _patch(algorithmbase.AlgorithmBase, "save_model", _save_model_atomically)
    # Exact resume (rsmatch_usb.resume): samplers that resume mid-epoch and seed each
    # batch, and the RNG states in every checkpoint. Subclasses' get_save_dict,
    # load_model and set_data_loader call these through super(), so every algorithm has them.
    # Structured metrics (rsmatch_usb.metrics): set_hooks too, for the hook writing metrics.jsonl.
    for name, sampler in resume.SAMPLERS.items():
        _patch_item(samplers.name2sampler, name, sampler)
    base = algorithmbase.AlgorithmBase
    for name, wrap in (("set_data_loader", _set_data_loader_resumable),
                       ("get_save_dict", _get_save_dict_with_resume_state),
                       ("load_model", _load_model_resuming),
                       ("set_hooks", metrics.with_metrics_hook)):
        if (base, name) not in _ORIGINALS:
            _patch(base, name, wrap(getattr(base, name)))
    if device == "cpu":
        activate_cpu()
    else:
        # On CUDA AlgorithmBase's GradScaler is enabled (USB's); ours also resumes
        # from a checkpoint that a disabled (CPU) scaler wrote.
        _patch(algorithmbase, "GradScaler", _grad_scaler_factory("cuda"))
        for owner, name in _CPU_ONLY:
            _restore(owner, name)


def activate_cpu() -> None:
    """Install only the CPU stand-ins for semilearn's CUDA calls; idempotent.

    Part of :func:`activate`. It needs nothing else from the plugin, so this
    file alone, loaded by path, runs a USB algorithm on CPU where importing
    ``rsmatch_usb`` must be avoided (the test of the USB export).
    """
    import semilearn.core.algorithmbase as algorithmbase

    # process_batch, evaluate, Dash's warm-up loop, and the train steps and
    # load_model of SimMatch, CoMatch, VAT, CRMatch, FlexMatch, FreeMatch,
    # SoftMatch, ReMixMatch and AdaMatch call Tensor.cuda(); on CPU it stays put.
    _patch(torch.Tensor, "cuda", _tensor_to_cpu)
    # TimerHook, ParamUpdateHook and Dash time steps with CUDA events.
    _patch(torch.cuda, "Event", WallClockEvent)
    # ParamUpdateHook and Dash synchronize the (absent) device around each step.
    _patch(torch.cuda, "synchronize", lambda *a, **k: None)
    # AlgorithmBase always builds an enabled CUDA GradScaler; on CPU it only warns.
    _patch(algorithmbase, "GradScaler", _grad_scaler_factory("cpu"))


def _send_model_cpu(args, model, clip_batch=True):
    """semilearn's ``send_model_cuda`` for a model that stays on the CPU (DDP over gloo when distributed)."""
    if args.distributed:
        # SyncBatchNorm is CUDA-only; on CPU each rank keeps its own BN statistics.
        return torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=True)
    return model


def activate_script_cpu() -> None:
    """What USB's own train.py needs on the CPU beyond :func:`activate_cpu` (``rsmatch-usb-train``); idempotent.

    Its main_worker picks the logging process by ``rank % torch.cuda.device_count()``,
    a ZeroDivisionError without a GPU: the CPU counts as one device per process
    (as the train command's ``procs_per_node``). Its ``send_model_cuda`` stops
    with "ONLY GPU TRAINING IS SUPPORTED": the model stays on the CPU instead.
    """
    import semilearn.core.utils as usb_utils

    _patch(torch.cuda, "device_count", lambda: 1)
    _patch(usb_utils, "send_model_cuda", _send_model_cpu)


def patch(owner: Any, name: str, value: Any) -> None:
    """Replace ``owner.name`` with ``value`` until :func:`deactivate` (a launcher's own hooks into semilearn)."""
    _patch(owner, name, value)


def deactivate() -> None:
    """Undo :func:`activate` (used by tests that run several configs in one process)."""
    for (owner, name), value in _ORIGINALS.items():
        setattr(owner, name, value)
    _ORIGINALS.clear()
    for mapping, originals in _ORIGINAL_ITEMS.values():
        mapping.update(originals)
    _ORIGINAL_ITEMS.clear()
