"""IOMatch (Li et al., ICCV 2023) as a USB algorithm."""
from .iomatch import IOMatch

__all__ = ["IOMatch"]
