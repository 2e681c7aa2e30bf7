"""Write the RS-SSL benchmark's USB-style YAML configs: the paper grid and the CPU grids (digits, fashion).

In the spirit of USB's ``scripts/config_generator_classic_cv.py``: one YAML per
(algorithm, dataset, labels, alpha, seed) with USB's classic-CV
hyperparameters and USB's auto-resume pattern (``resume: True`` and
``load_path`` = the run's own ``latest_model.pth``). Algorithm-specific keys
come from the tables below, not from the algorithms' ``get_argument()``, so the
generator runs without importing torch; ``tests/test_benchmark_tools.py``
checks every file through ``rsmatch_usb.config.get_config``.

    python -m benchmark_configs.generate           # (re)write paper/, embedded/grid/ and fashion/grid/
    python -m benchmark_configs.generate --check   # exit 1 if the committed files are stale

Choices that are ours, not USB's, are marked "ours" below and in docs/benchmark.md.
"""
import argparse
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from io import StringIO

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_tools.config_files import parse_yaml  # noqa: E402
from data_tools.errors import command_name  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _rsmatch_settings():
    """RSMatch's settings module (the one source of its keys and defaults), loaded by path.

    Importing it through ``rsmatch_usb`` would import torch and semilearn; the file itself uses the
    standard library only.
    """
    path = os.path.join(os.path.dirname(HERE), "rsmatch_usb", "algorithms", "rsmatch", "config.py")
    spec = importlib.util.spec_from_file_location("rsmatch_settings", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


RSMATCH = _rsmatch_settings()
RSMATCH_DEFAULTS = RSMATCH.defaults()

ALPHAS = (0.0, 0.5, 1.0)
SEEDS = (0, 1, 2)

# semilearn 0.3.2's registry, in the row order of USB's result tables.
USB_ALGORITHMS = ("fullysupervised", "supervised", "pimodel", "pseudolabel", "meanteacher", "vat", "mixmatch",
                  "remixmatch", "uda", "fixmatch", "dash", "comatch", "crmatch", "flexmatch", "adamatch",
                  "simmatch", "freematch", "softmatch", "defixmatch")
PLUGIN_ALGORITHMS = ("openmatch", "iomatch", "rsmatch")
# How a benchmark label names an RSMatch run: its base (``rsmatch`` on FixMatch, else
# ``rs_<base>``), then a part for each switch set away from its default, in this order.
# VARIANTS is built with it and label_of reads configs back with it, so the two agree.
RS_SWITCH_PARTS = (("use_detector", "nodetector"), ("use_dummy_head", "filter"), ("use_queue", "noqueue"),
                   ("detector_oracle", "oracle"))


def _as_bool(value):
    """A switch's value as a config may hold it (``False``, ``"false"``, ``0``, ``"yes"``) as a bool."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y", "t")
    return bool(value)


def rsmatch_label(switches):
    """The benchmark label of RSMatch run with ``switches`` (RSMatch keys; the others at their defaults)."""
    setting = {**RSMATCH_DEFAULTS, **switches}
    base = str(setting["base_algorithm"]).lower()
    parts = ["rsmatch" if base == "fixmatch" else f"rs_{base}"]
    parts += [part for key, part in RS_SWITCH_PARTS if _as_bool(setting[key]) != RSMATCH_DEFAULTS[key]]
    return "_".join(parts)


# Benchmark labels that are RSMatch with ablation switches set (label: what it is).
VARIANTS = {rsmatch_label(switches): ("rsmatch", RSMATCH.settings(**switches)) for switches in (
    dict(use_dummy_head=False),  # rsmatch_filter: samples judged synthetic are discarded
    dict(use_queue=False),  # rsmatch_noqueue: detector trained PU-style throughout
    # rs_softmatch, rs_freematch: RSMatch on SoftMatch and FreeMatch, with their own keys.
    dict(base_algorithm="softmatch"),
    dict(base_algorithm="freematch"),
    # Diagnostics, not SSL methods: routing by the ground truth, the ceiling of the dummy head
    # (rsmatch_oracle) and of the filter (rsmatch_filter_oracle).
    dict(detector_oracle=True),
    dict(detector_oracle=True, use_dummy_head=False),
)}
# The oracle rows need something to route: they run on contaminated data only (alpha > 0).
CONTAMINATED_ONLY = ("rsmatch_oracle", "rsmatch_filter_oracle")
LABELS = USB_ALGORITHMS + ("openmatch", "iomatch", "rsmatch_filter", "rsmatch_noqueue", "rsmatch",
                           "rsmatch_filter_oracle", "rsmatch_oracle")

# ------------------------------------------------------------------ algorithms
_FIXMATCH = {"hard_label": True, "T": 0.5, "p_cutoff": 0.95, "ulb_loss_ratio": 1.0, "uratio": 7}

# USB's classic-CV values (its generator and committed configs). Keys an
# algorithm's get_argument() does not define are left out (USB writes p_cutoff
# for Dash, which Dash never reads). The plugin's algorithms: their defaults,
# which are the papers' values (docs/robust_baselines.md, docs/rsmatch.md).
ALGORITHM_KEYS = {
    "fullysupervised": {"uratio": 1},
    "supervised": {"uratio": 1},
    "pimodel": {"ulb_loss_ratio": 10, "uratio": 1, "unsup_warm_up": 0.4},
    "pseudolabel": {"p_cutoff": 0.95, "ulb_loss_ratio": 1.0, "uratio": 1, "unsup_warm_up": 0.4},
    "meanteacher": {"ulb_loss_ratio": 50, "uratio": 1, "unsup_warm_up": 0.4},
    "vat": {"uratio": 1},  # USB's VAT configs set nothing: train.py's defaults
    "mixmatch": {"uratio": 1, "mixup_alpha": 0.5, "T": 0.5, "ulb_loss_ratio": 100, "unsup_warm_up": 0.4},
    "remixmatch": {"mixup_alpha": 0.75, "T": 0.5, "kl_loss_ratio": 0.5, "ulb_loss_ratio": 1.5,
                   "rot_loss_ratio": 0.5, "unsup_warm_up": 1 / 64, "uratio": 1},
    "uda": {"tsa_schedule": "none", "T": 0.4, "p_cutoff": 0.8, "ulb_loss_ratio": 1.0, "uratio": 7},
    "fixmatch": dict(_FIXMATCH),
    "dash": {"gamma": 1.27, "C": 1.0001, "rho_min": 0.05, "num_wu_iter": 2048, "T": 0.5,
             "ulb_loss_ratio": 1.0, "uratio": 7},
    "comatch": {"hard_label": False, "p_cutoff": 0.95, "contrast_p_cutoff": 0.8, "contrast_loss_ratio": 1.0,
                "ulb_loss_ratio": 1.0, "proj_size": 64, "queue_batch": 5, "smoothing_alpha": 0.9, "uratio": 7,
                "T": 0.2, "da_len": 32},
    "crmatch": {"hard_label": True, "p_cutoff": 0.95, "ulb_loss_ratio": 1.0, "uratio": 7},
    "flexmatch": dict(_FIXMATCH, thresh_warmup=True),
    "adamatch": dict(_FIXMATCH, ema_p=0.999),
    "simmatch": {"p_cutoff": 0.95, "in_loss_ratio": 1.0, "ulb_loss_ratio": 1.0, "proj_size": 128,
                 "da_len": 32, "smoothing_alpha": 0.9, "uratio": 7, "T": 0.1},
    "freematch": {"hard_label": True, "T": 0.5, "ema_p": 0.999, "ent_loss_ratio": 0.001, "uratio": 7,
                  "use_quantile": False},
    "softmatch": {"hard_label": True, "T": 0.5, "dist_align": True, "dist_uniform": True, "per_class": False,
                  "ema_p": 0.999, "ulb_loss_ratio": 1.0, "n_sigma": 2, "uratio": 7},
    "defixmatch": dict(_FIXMATCH, ulb_loss_ratio=0.5),
    "openmatch": {"hard_label": True, "T": 1.0, "p_cutoff": 0.95, "lambda_oem": 0.1, "lambda_socr": 0.5,
                  "start_fix": 10240, "select_interval": 1024, "ulb_loss_ratio": 1.0, "uratio": 7},
    "iomatch": {"hard_label": True, "p_cutoff": 0.95, "q_cutoff": 0.5, "lambda_mb": 1.0, "lambda_open": 1.0,
                "proj_size": 128, "ulb_loss_ratio": 1.0, "uratio": 7},
    # RSMatch's switches written out; its other keys (queue, detector) keep the algorithm's defaults.
    "rsmatch": dict(_FIXMATCH, **{k: RSMATCH_DEFAULTS[k] for k in ("use_detector", "use_dummy_head", "use_queue")}),
}

# Dataset-specific values: USB's (MixMatch on CIFAR-100; SimMatch's temperature
# is 0.1 on CIFAR-like data and 0.2 elsewhere; CoMatch/SimMatch on ImageNet from
# USB's committed ImageNet configs, batch and uratio kept grid-wide) and
# OpenMatch's paper value of lambda_socr beyond CIFAR-10.
DATASET_KEYS = {
    ("mixmatch", "cifar100"): {"ulb_loss_ratio": 150},
    ("simmatch", "tiny_imagenet"): {"T": 0.2},
    ("simmatch", "imagenet"): {"p_cutoff": 0.7, "T": 0.1, "da_len": 256},
    ("comatch", "imagenet"): {"p_cutoff": 0.7, "contrast_p_cutoff": 0.2, "proj_size": 128, "T": 0.1,
                              "da_len": 128},
    ("openmatch", "cifar100"): {"lambda_socr": 1.0},
    ("openmatch", "tiny_imagenet"): {"lambda_socr": 1.0},
    ("openmatch", "imagenet"): {"lambda_socr": 1.0},
}

# ---------------------------------------------------------------- the grids
@dataclass(frozen=True)
class Dataset:
    """One dataset of a grid: its label counts, net, image size and synthetic source."""
    name: str
    num_classes: int
    labels: tuple
    net: str
    img_size: int
    weight_decay: float
    synthetic_source: str
    crop_ratio: float = 0.875
    extra: dict = field(default_factory=dict)


PAPER_DATASETS = (
    Dataset("cifar10", 10, (40, 250, 4000), "wrn_28_2", 32, 5e-4, "./data/synthetic/cifar10_sd14"),
    # wrn_28_8 as in FixMatch's CIFAR-100 protocol (USB's generator has it commented out).
    Dataset("cifar100", 100, (400, 2500), "wrn_28_8", 32, 1e-3, "./data/synthetic/cifar100_sd14"),
    # Ours: 4 and 25 labels per class as for CIFAR-100; images at 32x32 so every
    # USB algorithm runs (CRMatch's head assumes an 8x8 feature map of a WRN).
    Dataset("tiny_imagenet", 200, (800, 5000), "wrn_28_8", 32, 1e-3, "./data/synthetic/tiny_imagenet_sd14"),
    # Ours: ImageNet-100 (CMC's class list), ~10% labels; USB's ImageNet net and weight decay.
    Dataset("imagenet", 100, (13000,), "resnet50", 224, 3e-4, "./data/synthetic/imagenet100_sd14",
            extra={"class_list": "./benchmark_configs/paper/imagenet100_classes.txt"}),
)
EMBEDDED_DATASETS = (
    Dataset("digits", 10, (40,), "resnet_tiny", 16, 5e-4, "bundled"),
)
# The three bundled Fashion-MNIST generators (data_tools/make_synthetic_fashion.py: one diffusion model sampled
# with classifier-free guidance by DDIM 25 steps and by DPM-Solver++ 4 steps, and a conditional GAN), mixed with
# equal weights; the names are those of the bundled .npz files. Each sampler's guidance scale (DDIM 1.5,
# DPM-Solver++ 2) was chosen on images no run uses (docs/synthetic_fashion.md, "Guidance scale").
FASHION_SOURCES = ("bundled:fashion_ddim25_cfg1.5", "bundled:fashion_dpmsolver4_cfg2",
                   "bundled:fashion_cgan")
FASHION_DATASETS = (
    # Ours: the embedded grid's net on Fashion-MNIST at its native 28x28 (a generator's traces live in fine
    # detail, which resizing blurs); 10,000 real unlabeled images (1,000 per class, plus the labeled ones
    # with USB's include_lb_to_ulb).
    Dataset("fashion_mnist", 10, (40,), "resnet_tiny", 28, 5e-4, FASHION_SOURCES,
            extra={"ulb_num_labels": 10000}),
)

# Shared by every config of a grid.
PAPER_SCHEDULE = {
    "epoch": 1024, "num_train_iter": 2 ** 20,
    # Ours: USB uses 5120, which does not divide 2**20, so the final iteration's
    # evaluation is never logged; 4096 makes the last logged evaluation the final one.
    "num_eval_iter": 4096, "num_log_iter": 256,
    "batch_size": 64, "eval_batch_size": 256, "ema_m": 0.999,
    "num_workers": 4,
}
# Clean FixMatch on the validation split, seed 0, is within a point of a run four times as long
# (docs/benchmark.md, "Iteration count").
FASHION_ITERATIONS = 2000
EMBEDDED_SCHEDULE = {
    # About 0.03 s per FixMatch iteration on two idle cores; see docs/benchmark.md.
    "epoch": 1, "num_train_iter": 500, "num_eval_iter": 100, "num_log_iter": 50,
    "batch_size": 16, "eval_batch_size": 512, "ema_m": 0.99,
    "num_workers": 0,
}
FASHION_SCHEDULE = dict(
    EMBEDDED_SCHEDULE,
    # Four evaluations of the 10,000 test images: best and final accuracy.
    num_train_iter=FASHION_ITERATIONS, num_eval_iter=FASHION_ITERATIONS // 4, num_log_iter=100,
)
# Five seeds resolve differences of about a point where three could not (paired seeds of the 28-px study).
FASHION_SEEDS = (0, 1, 2, 3, 4)
# The embedded schedule is ~2000x shorter, so iteration counts and EMA time
# constants of the algorithms are shortened too (ours); uratio is capped at 3.
EMBEDDED_URATIO = 3
EMBEDDED_KEYS = {
    "openmatch": {"start_fix": 100, "select_interval": 50},
    "dash": {"num_wu_iter": 100, "num_wu_eval_iter": 50},
    "adamatch": {"ema_p": 0.99},
    "freematch": {"ema_p": 0.99},
    "softmatch": {"ema_p": 0.99},
    # A smaller detector and queue for 10 classes of ~150 synthetic images, as in
    # the RSMatch demo config benchmark_configs/embedded/rsmatch_digits.yaml.
    # The committed digits results were run with the detector on RGB pixels, the default until the
    # development study chose rgb+npr (docs/rsmatch.md, "Detector input"); pinned so the grid reproduces them.
    "rsmatch": RSMATCH.settings(detector_width=8, queue_size=32, queue_min_fill=8, detector_input="rgb"),
}


# Fashion's schedule is FASHION_ITERATIONS long and its unlabeled set 10k-20k images:
# OpenMatch starts FixMatch after 20% of training, as on digits, and re-selects
# inliers (a pass over the whole unlabeled set) about once per epoch, as its paper does (ours).
FASHION_KEYS = {
    "openmatch": {"start_fix": FASHION_ITERATIONS // 5, "select_interval": 250},
    # RSMatch's default detector input, chosen on digits (docs/rsmatch.md, "Detector input").
    "rsmatch": RSMATCH.settings(detector_input=RSMATCH_DEFAULTS["detector_input"]),
}


@dataclass(frozen=True)
class Family:
    """A set of config files: where they go, where their runs go, what they share."""
    name: str
    folder: str            # relative to benchmark_configs/
    save_dir: str
    datasets: tuple
    schedule: dict
    alphas: tuple = ALPHAS
    seeds: tuple = SEEDS
    labels: tuple = LABELS
    results: str = None    # committed results file the runner records finished runs in (repo-relative)
    cpu_keys: bool = False  # the embedded CPU grid's shortened algorithm keys (EMBEDDED_KEYS)
    keys: dict = field(default_factory=dict)  # algorithm -> keys of this family, over all the others


# The fashion grid's rows: the baselines, RSMatch, its filter ablation, RSMatch on SoftMatch and FreeMatch,
# and the two oracle diagnostics.
FASHION_LABELS = ("supervised", "fixmatch", "flexmatch", "freematch", "softmatch", "openmatch", "iomatch",
                  "rsmatch_filter", "rsmatch", "rs_softmatch", "rs_freematch", "rsmatch_filter_oracle",
                  "rsmatch_oracle")

FAMILIES = {
    "paper": Family("paper", "paper", "./saved_models/rsssl", PAPER_DATASETS, PAPER_SCHEDULE),
    "embedded": Family("embedded", os.path.join("embedded", "grid"), "./saved_models/embedded_grid",
                       EMBEDDED_DATASETS, EMBEDDED_SCHEDULE, results="docs/results/embedded/results.csv",
                       cpu_keys=True),
    "fashion": Family("fashion", os.path.join("fashion", "grid"), "./saved_models/fashion_grid",
                      FASHION_DATASETS, FASHION_SCHEDULE, seeds=FASHION_SEEDS, labels=FASHION_LABELS,
                      results="docs/results/fashion/results.csv", cpu_keys=True, keys=FASHION_KEYS),
}

# Named grids for the runner: a family and its parts, each part (labels, alphas); None means all.
GRIDS = {
    "paper": ("paper", [(None, None)]),
    "embedded_full": ("embedded", [(None, None)]),
    "embedded": ("embedded", [(("supervised", "fixmatch", "flexmatch", "freematch", "softmatch", "rsmatch",
                                "rsmatch_filter", "rsmatch_filter_oracle", "rsmatch_oracle"), None)]),
    "embedded_robust": ("embedded", [(("openmatch", "iomatch"), (0.0, 1.0))]),
    # The RS study (issue 22): what the README's claims rest on, run first.
    "fashion_study": ("fashion", [(("fixmatch", "rsmatch", "rsmatch_oracle", "rsmatch_filter", "softmatch",
                                    "rs_softmatch"), (1.0,)),
                                  (("fixmatch", "rsmatch"), (0.0,))]),
    "fashion": ("fashion", [(None, None)]),
}


@dataclass(frozen=True)
class RunSpec:
    """One generated config: its identity, its file (relative to benchmark_configs/) and its keys."""
    family: str
    label: str
    algorithm: str
    dataset: str
    num_labels: int
    alpha: float
    seed: int
    path: str
    config: dict


def alpha_tag(alpha):
    """``0``, ``0.5``, ``1``: alpha as it appears in save names."""
    return f"{float(alpha):g}"


def save_name(label, dataset, num_labels, alpha, seed):
    """The run's folder name: ``<label>_<dataset>_<labels>_alpha<alpha>_<seed>``."""
    return f"{label}_{dataset}_{num_labels}_alpha{alpha_tag(alpha)}_{seed}"


def label_of(args):
    """The benchmark label of a run from its config keys (a dict): ``benchmark_label``, else derived.

    Derivation covers configs written by hand: an rsmatch run is named by
    :func:`rsmatch_label`, as the generator names its variants.
    """
    label = args.get("benchmark_label")
    if label:
        return str(label)
    algorithm = str(args.get("algorithm", "unknown"))
    if algorithm != "rsmatch":
        return algorithm
    return rsmatch_label({key: args[key] for key in RSMATCH_DEFAULTS if key in args})


# USB's own ImageNet configs use uratio 1 (at 224 px, 64 + 2 x 448 images per step
# with uratio 7 need about 100 GiB of activations: no GPU holds them).
DATASET_URATIO = {"imagenet": 1}


def algorithm_keys(label, dataset, num_labels, family):
    """``(algorithm, keys)`` of a benchmark label on a dataset, for a grid family."""
    algorithm, switches = VARIANTS.get(label, (label, {}))
    # An RS variant on another base takes that base's own keys (thresholds, weighting) too.
    bases = [algorithm]
    if "base_algorithm" in switches:
        bases.append(switches["base_algorithm"])
    keys = {}
    for name in bases:
        keys.update(ALGORITHM_KEYS[name])
    keys.update(DATASET_KEYS.get((algorithm, dataset), {}))
    if dataset in DATASET_URATIO:
        keys["uratio"] = min(keys["uratio"], DATASET_URATIO[dataset])
    if algorithm == "simmatch":
        keys["K"] = num_labels  # USB overrides K with the labeled set's size; written for readers
    if FAMILIES[family].cpu_keys:
        for name in bases:
            keys.update(EMBEDDED_KEYS.get(name, {}))
        keys["uratio"] = min(keys["uratio"], EMBEDDED_URATIO)
    keys.update(FAMILIES[family].keys.get(algorithm, {}))
    keys.update(switches)
    return algorithm, keys


def make_config(family, label, ds, num_labels, alpha, seed):
    """The ordered key/value mapping of one config file (USB's key order where USB has the key)."""
    fam = FAMILIES[family]
    algorithm, alg_keys = algorithm_keys(label, ds.name, num_labels, family)
    name = save_name(label, ds.name, num_labels, alpha, seed)
    sched = fam.schedule
    cfg = {
        "algorithm": algorithm,
        "save_dir": fam.save_dir,
        "save_name": name,
        "resume": True,
        "load_path": f"{fam.save_dir}/{name}/latest_model.pth",
        "overwrite": True,
        "use_tensorboard": False,
        "use_wandb": False,
        "epoch": sched["epoch"],
        "num_train_iter": sched["num_train_iter"],
        "num_eval_iter": sched["num_eval_iter"],
        "num_log_iter": sched["num_log_iter"],
        "num_labels": num_labels,
        "batch_size": sched["batch_size"],
        "eval_batch_size": sched["eval_batch_size"],
    }
    cfg.update(alg_keys)
    cfg.update({
        "ema_m": sched["ema_m"],
        "crop_ratio": ds.crop_ratio,
        "img_size": ds.img_size,
        "optim": "SGD",
        "lr": 0.03,
        "momentum": 0.9,
        "weight_decay": ds.weight_decay,
        "layer_decay": 1.0,
        "amp": False,
        "clip_grad": 0.0,
        "use_cat": True,
        "net": ds.net,
        "net_from_name": False,
        "data_dir": "./data",
        "dataset": ds.name,
        "train_sampler": "RandomSampler",
        "num_classes": ds.num_classes,
        "num_workers": sched["num_workers"],
    })
    cfg.update(ds.extra)
    cfg.update({
        "synthetic_source": list(ds.synthetic_source) if isinstance(ds.synthetic_source, tuple)
        else ds.synthetic_source,
        "synthetic_ratio": float(alpha),
        "seed": seed,
        # One process on one device; multi-GPU DDP is a flag away
        # (--multiprocessing_distributed True --gpu None), as in USB.
        "world_size": 1,
        "rank": 0,
        "multiprocessing_distributed": False,
        # The paper grid asks for GPU 0, so under 'device: auto' a job without a
        # GPU stops with an error; the embedded grid runs wherever it is started.
        "gpu": 0 if family == "paper" else None,
        "device": "auto",
        # Not read by the train command (kept on args, logged): the report's row name.
        "benchmark_label": label,
    })
    return cfg


def family_specs(family):
    """Every RunSpec of a grid family, in a stable order."""
    fam = FAMILIES[family]
    specs = []
    for label in fam.labels:
        algorithm = VARIANTS.get(label, (label, None))[0]
        alphas = [a for a in fam.alphas if a > 0] if label in CONTAMINATED_ONLY else fam.alphas
        for ds in fam.datasets:
            for num_labels in ds.labels:
                for alpha in alphas:
                    for seed in fam.seeds:
                        cfg = make_config(family, label, ds, num_labels, alpha, seed)
                        path = os.path.join(fam.folder, label, cfg["save_name"] + ".yaml")
                        specs.append(RunSpec(family, label, algorithm, ds.name, num_labels, float(alpha), seed,
                                             path, cfg))
    return specs


def all_specs():
    return [spec for family in FAMILIES for spec in family_specs(family)]


def select(grid):
    """The RunSpecs of a named grid (see GRIDS), in the family's order; KeyError for an unknown name."""
    family, parts = GRIDS[grid]
    return [s for s in family_specs(family)
            if any((labels is None or s.label in labels) and (alphas is None or s.alpha in alphas)
                   for labels, alphas in parts)]


# ---------------------------------------------------------------- GPU memory
# Per (net, img_size, num_classes): activation bytes autograd saves per training
# image (fp32) and the parameter count, measured by
# ``python -m benchmark_configs.memory NET:IMG_SIZE:CLASSES`` (kept here so the
# generator runs without torch; tests/test_gpu_readiness.py re-measures it).
NET_MEMORY = {
    ("wrn_28_2", 32, 10): (3828352, 1467626),        # 3.65 MiB per image
    ("wrn_28_8", 32, 100): (14882944, 23401028),     # 14.19 MiB
    ("wrn_28_8", 32, 200): (14882944, 23452328),     # 14.19 MiB
    ("resnet50", 224, 100): (86121984, 23712932),    # 82.13 MiB
    ("resnet_tiny", 16, 10): (239488, 78042),        # 0.23 MiB
    ("resnet_tiny", 32, 10): (932736, 78042),        # 0.89 MiB
}
# Unlabeled views each train step forwards with gradient (the labeled batch is one
# more), from the algorithms' train steps; FixMatch-like algorithms forward two.
ULB_VIEWS = {"fullysupervised": 0, "supervised": 0, "openmatch": 3, "comatch": 3, "remixmatch": 3, "crmatch": 3}
# The backward pass's transient gradients and the allocator's slack on top of the
# saved activations (ours); weights, gradients, momentum and the EMA copy: 4 x fp32
# per parameter; cuDNN workspace and the like: 1 GiB.
ACTIVATION_MARGIN = 1.25
FIXED_GIB = 1.0
DEFAULT_GPU_GIB = 80.0


def net_memory(net, img_size, num_classes):
    """``(activation bytes per image, parameters)``: from NET_MEMORY, else measured now (needs torch)."""
    key = (net, img_size, num_classes)
    if key not in NET_MEMORY:
        from benchmark_configs.memory import measure

        NET_MEMORY[key] = measure(*key)
    return NET_MEMORY[key]


def images_per_step(config):
    """Images one train step forwards with gradient, per process: ``batch_size`` is per GPU."""
    return config["batch_size"] * (1 + ULB_VIEWS.get(config["algorithm"], 2) * config["uratio"])


def estimated_gpu_gib(config):
    """Estimated peak GPU memory (GiB) of one training process of ``config``, in fp32 (amp needs less)."""
    act, params = net_memory(config["net"], config["img_size"], config["num_classes"])
    total = ACTIVATION_MARGIN * act * images_per_step(config) + 16 * params
    return total / 2 ** 30 + FIXED_GIB


def too_large(specs, gpu_gib):
    """``[(spec, GiB)]`` of the configs whose estimate exceeds ``gpu_gib``."""
    sized = ((spec, estimated_gpu_gib(spec.config)) for spec in specs)
    return [(spec, gib) for spec, gib in sized if gib > gpu_gib]


# ------------------------------------------------------------------- writing
def _scalar(value):
    """A YAML scalar that reads back as ``value`` (bools and None spelled as USB writes them)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite config value {value}")
        text = repr(value)
        return text if "e" not in text else f"{value:.12f}".rstrip("0")
    text = str(value)
    plain = text and not any(c in text for c in ":#{}[],&*!|>'\"%@`") and text.strip() == text \
        and text.lower() not in ("true", "false", "yes", "no", "on", "off", "null", "~")
    try:
        float(text)
        plain = False  # a string that looks like a number must stay a string
    except ValueError:
        pass
    return text if plain else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(spec):
    """The text of a config file."""
    ds = f"{spec.dataset}, {spec.num_labels} labels, alpha {alpha_tag(spec.alpha)}, seed {spec.seed}"
    cfg = spec.config
    lines = [f"# RS-SSL {spec.family} grid: {spec.label} on {ds}.",
             "# Generated by benchmark_configs/generate.py; edit the generator, not this file.",
             f"# Estimated GPU memory per process: {estimated_gpu_gib(cfg):.1f} GiB in fp32 "
             f"({images_per_step(cfg)} images per step at {cfg['img_size']} px; batch_size is per GPU)."]
    lines += [f"{key}: {_scalar(value)}" for key, value in spec.config.items()]
    return "\n".join(lines) + "\n"


def _load(text):
    return parse_yaml(StringIO(text))


def _check_roundtrip(spec, text):
    loaded = _load(text)
    if loaded != spec.config:
        diff = {k: (v, loaded.get(k)) for k, v in spec.config.items() if loaded.get(k) != v}
        raise AssertionError(f"{spec.path}: YAML does not read back as written: {diff}")


def generated_files(root=HERE, verify=True):
    """``{absolute path: text}`` of every config the generator writes under ``root``.

    ``verify`` reads each text back and compares it with the intended values (done when writing).
    """
    files = {}
    for spec in all_specs():
        text = render(spec)
        if verify:
            _check_roundtrip(spec, text)
        files[os.path.join(root, spec.path)] = text
    return files


def _existing_yamls(root):
    found = set()
    for fam in FAMILIES.values():
        top = os.path.join(root, fam.folder)
        if not os.path.isdir(top):
            continue
        for label in os.listdir(top):
            folder = os.path.join(top, label)
            if os.path.isdir(folder):
                found |= {os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".yaml")}
    return found


def stale_files(root=HERE):
    """Paths under ``root`` that differ from, are missing from, or are not part of the generator's output."""
    files = generated_files(root, verify=False)
    stale = []
    for path, text in files.items():
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(path)
        except FileNotFoundError:
            stale.append(path)
    stale += sorted(_existing_yamls(root) - set(files))
    return stale


def write_all(root=HERE):
    """Write every config under ``root``; remove YAMLs in the grid folders it no longer makes."""
    files = generated_files(root)
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    removed = sorted(_existing_yamls(root) - set(files))
    for path in removed:
        os.remove(path)
    return len(files), removed


def main(argv=None):
    p = argparse.ArgumentParser(prog=command_name("rsmatch-bench-generate", "benchmark_configs.generate"),
                                description="Write the RS-SSL benchmark's YAML configs (paper and embedded grids).")
    p.add_argument("--root", default=HERE, help="folder that receives paper/ and embedded/grid/ "
                                                "(default: benchmark_configs/)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file is missing or stale")
    p.add_argument("--gpu-gib", type=float, default=DEFAULT_GPU_GIB,
                   help=f"GPU memory (GiB) every config must fit, by the estimate (default {DEFAULT_GPU_GIB:g})")
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        p.error(f"--root {args.root} is not a folder")
    over = too_large(all_specs(), args.gpu_gib)
    if over:
        worst, gib = max(over, key=lambda item: item[1])
        p.exit(2, f"{p.prog}: error: {len(over)} config(s) need more than {args.gpu_gib:g} GiB of GPU memory "
                  f"per process by the estimate (largest: {worst.path}, {gib:.1f} GiB); lower batch_size or "
                  f"uratio in the generator, or give --gpu-gib for a larger GPU; nothing written\n")
    if args.check:
        stale = stale_files(args.root)
        for path in stale[:20]:
            print(f"stale: {os.path.relpath(path, args.root)}")
        if stale:
            print(f"{len(stale)} config file(s) are stale; run python -m benchmark_configs.generate", file=sys.stderr)
            return 1
        print("configs are up to date")
        return 0
    count, removed = write_all(args.root)
    for path in removed:
        print(f"removed {os.path.relpath(path, args.root)}")
    counts = {name: len(family_specs(name)) for name in FAMILIES}
    print(f"wrote {count} configs under {args.root} ({', '.join(f'{n}: {c}' for n, c in counts.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
