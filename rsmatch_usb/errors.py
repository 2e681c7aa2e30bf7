"""The one exception type for bad user input (defined in :mod:`data_tools.errors`, the bottom layer).

The plugin's modules import it from here; rsmatch-export-usb copies the
defining module into the exported folder as ``errors.py``.
"""
from data_tools.errors import BAD_INPUT_EXIT, UserError, report  # noqa: F401  (re-exported)
