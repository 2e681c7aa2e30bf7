"""RSMatch (Wang et al., 2024): detector, class-wise synthetic queue and dummy head."""
