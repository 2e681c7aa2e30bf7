"""Adding ``rsmatch`` to USB's list of algorithm modules.

USB registers an algorithm by importing its folder: ``import_all_modules_for_register``
in ``semilearn/core/utils/registry.py`` imports every name listed for
``'semilearn.algorithms'`` in ``ALL_MODULES`` (semilearn 0.3.2 and USB's main
branch alike). The list literal is found with :mod:`ast` and ``'rsmatch'`` is
inserted after its last element, leaving the rest of the file as it is.
"""
import ast

REGISTRY_PATH = "semilearn/core/utils/registry.py"
ALGORITHMS_PACKAGE = "semilearn.algorithms"


class RegistrationError(Exception):
    """The registry file does not have the shape the edit needs."""


def _algorithm_list(tree):
    """The ``[...]`` of names paired with ``'semilearn.algorithms'`` in ``ALL_MODULES``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ALL_MODULES"
                                                for t in node.targets):
            for pair in getattr(node.value, "elts", []):
                if (isinstance(pair, ast.Tuple) and len(pair.elts) == 2
                        and isinstance(pair.elts[0], ast.Constant) and pair.elts[0].value == ALGORITHMS_PACKAGE
                        and isinstance(pair.elts[1], ast.List)):
                    return pair.elts[1]
    return None


def register(source: str, name: str = "rsmatch") -> str:
    """``source`` (a registry.py) with ``name`` appended to the algorithm list; unchanged if already there."""
    listing = _algorithm_list(ast.parse(source))
    if listing is None or not listing.elts:
        raise RegistrationError(f"no ALL_MODULES entry ('{ALGORITHMS_PACKAGE}', [...]) found in {REGISTRY_PATH}")
    names = [e.value for e in listing.elts if isinstance(e, ast.Constant)]
    if name in names:
        return source
    last = listing.elts[-1]
    lines = source.splitlines(keepends=True)
    line = lines[last.end_lineno - 1]
    col = len(line.encode("utf-8")[:last.end_col_offset].decode("utf-8"))
    lines[last.end_lineno - 1] = f"{line[:col]}, '{name}'{line[col:]}"
    return "".join(lines)
