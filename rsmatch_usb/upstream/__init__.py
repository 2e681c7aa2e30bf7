"""Turning the plugin's RSMatch into a USB-native contribution (see docs/upstream.md).

:mod:`.manifest` lists what is exported, :mod:`.rewrite` moves those plugin
modules into ``semilearn.algorithms.rsmatch`` with their imports rewritten,
:mod:`.registration` adds ``rsmatch`` to the checkout's algorithm list,
:mod:`.usb_configs` derives USB-style configs from the table of USB's FixMatch
settings; :mod:`rsmatch_usb.export_usb` applies them all to a USB checkout.
"""
