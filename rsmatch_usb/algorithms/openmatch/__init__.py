"""OpenMatch (Saito et al., NeurIPS 2021) as a USB algorithm."""
from .openmatch import OpenMatch

__all__ = ["OpenMatch"]
