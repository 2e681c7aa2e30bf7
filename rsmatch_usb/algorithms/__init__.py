"""The plugin's algorithms; each sub-package registers itself in semilearn's ALGORITHMS."""
from . import iomatch, openmatch, rsmatch  # noqa: F401
