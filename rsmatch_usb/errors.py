"""The one exception type for bad user input (defined in :mod:`data_tools.errors`, the bottom layer).

The plugin's modules import it from here; in the RSMatch that
rsmatch-export-usb writes into USB it becomes ``ValueError``, USB's own.
"""
from data_tools.errors import BAD_INPUT_EXIT, UserError, report  # noqa: F401  (re-exported)
