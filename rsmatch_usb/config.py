"""The train command's configuration: USB train.py's flags and YAML keys, plus the plugin's.

Precedence: parser defaults < YAML file (``--c``) < flags given on the command
line. (USB's train.py lets the YAML override explicit flags; here an explicit
flag wins, so a grid runner can redirect ``save_dir`` without editing configs.)

A key or flag no parser knows is an error naming the closest known key
(USB's train.py keeps YAML keys silently, so ``synthetic_ration: 1.0`` trained
on clean data). Known are: train.py's and the plugin's keys, those of every
registered algorithm's ``get_argument()`` (USB's configs also carry keys of
other algorithms, e.g. ``p_cutoff`` for Dash), and :data:`USB_UNPARSED_KEYS`.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

from data_tools import config_files, number_ranges
from data_tools.number_ranges import NumberRange, check_number
from semilearn.algorithms.utils import str2bool

from .algorithms.rsmatch.config import RSMatchConfig, ranges as rsmatch_ranges
from .errors import UserError

# Keys that USB's own config/ files set but neither its train.py nor any
# algorithm's get_argument() defines: accepted, so every USB config loads
# unchanged. semilearn 0.3.2 ignores all three of its own; USB's main branch adds
# use_epass (which its CoMatch and SimMatch read from the file alone) and
# use_refix (read by nothing).
USB_UNPARSED_KEYS = frozenset({"clip", "dist_align_target", "simis_la", "use_epass", "use_refix"})


def _probability(**kw):
    return NumberRange(float, 0.0, 1.0, **kw)


def rsmatch_rows() -> Dict[str, NumberRange]:
    """RSMatch's rows of :data:`NUMERIC_KEYS`: each numeric field of :class:`RSMatchConfig` with the range its
    metadata declares (the dataclass is the one source; a field added there is checked here too)."""
    kinds = {f.name: f.type for f in dataclasses.fields(RSMatchConfig)}
    return {key: NumberRange(int if kinds[key] in (int, "int") else float, None if math.isinf(low) else low,
                             None if math.isinf(high) else high, low_open="lo" in open_ends,
                             high_open="hi" in open_ends)
            for key, (low, high, open_ends) in rsmatch_ranges().items()}


# Every numeric key the train command checks (get_config) before anything is written: USB's train.py keys,
# the plugin's data keys, and algorithm keys (RSMatch's, from RSMatchConfig; OpenMatch's, IOMatch's and USB's
# common ones). A key not present in a run's arguments (another algorithm's) is skipped; other numeric
# arguments must be finite numbers of their type (numeric_fallbacks). Upper bounds are sanity
# limits: far above any published setting, below what exhausts memory or overflows (queue_size:
# 2e9 allocated 160 GB; lr, loss weights: a NaN model within a few steps).
NUMERIC_KEYS: Mapping[str, NumberRange] = {
    # USB train.py
    "epoch": NumberRange(int, 1, 10 ** 6),
    "num_train_iter": NumberRange(int, 1, 10 ** 10),
    "num_warmup_iter": NumberRange(int, 0, 10 ** 10),
    "num_eval_iter": NumberRange(int, 1, 10 ** 10),
    "num_log_iter": NumberRange(int, 1, 10 ** 10),
    "num_labels": NumberRange(int, 1, 10 ** 9),
    "batch_size": NumberRange(int, 1, 2 ** 16),
    "uratio": NumberRange(int, 1, 1024),
    "eval_batch_size": NumberRange(int, 1, 2 ** 16),
    "ema_m": _probability(),
    "ulb_loss_ratio": NumberRange(float, 0.0, 1e4),
    "lr": NumberRange(float, 0.0, 10.0),
    # USB's SGD is Nesterov's, which torch refuses without momentum.
    "momentum": NumberRange(float, 0.0, 1.0, low_open=True, high_open=True),
    "weight_decay": NumberRange(float, 0.0, 1.0),
    "layer_decay": NumberRange(float, 0.0, 1.0, low_open=True),
    "clip_grad": NumberRange(float, 0.0, 1e6),
    "num_classes": NumberRange(int, 1, 10 ** 6),
    "num_workers": NumberRange(int, 0, 256),
    "ulb_num_labels": NumberRange(int, 1, 10 ** 9, none_ok=True),  # 0 crashes inside semilearn's sampler
    "img_size": NumberRange(int, 8, 4096),
    "crop_ratio": NumberRange(float, 0.0, 1.0, low_open=True),
    "max_length": NumberRange(int, 1, 10 ** 6),
    "max_length_seconds": NumberRange(float, 0.0, 1e4, low_open=True),
    "sample_rate": NumberRange(int, 1, 10 ** 7),
    "seed": NumberRange(int, 0, 2 ** 32 - 1),  # numpy's seed range
    # the plugin's data keys (data_tools.mixing says how far a ratio can go for a given source)
    "synthetic_ratio": NumberRange(float, 0.0),
    "synthetic_seed": NumberRange(int, 0, 2 ** 32 - 1, none_ok=True),
    # RSMatch: every numeric field of its config, with the range the field declares (p_cutoff, a key
    # of USB's algorithms too, takes the row below, which the test of this table requires to agree)
    **rsmatch_rows(),
    # USB's algorithms
    "p_cutoff": _probability(),
    "T": NumberRange(float, 1e-2, 100.0),
    "ema_p": _probability(),
    "ent_loss_ratio": NumberRange(float, 0.0, 1e4),
    # OpenMatch, IOMatch
    "lambda_oem": NumberRange(float, 0.0, 1e4),
    "lambda_socr": NumberRange(float, 0.0, 1e4),
    "lambda_mb": NumberRange(float, 0.0, 1e4),
    "lambda_open": NumberRange(float, 0.0, 1e4),
    "q_cutoff": _probability(),
}


def check_numbers(args: argparse.Namespace, table: Mapping[str, NumberRange] = NUMERIC_KEYS) -> argparse.Namespace:
    """Check every key of ``table`` (default :data:`NUMERIC_KEYS`) that ``args`` has, converting in place.

    The first bad value is a UserError naming the key, its value and the
    valid range. ``table`` may be any mapping of key to :class:`NumberRange`
    (an algorithm's own rows, for instance).
    """
    return number_ranges.check_numbers(args, table)


def load_yaml(path: str) -> Dict[str, Any]:
    """The ``--c`` config's keys and values (the shared loader; USB's dashes in keys read as underscores)."""
    # USB configs write dashes and underscores interchangeably for distributed keys.
    return {str(k).replace("-", "_"): v for k, v in config_files.load_yaml(path, "--c").items()}


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors are a UserError (one ``error:`` line, no usage block)."""

    def error(self, message):
        # A YAML or flag value argparse cannot convert: the numeric table's message where it has the key.
        found = re.match(r"argument (\S+): invalid \w+ value: '(.*)'$", message)
        key = found and found.group(1).split("/")[-1].lstrip("-").replace("-", "_")
        if key in NUMERIC_KEYS:
            check_number(key, found.group(2), NUMERIC_KEYS[key])
        raise UserError(f"{message}; see rsmatch-train --help")


def base_parser() -> argparse.ArgumentParser:
    """USB train.py's arguments (semilearn 0.3.2), the plugin's ``device``, and the RS-SSL data keys."""
    from data_tools.usb import add_data_arguments

    p = _Parser(prog="rsmatch-train", description="Train a USB algorithm (rsmatch-usb)")
    # saving and loading
    p.add_argument("--save_dir", type=str, default="./saved_models")
    p.add_argument("-sn", "--save_name", type=str, default="fixmatch")
    p.add_argument("--resume", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument("--load_path", type=str, default=None)
    p.add_argument("-o", "--overwrite", type=str2bool, nargs="?", const=True, default=True)
    p.add_argument("--use_tensorboard", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument("--use_wandb", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument("--use_aim", type=str2bool, nargs="?", const=True, default=False)
    # training
    p.add_argument("--epoch", type=int, default=1)
    p.add_argument("--num_train_iter", type=int, default=20)
    p.add_argument("--num_warmup_iter", type=int, default=0)
    p.add_argument("--num_eval_iter", type=int, default=10)
    p.add_argument("--num_log_iter", type=int, default=5)
    p.add_argument("-nl", "--num_labels", type=int, default=400)
    p.add_argument("-bsz", "--batch_size", type=int, default=8)
    p.add_argument("--uratio", type=int, default=1)
    p.add_argument("--eval_batch_size", type=int, default=16)
    p.add_argument("--ema_m", type=float, default=0.999)
    p.add_argument("--ulb_loss_ratio", type=float, default=1.0)
    # optimizer
    p.add_argument("--optim", type=str, default="SGD")
    p.add_argument("--lr", type=float, default=3e-2)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--layer_decay", type=float, default=1.0)
    # backbone
    p.add_argument("--net", type=str, default="wrn_28_2")
    p.add_argument("--net_from_name", type=str2bool, default=False)
    p.add_argument("--use_pretrain", type=str2bool, default=False)
    p.add_argument("--pretrain_path", type=str, default="")
    # algorithm
    p.add_argument("-alg", "--algorithm", type=str, default="fixmatch")
    p.add_argument("--use_cat", type=str2bool, default=True)
    p.add_argument("--amp", type=str2bool, default=False)
    p.add_argument("--clip_grad", type=float, default=0)
    p.add_argument("-imb_alg", "--imb_algorithm", type=str, default=None)
    # data
    p.add_argument("--data_dir", type=str, default="./data")
    p.add_argument("-ds", "--dataset", type=str, default="cifar10")
    p.add_argument("-nc", "--num_classes", type=int, default=10)
    p.add_argument("--train_sampler", type=str, default="RandomSampler")
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--include_lb_to_ulb", type=str2bool, default=True)
    p.add_argument("--lb_imb_ratio", type=int, default=1)
    p.add_argument("--ulb_imb_ratio", type=int, default=1)
    p.add_argument("--ulb_num_labels", type=int, default=None)
    p.add_argument("--img_size", type=int, default=32)
    p.add_argument("--crop_ratio", type=float, default=0.875)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--max_length_seconds", type=float, default=4.0)
    p.add_argument("--sample_rate", type=int, default=16000)
    add_data_arguments(p)
    # distributed
    p.add_argument("--world_size", "--world-size", dest="world_size", type=int, default=1)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("-du", "--dist_url", "--dist-url", dest="dist_url", type=str, default="tcp://127.0.0.1:11111")
    # Default: nccl on CUDA, gloo on the CPU (USB's default is nccl); set explicitly, nccl asks for a GPU.
    p.add_argument("--dist_backend", "--dist-backend", dest="dist_backend", type=str, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gpu", default=None, help="GPU id to use ('None' for all)")
    p.add_argument("--multiprocessing_distributed", "--multiprocessing-distributed",
                   dest="multiprocessing_distributed", type=str2bool, default=False)
    # plugin
    p.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train: auto (CUDA if visible), cpu, or cuda")
    p.add_argument("--c", type=str, default="", help="USB YAML config file")
    p.add_argument("--benchmark_label", type=str, default=None,
                   help="the benchmark row a config belongs to (benchmark_configs); not read by training")
    return p


def known_keys(parser: argparse.ArgumentParser) -> Set[str]:
    """Every key a config may set: ``parser``'s, every registered algorithm's, and :data:`USB_UNPARSED_KEYS`."""
    from semilearn.core.utils import ALGORITHMS, IMB_ALGORITHMS

    known = {a.dest for a in parser._actions} - {"help"}
    for registry in (ALGORITHMS, IMB_ALGORITHMS):
        for name in registry.keys():
            known |= {a.name.lstrip("-").replace("-", "_") for a in registry[name].get_argument()}
    return known | USB_UNPARSED_KEYS


def _closest(key, known):
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def check_keys(keys: Iterable[str], known: Iterable[str], where: str) -> None:
    """A UserError naming the keys in ``keys`` that are not in ``known``, each with its closest known key."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        named = ", ".join(f"{k}{_closest(k, known)}" for k in unknown)
        raise UserError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}; fix the spelling or "
                        "remove it (no USB algorithm or rsmatch-usb reads it)")


def check_leftover_argv(leftover: List[str], known: Iterable[str]) -> None:
    """A UserError for command-line words the parser did not take (a misspelled ``--flag``); ``known``: its keys."""
    if not leftover:
        return
    word = leftover[0]
    if not word.startswith("-"):
        raise UserError(f"unexpected argument {word!r}; flags take the form --key value")
    key = word.lstrip("-").split("=", 1)[0].replace("-", "_")
    hint = _closest(key, known).replace("(did you mean ", "(did you mean --")
    raise UserError(f"unknown flag {word.split('=', 1)[0]}{hint}; see rsmatch-train --help")


def algorithm_arguments(algorithm: str, imb_algorithm: Optional[str] = None) -> List[Any]:
    """The ``get_argument()`` list of ``algorithm`` (and of ``imb_algorithm``); an unknown name is a UserError.

    Whatever the installed semilearn registered counts (USB main's extra algorithms too).
    """
    from semilearn.core.utils import ALGORITHMS, IMB_ALGORITHMS

    if algorithm not in ALGORITHMS:
        raise UserError(f"algorithm: unknown algorithm {algorithm!r}; use one of: "
                        f"{', '.join(sorted(ALGORITHMS.keys()))}")
    extra = list(ALGORITHMS[algorithm].get_argument())
    if imb_algorithm not in (None, "None"):
        if imb_algorithm not in IMB_ALGORITHMS:
            raise UserError(f"imb_algorithm: unknown {imb_algorithm!r}; use one of: "
                            f"{', '.join(sorted(IMB_ALGORITHMS.keys()))}")
        extra += list(IMB_ALGORITHMS[imb_algorithm].get_argument())
    return extra


def get_config(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` the way USB's train.py does, including ``get_argument()`` of the algorithm.

    Numeric values are then checked (:data:`NUMERIC_KEYS`, :func:`numeric_fallbacks`): a bad one is a
    UserError before anything is read or written.
    """
    import rsmatch_usb  # noqa: F401  (registers the plugin's algorithms)

    parser = base_parser()
    pre, _ = parser.parse_known_args(argv)
    file_values = load_yaml(pre.c) if pre.c else {}
    parser.set_defaults(**file_values)
    pre, _ = parser.parse_known_args(argv)

    extra = algorithm_arguments(pre.algorithm, pre.imb_algorithm)
    known = {a.dest for a in parser._actions}
    for argument in extra:
        if argument.name.lstrip("-").replace("-", "_") not in known:
            parser.add_argument(argument.name, type=argument.type, default=argument.default, help=argument.help)
    check_keys(file_values, known_keys(parser), f"config file {pre.c}")
    # Re-apply the file over the algorithm's own defaults.
    parser.set_defaults(**file_values)
    args, leftover = parser.parse_known_args(argv)
    # Flags are this run's parser's only, as in USB's train.py.
    check_leftover_argv(leftover, {a.dest for a in parser._actions} - {"help"})
    if args.imb_algorithm == "None":
        args.imb_algorithm = None
    if args.gpu in ("None", "none", ""):
        args.gpu = None
    elif args.gpu is not None:
        args.gpu = int(args.gpu)
    return check_numbers(args, {**numeric_fallbacks(parser), **NUMERIC_KEYS})


def numeric_fallbacks(parser: argparse.ArgumentParser) -> Mapping[str, NumberRange]:
    """A row for each int or float argument of ``parser`` that :data:`NUMERIC_KEYS` lacks (other algorithms' keys).

    Only the type, finite (no NaN or infinity), and null where the default is:
    ``mixup_alpha: nan`` is an error too, though no range is known for it.
    """
    return {a.dest: NumberRange(a.type, none_ok=a.default is None) for a in parser._actions
            if a.type in (int, float) and a.dest not in NUMERIC_KEYS}
