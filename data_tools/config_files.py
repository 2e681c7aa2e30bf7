"""YAML config files: the one loader of the train command, the grid runner and the tools.

ruamel.yaml's safe, pure-Python loader (semilearn's ``yaml.load`` call is gone
in ruamel 0.18+). Like :mod:`data_tools.errors` it imports nothing of the
project, so the runner and the tools read configs without loading semilearn.
"""
import os

from ruamel.yaml import YAML, YAMLError

from .errors import UserError


def parse_yaml(text):
    """The value a YAML document (a string or a stream) holds."""
    return YAML(typ="safe", pure=True).load(text)


def load_yaml(path, flag=None):
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
