"""The plugin's algorithms; each sub-package registers itself in semilearn's ALGORITHMS."""
