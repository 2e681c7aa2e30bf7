"""``rsmatch-train``: the plugin's counterpart of USB's train.py.

Same flags, YAML keys and output layout (``save_dir/save_name/log.txt``,
``latest_model.pth``, ``model_best.pth``, the ``BEST_EVAL_ACC`` log line), on
CPU or CUDA, plus the logged values as records in ``metrics.jsonl``
(:mod:`rsmatch_usb.metrics`). Differences from USB's script, each
deliberate: bad input is one ``error:`` line and exit code 2; a checkpoint
that exists but cannot be loaded stops the run instead of silently starting
from scratch; with no GPU, ``multiprocessing_distributed`` spawns
``world_size`` CPU processes on gloo.
"""
import argparse
import contextlib
import errno
import logging
import logging.handlers
import os
import random
import socket
import sys
import warnings
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np
import torch
from data_tools import processes, run_folder

from .config import get_config
from .errors import UserError, report
from .fingerprints import fingerprint, log_fingerprint
from .nets import get_net_builder
from . import checkpoint, runtime


# Write errors of the disk under save_dir, which no check before the run can rule out.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _free_local_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(args: argparse.Namespace) -> argparse.Namespace:
    """Validate ``args`` and fix up device-dependent keys, before anything is written."""
    from data_tools import mixing, usb as usb_data

    args.save_name = run_folder.check_save_name(args.save_name)
    args.device = runtime.resolve_device(args.device, gpu_request=gpu_request(args))
    get_net_builder(args.net, args.net_from_name)
    usb_data.check_dataset_name(args.dataset)
    if args.num_train_iter % args.epoch:
        raise UserError(f"num_train_iter ({args.num_train_iter}) must be a multiple of epoch ({args.epoch})")
    check_writable_folder(run_folder.run_path(args.save_dir, args.save_name))
    check_run_folder(args)
    if args.resume and args.load_path and os.path.exists(args.load_path):
        check_checkpoint(args.load_path)

    if args.device == "cpu":
        if args.amp:
            warnings.warn("amp: mixed precision needs CUDA; training in fp32 on CPU")
            args.amp = False
        args.gpu = None
    # NCCL is CUDA-only; gloo is PyTorch's CPU backend.
    if args.dist_backend is None or (args.device == "cpu" and args.dist_backend == "nccl"):
        args.dist_backend = "nccl" if args.device == "cuda" else "gloo"
    set_launch(args, torch.cuda.device_count() if args.device == "cuda" else 0, os.environ)

    # Build the datasets once here, so a bad path, image or ratio fails before the
    # run folder is touched (the workers build their own copy).
    runtime.activate(args.device)
    _seed_everything(args.seed)
    args.verify_synthetic_files = verifies_synthetic_files(args)
    try:
        usb_data.get_dataset(args, args.algorithm, args.dataset, args.num_labels, args.num_classes,
                             args.data_dir, args.include_lb_to_ulb)
    except mixing.UnreadableImageError as exc:
        if not has_independent_ranks(args):
            raise
        # The other ranks skipped the check and will wait for this one: every rank stops with it
        # once the process group is up.
        args.start_error = str(exc)
    # The run's own dataset builds (this process's, its workers') do not read the files again.
    args.verify_synthetic_files = False
    return args


def verifies_synthetic_files(args: argparse.Namespace) -> bool:
    """Whether this process reads the synthetic files (PIL ``verify``) before the run: once per node.

    The process that launches the run does (it spawns the workers under
    ``multiprocessing_distributed``); under torchrun or hand-started ranks,
    each node's main rank (USB's ``rank % GPUs per node == 0``) does, so a
    node that holds its own copy of the data checks it too.
    """
    return args.multiprocessing_distributed or args.rank % args.procs_per_node == 0


def has_independent_ranks(args: argparse.Namespace) -> bool:
    """Whether the run has ranks this process did not start (torchrun, hand-started ranks, other nodes).

    They do not learn of an error this process raises before the process group is up.
    """
    return args.distributed and (not args.multiprocessing_distributed or args.world_size > args.procs_per_node)


def stop_on_start_error(args: argparse.Namespace) -> None:
    """Raise, on every rank, the UserError a rank deferred in :func:`prepare` (call once the group is up)."""
    import torch.distributed as dist

    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, getattr(args, "start_error", None))
    first = next((error for error in errors if error), None)
    if first:
        dist.destroy_process_group()
        raise UserError(first)


def check_writable_folder(path: str) -> None:
    """A UserError unless the run folder ``path`` is, or can be created in, a writable folder; creates nothing."""
    path = os.path.abspath(path)
    existing = path
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"save_dir: {existing} is a file, so the run folder {path} cannot be made there; "
                        "point save_dir at a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"save_dir: {existing} is not writable, so the run folder {path} cannot be written; "
                        "point save_dir at a folder you can write to")


def check_run_folder(args: argparse.Namespace) -> None:
    """A UserError when this run would overwrite a run folder it was not told to overwrite; writes nothing."""
    save_path = run_folder.run_path(args.save_dir, args.save_name)
    if run_folder.is_unused(save_path):
        return
    if not args.resume and not args.overwrite:
        raise UserError(f"{save_path} exists; set overwrite: True, resume: True, or another save_name")
    if not args.resume:
        run_folder.check_clearable(save_path)
    if args.resume and not (args.load_path and os.path.exists(args.load_path)) and not args.overwrite:
        marker = run_folder.finished_marker(save_path)
        if marker:
            raise UserError(f"load_path: {args.load_path} does not exist, and {save_path} holds a run that "
                            f"trained ({marker}); fix load_path to resume it, or set overwrite: True to "
                            "train it again from scratch")


def gpu_request(args: argparse.Namespace) -> List[str]:
    """The keys by which a config asks for a GPU (``gpu``, ``dist_backend: nccl``, ``amp``), as text."""
    keys = [f"gpu: {args.gpu}"] if args.gpu is not None else []
    if args.dist_backend == "nccl":
        keys.append("dist_backend: nccl")
    if args.amp:
        keys.append("amp: True")
    return keys


_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def set_launch(args: argparse.Namespace, device_count: int, environ: Mapping[str, str]) -> argparse.Namespace:
    """Set the distributed keys of ``args`` for how this process was started.

    USB's rules, with the CPU and launcher cases it lacks. Sets ``world_size``
    (all processes), ``rank`` (this process's node rank, or its global rank
    when it was started as one rank), ``procs_per_node`` (processes on this
    node: the main process is the one with ``rank % procs_per_node == 0``),
    ``distributed``, and ``local_rank`` where the launcher gave it.

    - torchrun (or any launcher setting RANK, WORLD_SIZE and LOCAL_RANK):
      ``env://`` with the launcher's ranks, one process per GPU (``gpu`` =
      LOCAL_RANK); ``multiprocessing_distributed`` is ignored, the processes
      exist already;
    - ``dist_url: env://`` otherwise (USB): ``world_size: -1`` and ``rank: -1``
      are read from WORLD_SIZE and RANK;
    - ``multiprocessing_distributed: True``: one process per GPU of this node,
      ``world_size`` counting nodes (USB); with no GPU, ``world_size``
      processes on this node;
    - processes started by hand (``world_size > 1`` without
      ``multiprocessing_distributed``): each is the rank it is given; the GPUs
      of a node (the processes, on the CPU) share it, so only rank 0 of each
      node is the main process, as in USB.
    """
    launched = all(key in environ for key in _TORCHRUN_ENV)
    if launched:
        if args.multiprocessing_distributed:
            warnings.warn("multiprocessing_distributed: ignored under torchrun, which starts the processes")
        args.multiprocessing_distributed = False
        args.dist_url = "env://"
        args.world_size, args.rank = int(environ["WORLD_SIZE"]), int(environ["RANK"])
        args.local_rank = int(environ["LOCAL_RANK"])
        args.procs_per_node = int(environ.get("LOCAL_WORLD_SIZE", max(device_count, 1)))
        if device_count:
            args.gpu = args.local_rank
    elif args.dist_url == "env://":
        for key, env in (("world_size", "WORLD_SIZE"), ("rank", "RANK")):
            if getattr(args, key) == -1:
                if env not in environ:
                    raise UserError(f"dist_url: env:// with {key}: -1 reads {env} from the environment, which is "
                                    f"not set; launch with torchrun, or set {key}")
                setattr(args, key, int(environ[env]))
    if args.world_size < 1 or args.rank < 0:
        raise UserError(f"world_size ({args.world_size}) must be >= 1 and rank ({args.rank}) >= 0")
    if args.multiprocessing_distributed:
        args.procs_per_node = device_count or args.world_size
        if device_count:
            args.world_size *= device_count
        if args.dist_url.split("//")[-1].split(":")[0] in ("127.0.0.1", "localhost"):
            args.dist_url = f"tcp://127.0.0.1:{_free_local_port()}"
    elif not launched:
        args.procs_per_node = (device_count or args.world_size) if args.world_size > 1 else 1
    args.distributed = args.world_size > 1 or (args.multiprocessing_distributed and args.device == "cuda")
    return args


def worker_rank(args: argparse.Namespace, local_rank: int) -> int:
    """The global rank of the process ``local_rank`` of this node (USB: node rank * procs + local rank)."""
    if args.distributed and args.multiprocessing_distributed:
        return args.rank * args.procs_per_node + local_rank
    return args.rank


def check_checkpoint(path: str) -> None:
    """Fail loudly on a checkpoint that cannot be loaded safely or is not a USB checkpoint.

    Loaded with ``weights_only=True``: a file that would need arbitrary
    unpickling (and could run code) is refused before anything else reads it.
    """
    try:
        checkpoint.iterations(path)
    except checkpoint.CheckpointError as exc:
        raise UserError(f"load_path: cannot use checkpoint {path}: {exc}; point load_path at a "
                        "latest_model.pth written by this tool, or remove it to start fresh") from None


def main(args: argparse.Namespace) -> Any:
    """Train in this process, or in spawned workers while this process holds the run folder's lock."""
    if args.multiprocessing_distributed and args.procs_per_node > 1:
        with run_folder.locked(os.path.join(args.save_dir, args.save_name), clear=not args.resume):
            spawn_workers(args)
    elif args.multiprocessing_distributed:
        # USB spawns one process for a node's single GPU, as local rank 0 on GPU 0
        # (DDP with device_ids and SyncBatchNorm); that process is this one.
        return main_worker(0, 1, args)
    else:
        return main_worker(args.gpu, args.procs_per_node, args)


def _spawned_worker(local_rank, procs_per_node, args, error_dir, parent_pid):
    """main_worker in a spawned process (the parent holds the folder's lock); a UserError is left in
    ``error_dir`` for the parent to report."""
    processes.die_with_parent(parent_pid)  # a killed launcher takes its ranks along
    try:
        main_worker(local_rank, procs_per_node, args, True)
    except UserError as exc:
        with open(os.path.join(error_dir, f"rank{local_rank}.txt"), "w", encoding="utf-8") as f:
            f.write(str(exc))
        sys.exit(2)


def spawn_workers(args: argparse.Namespace) -> None:
    """One process per local rank (USB's mp.spawn); bad input found in a worker is one error line here."""
    import tempfile

    import torch.multiprocessing as mp

    # torch logs each rank it stops after another failed; the failure itself is reported below.
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="rsmatch_train_errors_") as error_dir:
        try:
            mp.spawn(_spawned_worker, nprocs=args.procs_per_node,
                     args=(args.procs_per_node, args, error_dir, os.getpid()))
        except mp.ProcessExitedException:
            reports = sorted(os.listdir(error_dir))
            if not reports:
                raise
            with open(os.path.join(error_dir, reports[0]), encoding="utf-8") as f:
                raise UserError(f.read()) from None
        finally:
            spawn_log.setLevel(level)


def _place_model(args, module, clip_batch):
    if args.device == "cuda":
        from semilearn.core.utils import send_model_cuda

        return send_model_cuda(args, module, clip_batch=clip_batch)
    if args.distributed:
        if clip_batch:
            args.batch_size = int(args.batch_size / args.procs_per_node)
        # SyncBatchNorm is CUDA-only; on CPU each rank keeps its own BN statistics.
        return torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=False,
                                                         find_unused_parameters=True)
    return module


def parameter_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of the learnable parameters: equal on every DDP rank when training stays in sync.

    Buffers are left out: without SyncBatchNorm (CUDA-only) each CPU rank keeps
    its own BatchNorm running statistics, and rank 0's are the ones saved.
    """
    return fingerprint([p for _, p in sorted(module.named_parameters())])


def build_algorithm(args: argparse.Namespace, procs_per_node: int, logger: logging.Logger,
                    tb_log: Any = None) -> Any:
    """The algorithm object of ``args``, its model and EMA model placed on the run's device.

    Call after :func:`prepare` and with the runtime active (as :func:`main_worker` does).
    """
    from semilearn.algorithms import get_algorithm
    from semilearn.core.utils import count_parameters
    from semilearn.imb_algorithms import get_imb_algorithm

    net_builder = get_net_builder(args.net, args.net_from_name)
    if args.imb_algorithm is not None:
        algorithm = get_imb_algorithm(args, net_builder, tb_log, logger)
    else:
        algorithm = get_algorithm(args, net_builder, tb_log, logger)
    # USB's hooks pick the main process with rank % ngpus_per_node; with no GPU
    # that count is 0, so tell the algorithm how many processes share this node.
    algorithm.ngpus_per_node = procs_per_node
    logger.info(f"Number of Trainable Params: {count_parameters(algorithm.model)}")
    algorithm.model = _place_model(args, algorithm.model, clip_batch=True)
    algorithm.ema_model = _place_model(args, algorithm.ema_model, clip_batch=False)
    return algorithm


def main_worker(local_rank: Optional[int], procs_per_node: int, args: argparse.Namespace,
                folder_locked: bool = False) -> Any:
    """Train on one device: USB's main_worker with the runtime adaptations active.

    ``folder_locked``: the parent process holds the run folder's lock (spawned
    DDP workers); otherwise this process takes it. An error that stops the run
    is also written to the run's log.txt, which otherwise would end at the
    last progress line.
    """
    try:
        return _main_worker(local_rank, procs_per_node, args, folder_locked)
    except (Exception, KeyboardInterrupt) as exc:
        log_stop(args, exc)
        raise


def log_stop(args: argparse.Namespace, exc: BaseException) -> None:
    """Append why the run stopped to its log.txt (an ERROR line; the traceback unless it is a UserError).

    Only the run's file handlers get it: the caller reports it on stderr
    (one ``error:`` line for a UserError, Python's traceback otherwise).
    """
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return  # the disk takes no more lines: logging's own error report would bury the one error line
    logger = logging.getLogger(args.save_name)
    folder = os.path.abspath(os.path.join(args.save_dir, args.save_name))
    if isinstance(exc, UserError):
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, f"training stopped: {exc}", None, None)
    else:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                                   f"training stopped by {type(exc).__name__}: {exc}", None,
                                   (type(exc), exc, exc.__traceback__))
    for handler in logger.handlers:
        # A handler of this run's folder, not one left by an earlier run in this process.
        if isinstance(handler, logging.FileHandler) and os.path.dirname(handler.baseFilename) == folder:
            handler.handle(record)


def _main_worker(local_rank, procs_per_node, args, folder_locked):
    import torch.distributed as dist
    from semilearn.core.utils import TBLog, get_logger

    runtime.activate(args.device)
    args.gpu = local_rank if args.device == "cuda" else None
    _seed_everything(args.seed)
    # USB's settings: cuDNN picks deterministic kernels, autotuned for the run's shapes.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = True

    if args.distributed:
        args.rank = worker_rank(args, local_rank or 0)
        if args.gpu is not None:
            torch.cuda.set_device(args.gpu)  # NCCL's collectives below run on this rank's GPU
        dist.init_process_group(backend=args.dist_backend, init_method=args.dist_url,
                                world_size=args.world_size, rank=args.rank)
        if has_independent_ranks(args):
            stop_on_start_error(args)

    save_path = os.path.join(args.save_dir, args.save_name)
    is_main = args.rank % procs_per_node == 0
    level = logging.INFO if is_main else logging.WARNING
    # get_logger adds a file handler on every call; drop those of an earlier run
    # in this process (tests, notebooks) so lines are not written twice.
    logger = logging.getLogger(args.save_name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    get_logger(args.save_name, None, logging.getLevelName(level))  # the console only, for now
    # get_logger sets the level through logging.basicConfig, a no-op when the
    # host process (pytest, a notebook) has configured logging already.
    logger.setLevel(level)
    # Lines logged before the run folder may be written are kept for its log.txt.
    early = logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1)
    logger.addHandler(early)
    logger.info(f"Use device: {args.device} (gpu {args.gpu}) for training")

    algorithm = build_algorithm(args, procs_per_node, logger)
    logger.info(f"Arguments: {algorithm.args}")

    # Every check that can fail happens before the run folder is created or changed.
    if args.resume and args.load_path and os.path.exists(args.load_path):
        try:
            algorithm.load_model(args.load_path)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(f"load_path: checkpoint {args.load_path} does not fit this config "
                            f"({str(exc).splitlines()[0][:200]}); use the config it was trained with") from None
        # load_model (rsmatch_usb.resume.restore) also positions the data and RNGs.
        logger.info(f"Resumed from {args.load_path} at iteration {algorithm.it}")
    elif args.resume:
        logger.info(f"Resume load path {args.load_path} does not exist; training from scratch")

    with contextlib.ExitStack() as stack:
        # Under torchrun (or hand-started ranks) every rank gets here: the node's
        # main process holds the folder; the others write only their warnings.
        if not folder_locked and is_main:
            stack.enter_context(run_folder.locked(save_path, clear=not args.resume))
        get_logger(args.save_name, save_path, logging.getLevelName(level))  # adds log.txt
        early.setTarget(logger.handlers[-1])
        logger.removeHandler(early)
        early.close()  # flushes the early lines into log.txt
        if is_main:
            algorithm.tb_log = TBLog(save_path, "tensorboard", use_tensorboard=args.use_tensorboard)
        return _train(algorithm, args, logger)


def _train(algorithm, args, logger):
    import torch.distributed as dist

    if hasattr(algorithm, "warmup"):
        logger.info("Warmup stage")
        algorithm.warmup()
    logger.info("Model training")
    algorithm.train()
    for key, item in algorithm.results_dict.items():
        logger.info(f"Model result - {key} : {item}")
    if hasattr(algorithm, "finetune"):
        logger.info("Finetune stage")
        algorithm.finetune()

    log_fingerprint(logger, "training is FINISHED; parameter fingerprint", parameter_fingerprint(algorithm.model))
    if args.distributed:
        dist.destroy_process_group()
    return algorithm


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``rsmatch-train``; returns the process exit code."""
    processes.die_with_parent_from_env()  # started by the grid runner: end with it
    try:
        args = prepare(get_config(argv))
        main(args)
    except UserError as exc:
        return report(exc, "rsmatch-train")
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        # A disk that fills up (or turns read-only) while training: no traceback, and how to go on.
        where = f" ({exc.filename})" if exc.filename else ""
        return report(f"{exc.strerror}{where}; free space on the disk of save_dir (or set save_dir elsewhere), "
                      "then rerun with resume: True to continue from the last checkpoint", "rsmatch-train")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
