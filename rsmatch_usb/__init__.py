"""rsmatch-usb: the RS-SSL benchmark and RSMatch as a plugin for USB (semilearn).

Importing this package registers the plugin's algorithms in semilearn's
``ALGORITHMS`` registry. It patches nothing: the CPU/GPU adaptations in
:mod:`rsmatch_usb.runtime` are installed by the train command, or by an
explicit ``rsmatch_usb.runtime.activate(device)``.
"""
import warnings

__version__ = "0.1.0"

# semilearn 0.3.2 imports timm.models.layers, which every recent timm flags as
# deprecated on each start; users cannot act on it, so it is silenced here only.
warnings.filterwarnings("ignore", message="Importing from timm.models.layers is deprecated",
                        category=FutureWarning)

from . import algorithms  # noqa: F401,E402  (registration side effect)
