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
import argparse
import difflib

from data_tools import config_files
from semilearn.algorithms.utils import str2bool

from .errors import UserError

# Keys that USB's own config/ files set but neither its train.py nor any
# algorithm's get_argument() defines: accepted, so every USB config loads
# unchanged. semilearn 0.3.2 ignores all three of its own; USB's main branch adds
# use_epass (which its CoMatch and SimMatch read from the file alone) and
# use_refix (read by nothing).
USB_UNPARSED_KEYS = frozenset({"clip", "dist_align_target", "simis_la", "use_epass", "use_refix"})


def load_yaml(path):
    """The ``--c`` config's keys and values (the shared loader; USB's dashes in keys read as underscores)."""
    # USB configs write dashes and underscores interchangeably for distributed keys.
    return {str(k).replace("-", "_"): v for k, v in config_files.load_yaml(path, "--c").items()}


def base_parser():
    """USB train.py's arguments (semilearn 0.3.2), the plugin's ``device``, and the RS-SSL data keys."""
    from data_tools.usb import add_data_arguments

    p = argparse.ArgumentParser(prog="rsmatch-train", description="Train a USB algorithm (rsmatch-usb)")
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


def known_keys(parser):
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


def check_keys(keys, known, where):
    """A UserError naming the keys in ``keys`` that are not in ``known``, each with its closest known key."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        named = ", ".join(f"{k}{_closest(k, known)}" for k in unknown)
        raise UserError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}; fix the spelling or "
                        "remove it (no USB algorithm or rsmatch-usb reads it)")


def check_leftover_argv(leftover, known):
    """A UserError for command-line words the parser did not take (a misspelled ``--flag``); ``known``: its keys."""
    if not leftover:
        return
    word = leftover[0]
    if not word.startswith("-"):
        raise UserError(f"unexpected argument {word!r}; flags take the form --key value")
    key = word.lstrip("-").split("=", 1)[0].replace("-", "_")
    hint = _closest(key, known).replace("(did you mean ", "(did you mean --")
    raise UserError(f"unknown flag {word.split('=', 1)[0]}{hint}; see rsmatch-train --help")


def algorithm_arguments(algorithm, imb_algorithm=None):
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


def get_config(argv=None):
    """Parse ``argv`` the way USB's train.py does, including ``get_argument()`` of the algorithm."""
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
    return args
