"""The plugin's algorithms; each sub-package registers itself in semilearn's ALGORITHMS.

RSMatch is registered by :mod:`.rsmatch.plugin`: the algorithm the USB export
carries, plus the plugin's diagnostics.
"""
from . import iomatch, openmatch, rsmatch  # noqa: F401
from .rsmatch import plugin  # noqa: F401
