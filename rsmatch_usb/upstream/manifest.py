"""What the USB export takes from the plugin: the one list to edit when RSMatch's modules change.

Everything else in the export (import rewriting, file headers, registration,
configs, the pull-request text) follows from these tables; docs/upstream.md
explains them.
"""
from typing import Any, Dict, Tuple

# The folder USB imports the algorithm from.
ALGORITHM_DIR = "semilearn/algorithms/rsmatch"

# Plugin module -> its file in ALGORITHM_DIR. An import of a listed module becomes an import of
# that sibling file; an import of any other plugin module stops the export, naming it.
MODULES: Dict[str, str] = {
    "rsmatch_usb.algorithms.rsmatch": "__init__.py",
    "rsmatch_usb.algorithms.rsmatch.rsmatch": "rsmatch.py",
    # The exported keys; the plugin's config module adds its own keys and every key's rule.
    "rsmatch_usb.algorithms.rsmatch.keys": "config.py",
    "rsmatch_usb.algorithms.rsmatch.router": "router.py",
    "rsmatch_usb.algorithms.rsmatch.trainer": "trainer.py",
    "rsmatch_usb.algorithms.rsmatch.detector": "detector.py",
    "rsmatch_usb.algorithms.rsmatch.detector_inputs": "detector_inputs.py",
    "rsmatch_usb.algorithms.rsmatch.csqueue": "csqueue.py",
    "rsmatch_usb.heads": "heads.py",
    # USB keeps an algorithm's helpers in its folder's utils.py.
    "rsmatch_usb.algorithms.utils": "utils.py",
}

# Plugin names the export replaces with Python's own: (module, name) -> replacement. USB reports
# a bad config value with a ValueError; the plugin's UserError exists for its one-line CLI errors.
SUBSTITUTES: Dict[Tuple[str, str], str] = {
    ("rsmatch_usb.errors", "UserError"): "ValueError",
    ("data_tools.errors", "UserError"): "ValueError",
}

# USB's header of its own Python files.
HEADER = "# Copyright (c) Microsoft Corporation.\n# Licensed under the MIT License.\n"

# RSMatch keys the exported classic-CV configs set. A config lists USB's FixMatch keys, plus these
# where they differ from RSMatch's defaults: none do today, so USB's configs train RSMatch at them.
# Diagnostic keys (marked ``diagnostic`` in the plugin's config module) and plugin-only keys may not be listed.
CONFIG_SETTINGS: Dict[str, Any] = {}
