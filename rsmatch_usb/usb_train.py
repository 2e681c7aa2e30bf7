"""``rsmatch-usb-train``: USB's own, unchanged ``train.py`` with the plugin installed.

    rsmatch-usb-train PATH/TO/USB/train.py --c config.yaml [USB's flags]
    python -m rsmatch_usb.usb_train PATH/TO/USB/train.py --c config.yaml [USB's flags]

Run as ``python train.py``, USB's script knows nothing of the plugin and stops
with ``KeyError: 'rsmatch'``. This launcher runs it as ``__main__`` (runpy),
with ``sys.argv`` and the script's folder first on ``sys.path`` as Python sets
them, after installing what ``rsmatch-train`` has:

- the plugin's algorithms (``rsmatch``, ``openmatch``, ``iomatch``), nets
  (``resnet_tiny``, ...) and datasets, with the RS-SSL keys
  ``synthetic_source`` / ``synthetic_ratio``;
- configs read by the plugin's safe loader, where a key that nothing reads is
  one ``error:`` line naming the closest known key (USB keeps it silently); an
  unknown algorithm, dataset or net is one line too, before the script touches
  its run folder;
- the ``device`` key (``auto``, ``cpu``, ``cuda``): on CUDA, USB's own path;
  on the CPU, the runtime's stand-ins for semilearn's CUDA calls plus what the
  script itself needs there (:func:`rsmatch_usb.runtime.activate_script_cpu`).

The script imports the semilearn that ``python train.py`` would: the one
beside it in a USB checkout, else the installed one. Bad input is one
``rsmatch-usb-train: error: ...`` line and exit code 2; the script's own
argparse errors are its own.
"""
import argparse
import os
import runpy
import sys
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch.multiprocessing

from data_tools import config_files
from data_tools.devices import resolve_device

from . import runtime
from .errors import UserError, report

PROG = "rsmatch-usb-train"
# The names train.py imports from semilearn.core.utils that the launcher replaces.
_SCRIPT_NAMES = ("over_write_args_from_file", "get_net_builder", "send_model_cuda")
# Set in a process this launcher re-started to import a checkout's semilearn: that package's folder.
_SEMILEARN_ENV = "RSMATCH_USB_TRAIN_SEMILEARN"
# The re-started process puts the checkout first, then imports semilearn before anything of the
# plugin, so a checkout whose semilearn does not import here is one error line, not a traceback.
_BOOTSTRAP = """\
import sys
sys.path.insert(0, sys.argv.pop(1))
try:
    import semilearn
except ImportError as exc:
    print(f"{prog}: error: cannot import the semilearn of {{sys.path[0]}} ({{exc}}); USB's main branch needs "
          "timm<0.9 (see the plugin's README)", file=sys.stderr)
    sys.exit(2)
from rsmatch_usb.usb_train import cli
sys.exit(cli(sys.argv[1:]))
""".format(prog=PROG)


def split_argv(argv: List[str]) -> Tuple[Path, List[str]]:
    """``(USB's train.py, the flags for it)`` from the launcher's arguments."""
    if not argv or argv[0].startswith("-"):
        raise UserError("give the path of USB's train.py first, then its flags: "
                        f"{PROG} PATH/TO/USB/train.py --c config.yaml")
    script = Path(argv[0])
    if not script.is_file():
        raise UserError(f"{script} is not a file; give the path of USB's train.py (in a clone of "
                        "microsoft/Semi-supervised-learning)")
    return script, list(argv[1:])


def checkout_semilearn(script: Path) -> Optional[Path]:
    """The ``semilearn`` package beside ``script`` (a USB checkout), which ``python train.py`` imports first."""
    package = script.resolve().parent / "semilearn"
    return package if (package / "__init__.py").is_file() else None


def _imported_semilearn() -> Path:
    import semilearn

    return Path(semilearn.__file__).resolve().parent


def _restart_with(package: Path, argv: List[str]) -> None:
    """Replace this process with one whose semilearn is ``package`` (the plugin had imported another)."""
    if os.environ.get(_SEMILEARN_ENV) == str(package):
        raise UserError(f"{package} is not the semilearn Python imports even with its folder first on sys.path "
                        f"(it imports {_imported_semilearn()}); run from outside other semilearn trees")
    env = dict(os.environ, **{_SEMILEARN_ENV: str(package)})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-c", _BOOTSTRAP, str(package.parent), *argv], env)


def config_values(flags: List[str]) -> dict:
    """The keys of the ``--c`` file among ``flags`` ({} without one), dashes in keys read as underscores."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--c", default="")
    path = parser.parse_known_args(flags)[0].c
    if not path:
        return {}
    return {str(k).replace("-", "_"): v for k, v in config_files.load_yaml(path, "--c").items()}


def device_of(values: dict) -> str:
    """The run's device from the config's ``device`` key, as ``rsmatch-train`` resolves it.

    Only the file's own keys ask for a GPU: train.py's default ``dist_backend`` is nccl.
    """
    from .train import gpu_request

    gpu = values.get("gpu")
    asked = argparse.Namespace(gpu=None if gpu in (None, "None", "none", "") else gpu,
                               dist_backend=values.get("dist_backend"), amp=values.get("amp") is True)
    return resolve_device(values.get("device", "auto"), gpu_request=gpu_request(asked))


def over_write_args_from_file(device: str) -> Callable:
    """semilearn's ``over_write_args_from_file`` as the train command reads configs; train.py calls it
    after each of its parses."""
    from data_tools import mixing, usb as usb_data

    from .config import algorithm_arguments, base_parser, check_keys, known_keys, load_yaml
    from .nets import get_net_builder

    plugin_defaults = vars(base_parser().parse_args([]))

    def over_write(args, yml):
        values = load_yaml(yml) if yml else {}
        # The script's own keys, this plugin's, and every registered algorithm's.
        check_keys(values, set(vars(args)) | known_keys(base_parser()), f"config file {yml}")
        for key, value in values.items():
            setattr(args, key, value)
        for key, value in plugin_defaults.items():
            if not hasattr(args, key):
                setattr(args, key, value)
        args.device = device
        algorithm_arguments(args.algorithm, getattr(args, "imb_algorithm", None))
        usb_data.check_dataset_name(args.dataset)
        get_net_builder(args.net, args.net_from_name)
        mixing.synthetic_settings(args, args.dataset)
        if device == "cpu":
            if args.amp:
                warnings.warn("amp: mixed precision needs CUDA; training in fp32 on CPU")
            args.gpu = None
            args.amp = False
            if args.dist_backend == "nccl":
                args.dist_backend = "gloo"  # PyTorch's CPU backend
    return over_write


def _spawn_with_plugin(spawn: Callable, device: str) -> Callable:
    """``torch.multiprocessing.spawn`` whose processes install the plugin before running train.py's worker."""
    # By its importable name: under ``python -m`` this file runs as __main__, which in the
    # parent is train.py while it runs, so a worker found there could not be pickled.
    from rsmatch_usb.usb_train import _installed_worker

    def spawn_installed(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        return spawn(_installed_worker, args=(fn, device, args), nprocs=nprocs, join=join, daemon=daemon,
                     start_method=start_method)
    return spawn_installed


def _installed_worker(index: int, fn: Callable, device: str, args: tuple) -> None:
    import semilearn.core.utils as usb_utils

    install(device)
    # The spawned process re-ran train.py's imports before this function was unpickled, so its
    # module holds semilearn's own names; the worker uses the installed ones.
    for name in _SCRIPT_NAMES:
        if name in fn.__globals__:
            fn.__globals__[name] = getattr(usb_utils, name)
    fn(index, *args)


def install(device: str) -> None:
    """Install into semilearn what ``rsmatch-train`` has, for USB's train.py on ``device`` ('cpu' or 'cuda')."""
    import semilearn.core.utils as usb_utils

    import rsmatch_usb  # noqa: F401  (registers the plugin's algorithms)

    from .nets import get_net_builder

    runtime.activate(device)
    if device == "cpu":
        runtime.activate_script_cpu()
    # train.py imports these names from semilearn.core.utils when it starts, so they are replaced there.
    runtime.patch(usb_utils, "over_write_args_from_file", over_write_args_from_file(device))
    runtime.patch(usb_utils, "get_net_builder", get_net_builder)
    if not getattr(torch.multiprocessing.spawn, "installs_plugin", False):
        spawn = _spawn_with_plugin(torch.multiprocessing.spawn, device)
        spawn.installs_plugin = True
        runtime.patch(torch.multiprocessing, "spawn", spawn)


def run_script(script: Path, flags: List[str]) -> int:
    """Run ``script`` as ``__main__`` with ``flags`` as its command line; returns its exit code."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *flags]
    sys.path.insert(0, str(script.resolve().parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rsmatch-usb-train``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        script, flags = split_argv(argv)
        package = checkout_semilearn(script)
        if package is not None and _imported_semilearn() != package:
            _restart_with(package, argv)
        device = device_of(config_values(flags))
        install(device)
        return run_script(script, flags)
    except UserError as exc:
        return report(exc, PROG)


if __name__ == "__main__":
    sys.exit(cli())
