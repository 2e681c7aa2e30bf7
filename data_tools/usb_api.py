"""Where the installed semilearn's API differs between USB releases: the one place that knows.

Two USBs are in use: ``semilearn`` 0.3.2 from PyPI, and USB's GitHub main
branch (which still calls itself 0.3.2, so versions cannot tell them apart).
Each difference is detected here from the installed code itself, and the
rest of the project calls semilearn through what this module gives:

- ``BasicDataset.__init__``: main inserted ``medium_transform`` (the third
  view of its SequenceMatch) before ``strong_transform``. A call in 0.3.2's
  positional order then hands main the strong transform as the medium one and
  ``onehot=False`` as the strong one ("'bool' object is not callable" in a
  loader worker). Arguments are therefore passed by keyword, and the medium
  transform only where the signature has it.

Main also adds algorithms (``sequencematch``, ``refixmatch``, ``multimatch``)
to the registry; nothing here is needed for them: the train command accepts
whatever semilearn registered, with their config keys.
"""
import inspect
from typing import Any, Callable, Optional

from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

# The parameter names of the installed BasicDataset, in order.
BASIC_DATASET_PARAMETERS = tuple(inspect.signature(BasicDataset.__init__).parameters)
# USB main: unlabeled sets also carry a medium-strength view (RandAugment with one op).
TAKES_MEDIUM_TRANSFORM = "medium_transform" in BASIC_DATASET_PARAMETERS


def basic_dataset_arguments(alg: str, data: Any, targets: Any, num_classes: int, transform: Optional[Callable],
                            is_ulb: bool = False, strong_transform: Optional[Callable] = None,
                            medium_transform: Optional[Callable] = None, onehot: bool = False) -> dict:
    """Keyword arguments of the installed ``BasicDataset.__init__`` (``medium_transform`` only where it exists)."""
    arguments = dict(alg=alg, data=data, targets=targets, num_classes=num_classes, transform=transform,
                     is_ulb=is_ulb, strong_transform=strong_transform, onehot=onehot)
    if TAKES_MEDIUM_TRANSFORM:
        arguments["medium_transform"] = medium_transform
    return arguments
