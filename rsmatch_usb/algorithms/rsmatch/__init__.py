"""RSMatch (Wang et al., 2024): detector, class-wise synthetic queue and dummy head, on FixMatch."""
from .rsmatch import RSMatch, RSMixin

__all__ = ["RSMatch", "RSMixin"]
