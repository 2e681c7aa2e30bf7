"""The one exception type for bad user input, and how every command reports it.

It sits at the bottom of the layers and imports nothing of the project, so a
data reader can raise it without loading semilearn or the plugin's algorithms;
:mod:`rsmatch_usb.errors` re-exports it. :class:`InputError`, the tools' error
for a bad flag, derives from it.
"""
from __future__ import annotations

import os
import reprlib
import sys
from typing import Any, Optional

# Exit status of every command for bad input (argparse's own for a bad flag).
BAD_INPUT_EXIT = 2


class UserError(Exception):
    """Bad input from the user: a config key, a path, a dataset, a device.

    The message names the problem and the fix. rsmatch-usb's command-line entry
    points print it as one ``error:`` line and exit with :data:`BAD_INPUT_EXIT`
    instead of showing a traceback; elsewhere (RSMatch exported into USB) it is
    an ordinary exception.
    """

    def __str__(self):
        text = super().__str__()
        # torch's DataLoader re-raises a worker's exception as the same type, its message
        # followed by the worker's traceback; the user needs the message only.
        if "\nOriginal Traceback" in text:
            return text.rstrip().splitlines()[-1].split("UserError: ", 1)[-1]
        return text


class InputError(UserError):
    """Bad command-line input to a tool (a flag's value, a file it names): one error line, exit code 2.

    The one error type of the tools (``rsmatch-synthesize``, the benchmark
    runner, report, overhead and GPU self-check); a :class:`UserError`, so
    every command's ``except UserError`` reports it alike.
    """


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4
_SHOWN.maxlevel = 2


def shown(value: Any) -> str:
    """``repr(value)`` cut short (long strings, long or nested lists), for an error line that stays one short line.

    A config value can be anything YAML holds; its full repr (a list of
    thousands of values) would bury the problem and the fix.
    """
    return _SHOWN.repr(value)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name for an empty one): a library's paragraph cut to a line."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def command_name(script: str, module: str) -> str:
    """How the user started a command: its console script ``script``, else ``python -m module``."""
    return script if os.path.basename(sys.argv[0]) == script else f"python -m {module}"


def report(exc: Any, prog: Optional[str] = None) -> int:
    """Print ``exc`` as the one ``prog: error: ...`` line on stderr; returns :data:`BAD_INPUT_EXIT`."""
    prefix = f"{prog}: " if prog else ""
    print(f"{prefix}error: {exc}", file=sys.stderr)
    return BAD_INPUT_EXIT
