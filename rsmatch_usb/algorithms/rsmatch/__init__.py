"""RSMatch (Wang et al., 2024): detector, class-wise synthetic queue and dummy head."""
from .config import RSMatchConfig
from .csqueue import CSQueue
from .detector import Detector, DetectorNet
from .router import Router
from .rsmatch import RS_VARIANTS, RSMatch, RSMixin
from .trainer import DetectorTrainer

__all__ = ["CSQueue", "Detector", "DetectorNet", "DetectorTrainer", "RS_VARIANTS", "RSMatch", "RSMatchConfig",
           "RSMixin", "Router"]
