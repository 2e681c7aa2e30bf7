"""RS-SSL data: real sources, synthetic sources, mixing at ratio alpha, generation."""
