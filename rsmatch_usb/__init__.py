"""rsmatch-usb: the RS-SSL benchmark and RSMatch as a plugin for USB (semilearn).

Importing this package registers the plugin's algorithms in semilearn's
``ALGORITHMS`` registry. It patches nothing: the CPU/GPU adaptations in
:mod:`rsmatch_usb.runtime` are installed by the train command, or by an
explicit ``rsmatch_usb.runtime.activate(device)``.
"""
__version__ = "0.1.0"

from . import algorithms  # noqa: F401,E402  (registration side effect)
