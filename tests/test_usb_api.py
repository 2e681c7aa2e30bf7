"""The plugin's datasets against both BasicDataset signatures: semilearn 0.3.2's and USB main's."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, digits_args
from usb_trees import usb_tree

# Builds the plugin's digits datasets with the semilearn first on sys.path; prints what they hold.
BUILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import semilearn
from data_tools import usb, usb_api
from conftest import digits_args

np.random.seed(0)
args = digits_args(synthetic_ratio=1.0)
sets = usb.get_dataset(args, "fixmatch", "digits", 40, 10)
ulb = sets["train_ulb"]
sample = ulb[0]
medium = getattr(ulb, "medium_transform", None)
print(json.dumps({
    "semilearn": semilearn.__file__,
    "parameters": list(usb_api.BASIC_DATASET_PARAMETERS),
    "strong_ops": [t.n for t in ulb.strong_transform.transforms if type(t).__name__ == "RandAugment"],
    "medium_ops": [t.n for t in medium.transforms if type(t).__name__ == "RandAugment"] if medium else None,
    "sample": {k: list(v.shape) if hasattr(v, "shape") else v for k, v in sample.items()},
    "lengths": [len(sets["train_lb"]), len(ulb), len(sets["eval"])],
}))
"""


def _build(semilearn_root):
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", BUILD, str(semilearn_root)],
                          cwd=f"{REPO}/tests", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_dataset_builds_against_semilearn_0_3_2():
    from data_tools import usb, usb_api

    assert not usb_api.TAKES_MEDIUM_TRANSFORM
    np.random.seed(0)
    sets = usb.get_dataset(digits_args(synthetic_ratio=1.0), "fixmatch", "digits", 40, 10)
    ulb = sets["train_ulb"]
    assert [t.n for t in ulb.strong_transform.transforms if type(t).__name__ == "RandAugment"] == [3]
    assert getattr(ulb, "medium_transform", None) is None
    sample = ulb[0]
    assert sample["x_ulb_s"].shape == (3, 16, 16) and sample["is_synthetic_ulb"] in (True, False)
    assert [len(sets["train_lb"]), len(ulb)] == [40, 2694]


@pytest.mark.multiprocess
@pytest.mark.timeout(360)
def test_dataset_builds_against_usb_mains_signature(tmp_path):
    root = usb_tree(tmp_path / "usb")
    found = _build(root)
    assert found["semilearn"] == str(root / "semilearn" / "__init__.py")
    params = found["parameters"]
    assert params.index("medium_transform") == params.index("strong_transform") - 1
    # Passed by keyword: the strong view is the strong pipeline, the medium one RandAugment with one op.
    assert found["strong_ops"] == [3] and found["medium_ops"] == [1]
    assert found["sample"]["x_ulb_s"] == [3, 16, 16] and found["sample"]["x_ulb_w"] == [3, 16, 16]
    assert found["lengths"] == [40, 2694, 450]


def test_keys_of_usb_mains_configs_are_known():
    """USB main's configs set use_epass (its CoMatch and SimMatch read it) and use_refix, which no parser defines."""
    from rsmatch_usb.config import base_parser, check_keys, known_keys

    check_keys({"use_epass": False, "use_refix": False, "clip": 0.0}, known_keys(base_parser()), "config file x")
    with pytest.raises(Exception, match="use_epas "):
        check_keys({"use_epas": False}, known_keys(base_parser()), "config file x")
