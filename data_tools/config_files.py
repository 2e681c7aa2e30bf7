"""YAML config files: the one loader of the train command, the grid runner and the tools.

ruamel.yaml's safe, pure-Python loader (semilearn's ``yaml.load`` call is gone
in ruamel 0.18+). Like :mod:`data_tools.errors` it imports nothing of the
project, so the runner and the tools read configs without loading semilearn.
"""
from __future__ import annotations

import os
from typing import IO, Any, Dict, Optional, Union

from ruamel.yaml import YAML, YAMLError

from .errors import UserError


# At most this many values (mappings, lists and scalars, each alias counted as what it stands for) in a
# document: a config holds a few hundred, and a 1.6 KB "billion laughs" alias bomb stands for ~10^9.
MAX_VALUES = 10_000


class YAMLTooLargeError(UserError):
    """A YAML document that stands for too many values (aliases of aliases) or nests too deeply."""


def _expanded_size(value, sizes, open_ids):
    """How many values ``value`` stands for with every alias expanded, stopping past :data:`MAX_VALUES`.

    Each shared object is counted once and its size reused, so a bomb is
    sized without being expanded.
    """
    if not isinstance(value, (dict, list, set, tuple)):
        return 1
    key = id(value)
    if key in sizes:
        return sizes[key]
    if key in open_ids:
        raise YAMLTooLargeError("refers to itself (an alias inside its own anchor)")
    open_ids.add(key)
    total = 1
    for item in (x for pair in value.items() for x in pair) if isinstance(value, dict) else value:
        total += _expanded_size(item, sizes, open_ids)
        if total > MAX_VALUES:
            break
    open_ids.discard(key)
    sizes[key] = total
    return total


def parse_yaml(text: Union[str, IO[str]]) -> Any:
    """The value a YAML document (a string or a stream) holds; a YAMLTooLargeError for an alias bomb.

    The safe loader builds aliases as shared objects, so the document loads
    cheaply; what reads it next (a repr in an error line, a copy) would
    expand it, so a document standing for more than :data:`MAX_VALUES`
    values is refused here.
    """
    try:
        value = YAML(typ="safe", pure=True).load(text)
        size = _expanded_size(value, {}, set())
    except RecursionError:
        raise YAMLTooLargeError("nests too deeply") from None
    if size > MAX_VALUES:
        raise YAMLTooLargeError(f"stands for more than {MAX_VALUES} values once its aliases are expanded (an alias "
                                "bomb?); write the values out")
    return value


def load_yaml(path: str, flag: Optional[str] = None) -> Dict[str, Any]:
    """The mapping in the YAML file ``path`` ({} for an empty file); bad input is a UserError.

    ``flag`` names the option that gave the path, for the hint when it does not exist.
    """
    hint = f"{flag} path" if flag else "path"
    if not os.path.isfile(path):
        raise UserError(f"config file {path} does not exist; check the {hint}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = parse_yaml(f)
    except YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from None
    except YAMLTooLargeError as exc:
        raise UserError(f"config file {path} {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a UTF-8 text file (a binary file?); give the path of a "
                        "YAML config") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read ({exc.strerror}); check the {hint}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    return data
