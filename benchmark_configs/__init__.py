"""The RS-SSL benchmark's configs and tools: ``generate`` (YAML grids), ``run`` (grid runner),
``report`` (tables and plots from USB logs) and ``overhead`` (RSMatch's cost over FixMatch).

See docs/benchmark.md.
"""
