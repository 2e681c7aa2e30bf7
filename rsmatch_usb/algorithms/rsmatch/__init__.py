"""RSMatch (Wang et al., 2024): detector, class-wise synthetic queue and dummy head."""
from .csqueue import CSQueue
from .detector import Detector
from .rsmatch import RSMatch

__all__ = ["CSQueue", "Detector", "RSMatch"]
