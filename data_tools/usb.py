"""Bridge from data_tools' image sets to USB's datasets and config keys.

:func:`get_dataset` has semilearn's ``get_dataset`` signature. The runtime
installs it so that every USB algorithm builds plugin datasets, and RS-SSL
contaminated ones, without a change to its code. Datasets the plugin does not
know fall through to semilearn.
"""
import numpy as np
from semilearn.core.utils import build as usb_build
from semilearn.datasets.augmentation import RandAugment
from semilearn.datasets.cv_datasets.datasetbase import BasicDataset
from semilearn.datasets.utils import split_ssl_data
from torchvision import transforms

from rsmatch_usb.errors import UserError

from .sources import REAL_SOURCES

# Datasets semilearn 0.3.2 builds itself (its get_dataset returns None otherwise).
USB_DATASETS = ("eurosat", "tissuemnist", "semi_aves", "semi_aves_out", "cifar10", "cifar100", "svhn",
                "stl10", "imagenet", "imagenet127", "esc50", "fsdnoisy", "gtzan", "superbks", "superbsi",
                "urbansound8k", "aclImdb", "ag_news", "amazon_review", "dbpedia", "yahoo_answers",
                "yelp_review")

# semilearn's get_dataset, kept before the runtime replaces the name AlgorithmBase uses.
_usb_get_dataset = usb_build.get_dataset


def add_data_arguments(parser):
    """Config keys of the RS-SSL data (documented in the README)."""
    parser.add_argument("--synthetic_source", type=str, default=None,
                        help="folder, manifest CSV, .npz, or 'bundled': synthetic images for the unlabeled set")
    parser.add_argument("--synthetic_ratio", type=float, default=0.0,
                        help="alpha = synthetic images / real unlabeled images")


def known_datasets():
    return sorted(set(REAL_SOURCES) | set(USB_DATASETS))


def check_dataset_name(name):
    if name not in REAL_SOURCES and name not in USB_DATASETS:
        raise UserError(f"dataset: unknown dataset {name!r}; use one of: {', '.join(known_datasets())}")


class RSSLDataset(BasicDataset):
    """USB's BasicDataset over an :class:`ImageSet`, read lazily.

    Unlabeled samples also carry ``is_synthetic_ulb``, the ground-truth origin
    flag, for analysis. USB's ``process_batch`` passes a train step only the
    keys in its signature, so no algorithm trains on it.
    """

    def __init__(self, alg, image_set, num_classes, transform, is_ulb=False, strong_transform=None):
        super().__init__(alg, image_set, image_set.labels, num_classes, transform, is_ulb,
                         strong_transform, False)

    def __sample__(self, idx):
        return self.data.load(idx), int(self.targets[idx])

    def __getitem__(self, idx):
        sample = super().__getitem__(idx)
        if self.is_ulb:
            sample["is_synthetic_ulb"] = bool(self.data.is_synthetic[idx])
        return sample


def build_transforms(img_size, crop_ratio, mean, std):
    """USB's classic-CV weak, strong (RandAugment(3, 5)) and eval transforms."""
    pad = int(img_size * (1 - crop_ratio))
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    weak = transforms.Compose([
        transforms.Resize((img_size, img_size)),
        transforms.RandomCrop(img_size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        *normalize])
    strong = transforms.Compose([
        transforms.Resize((img_size, img_size)),
        transforms.RandomCrop(img_size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        RandAugment(3, 5),
        *normalize])
    evaluation = transforms.Compose([transforms.Resize((img_size, img_size)), *normalize])
    return weak, strong, evaluation


def split_labeled(args, train_set, num_labels, num_classes, include_lb_to_ulb):
    """USB's class-balanced labeled/unlabeled split (semilearn's split_ssl_data)."""
    if num_labels % num_classes:
        raise UserError(f"num_labels: {num_labels} is not divisible by num_classes {num_classes}; "
                        "USB's balanced split needs the same number of labels per class")
    counts = np.bincount(train_set.labels, minlength=num_classes)
    if num_labels // num_classes > counts.min():
        raise UserError(f"num_labels: {num_labels} asks for {num_labels // num_classes} labels per class but "
                        f"the smallest class has {counts.min()} training images; lower num_labels")
    lb_idx, _, ulb_idx, _ = split_ssl_data(
        args, np.arange(len(train_set)), train_set.labels, num_classes,
        lb_num_labels=num_labels, ulb_num_labels=getattr(args, "ulb_num_labels", None),
        lb_imbalance_ratio=getattr(args, "lb_imb_ratio", 1), ulb_imbalance_ratio=getattr(args, "ulb_imb_ratio", 1),
        include_lb_to_ulb=include_lb_to_ulb)
    return train_set.subset(lb_idx), train_set.subset(ulb_idx)


def get_dataset(args, algorithm, dataset, num_labels, num_classes, data_dir="./data", include_lb_to_ulb=True):
    """semilearn's ``get_dataset`` for plugin datasets; others go to semilearn."""
    if dataset not in REAL_SOURCES:
        return _usb_get_dataset(args, algorithm, dataset, num_labels, num_classes, data_dir, include_lb_to_ulb)
    loader, mean, std = REAL_SOURCES[dataset]
    train_set, test_set = loader(args)
    if len(train_set.class_names) != num_classes:
        raise UserError(f"num_classes: {num_classes} does not match dataset {dataset!r}, which has "
                        f"{len(train_set.class_names)} classes; set num_classes: {len(train_set.class_names)}")
    lb_set, ulb_set = split_labeled(args, train_set, num_labels, num_classes, include_lb_to_ulb)
    if algorithm == "fullysupervised":
        # As USB's own loaders do: 'fullysupervised' sees every training label, while
        # its 'supervised' alias trains on the labeled split only.
        lb_set = train_set
    weak, strong, evaluation = build_transforms(args.img_size, args.crop_ratio, mean, std)
    return {
        "train_lb": RSSLDataset(algorithm, lb_set, num_classes, weak, False, strong),
        "train_ulb": RSSLDataset(algorithm, ulb_set, num_classes, weak, True, strong),
        "eval": RSSLDataset(algorithm, test_set, num_classes, evaluation),
        "test": None,
    }
