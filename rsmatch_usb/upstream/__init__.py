"""Turning the plugin's RSMatch into a USB-native contribution (see docs/upstream.md).

:mod:`.rewrite` moves plugin modules into ``semilearn.algorithms.rsmatch``
with their imports rewritten, :mod:`.registration` adds ``rsmatch`` to USB's
algorithm list, :mod:`.usb_configs` derives USB-style configs from the table
of USB's FixMatch settings; :mod:`rsmatch_usb.export_usb` writes them all.
"""
