"""Run by test_export_usb in a fresh process: USB with the RSMatch export applied, and no plugin.

Usage: python export_usb_child.py USB_ROOT CONFIG RUNTIME_PY SAVE_DIR

USB_ROOT is a USB tree the export was applied to; CONFIG is an
exported RSMatch config, shrunk here to a few CPU iterations on a tiny
in-memory image set; RUNTIME_PY is the plugin's runtime.py, loaded by path so
that its CPU stand-ins for semilearn's CUDA calls are available without
importing rsmatch_usb (USB itself trains on CUDA only). Any import of
rsmatch_usb or data_tools fails. Prints one JSON line of findings at the end.
"""
import argparse
import importlib.abc
import importlib.util
import inspect
import json
import os
import random
import sys

usb_root, config_path, runtime_path, save_dir = sys.argv[1:5]
sys.path.insert(0, usb_root)

PLUGIN = ("rsmatch_usb", "data_tools")


class _NoPlugin(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PLUGIN:
            raise ImportError(f"{name} was imported while running the USB export")
        return None


sys.meta_path.insert(0, _NoPlugin())

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from ruamel.yaml import YAML  # noqa: E402

import semilearn  # noqa: E402  (imports every algorithm listed in its registry.py)
from semilearn.core.utils import ALGORITHMS  # noqa: E402

assert os.path.realpath(semilearn.__file__).startswith(os.path.realpath(usb_root)), semilearn.__file__
assert "rsmatch" in ALGORITHMS, f"rsmatch is not registered; registry holds {sorted(ALGORITHMS.keys())}"
registered = ALGORITHMS["rsmatch"]
assert registered.__module__ == "semilearn.algorithms.rsmatch.rsmatch", registered.__module__
assert os.path.realpath(inspect.getfile(registered)).startswith(os.path.realpath(usb_root))
assert not [m for m in sys.modules if m.split(".")[0] in PLUGIN]

spec = importlib.util.spec_from_file_location("_cpu_runtime", runtime_path)
runtime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
runtime.activate_cpu()

# ---------------------------------------------------------------- a tiny image set
import semilearn.core.algorithmbase as algorithmbase  # noqa: E402
from semilearn.datasets import split_ssl_data  # noqa: E402
from semilearn.datasets.augmentation import RandAugment  # noqa: E402
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset  # noqa: E402
from torchvision import transforms  # noqa: E402


def tiny_images(num_classes, per_class, size, seed):
    """Class c: noise around a colour of its own, as HWC uint8 images."""
    rng = np.random.RandomState(seed)
    colours = rng.randint(0, 256, (num_classes, 3))
    targets = np.repeat(np.arange(num_classes), per_class)
    noise = rng.randint(-40, 41, (len(targets), size, size, 3))
    return np.clip(colours[targets][:, None, None, :] + noise, 0, 255).astype(np.uint8), targets


def get_dataset(args, algorithm, dataset, num_labels, num_classes, data_dir="./data", include_lb_to_ulb=True):
    """semilearn's get_dataset for the tiny set (AlgorithmBase looks the name up in its module)."""
    size = args.img_size
    data, targets = tiny_images(num_classes, 8, size, seed=0)
    eval_data, eval_targets = tiny_images(num_classes, 2, size, seed=1)
    lb_data, lb_targets, ulb_data, ulb_targets = split_ssl_data(args, data, targets, num_classes, num_labels,
                                                                include_lb_to_ulb=include_lb_to_ulb)
    weak = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    strong = transforms.Compose([transforms.RandomHorizontalFlip(), RandAugment(3, 5), transforms.ToTensor()])
    # By keyword: USB main's BasicDataset has medium_transform before strong_transform.
    return {"train_lb": BasicDataset(alg=algorithm, data=lb_data, targets=lb_targets, num_classes=num_classes,
                                     transform=weak, is_ulb=False, strong_transform=strong),
            "train_ulb": BasicDataset(alg=algorithm, data=ulb_data, targets=ulb_targets, num_classes=num_classes,
                                      transform=weak, is_ulb=True, strong_transform=strong),
            "eval": BasicDataset(alg=algorithm, data=eval_data, targets=eval_targets, num_classes=num_classes,
                                 transform=transforms.ToTensor()),
            "test": None}


algorithmbase.get_dataset = get_dataset


class TinyNet(nn.Module):
    """USB's net contract ({'logits', 'feat'}, only_fc, only_feat, num_features) in one conv layer."""

    def __init__(self, num_classes, **kwargs):
        super().__init__()
        self.num_features = 8
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x, only_fc=False, only_feat=False, **kwargs):
        if only_fc:
            return self.classifier(x)
        feat = self.features(x)
        if only_feat:
            return feat
        return {"logits": self.classifier(feat), "feat": feat}


# ---------------------------------------------------------------- train
with open(config_path) as f:
    config = YAML(typ="safe", pure=True).load(f)
# The algorithm's own keys at their get_argument() defaults where the config leaves them out, as
# USB's train.py adds them to its parser; then train.py's defaults for keys its configs leave out.
for argument in registered.get_argument():
    config.setdefault(argument.name.lstrip("-"), argument.default)
config.update(clip_grad=0.0, imb_algorithm=None, include_lb_to_ulb=True, lb_imb_ratio=1, ulb_imb_ratio=1,
              ulb_num_labels=None, num_warmup_iter=0, use_aim=False, use_pretrain=False, pretrain_path="")
# Six classes: USB main's evaluation also scores top-5 accuracy, which a 2-class set cannot have.
# Shrunk to 2 CPU iterations. The detector is trusted once the queue holds anything (min fill 0,
# every score pushed) and then judges every sample synthetic (threshold 0), so the queue draws and
# the dummy head run from the second iteration on.
config.update(num_train_iter=2, epoch=1, num_eval_iter=2, num_log_iter=1, num_classes=6, num_labels=12,
              batch_size=4, uratio=2, eval_batch_size=16, img_size=16, num_workers=0, p_cutoff=0.0,
              detector_width=4, detector_threshold=0.0, queue_size=4, queue_min_fill=0, queue_min_score=0.0,
              detector_calib_per_class=0,  # no calibration floor under the threshold of 0
              queue_push_classes=2, queue_push_per_class=4,
              multiprocessing_distributed=False, distributed=False, gpu=None, use_tensorboard=False,
              save_dir=save_dir, data_dir=save_dir, seed=0)
args = argparse.Namespace(**config)
assert args.algorithm == "rsmatch"

# Seeded as USB's train.py does (RandAugment draws from Python's random).
random.seed(args.seed)
torch.manual_seed(args.seed)
np.random.seed(args.seed)
from semilearn.algorithms import get_algorithm  # noqa: E402

algorithm = get_algorithm(args, TinyNet, None, None)
# rsmatch is RSMatch on FixMatch, the class registered in the exported module.
assert type(algorithm) is registered and type(algorithm).__name__ == "RSMatch"
algorithm.train()

# weights_only: the exported RSMatch's checkpoint holds tensors and plain containers only, as the plugin's does.
checkpoint = torch.load(os.path.join(save_dir, args.save_name, "latest_model.pth"), map_location="cpu",
                        weights_only=True)
parts = [algorithm, algorithm.extra_heads, algorithm.csqueue, algorithm.detector, algorithm.detector.net,
         algorithm.detector.ema]
print(json.dumps({
    "iterations": algorithm.it,
    "algorithms": sorted(ALGORITHMS.keys()),
    "basic_dataset_parameters": list(inspect.signature(BasicDataset.__init__).parameters),
    "checkpoint_keys": sorted(checkpoint),
    "detector_trusted": bool(algorithm.router.trusted),
    "queued": len(algorithm.csqueue),
    "last_step": {k: v for k, v in algorithm.log_dict.items() if k.startswith("train/")},
    "module_of_parts": sorted({type(p).__module__ for p in parts}),
    "plugin_modules": sorted(m for m in sys.modules if m.split(".")[0] in PLUGIN),
    "semilearn_outside_copy": sorted(m for m, mod in sys.modules.items()
                                     if m.split(".")[0] == "semilearn" and getattr(mod, "__file__", None)
                                     and not os.path.realpath(mod.__file__).startswith(os.path.realpath(usb_root))),
}))
