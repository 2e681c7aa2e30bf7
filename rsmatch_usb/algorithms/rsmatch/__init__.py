"""RSMatch (Wang et al., 2024): detector, class-wise synthetic queue and dummy head."""
from .csqueue import CSQueue
from .detector import Detector, DetectorNet
from .rsmatch import RS_VARIANTS, RSMatch, RSMixin

__all__ = ["CSQueue", "Detector", "DetectorNet", "RS_VARIANTS", "RSMatch", "RSMixin"]
