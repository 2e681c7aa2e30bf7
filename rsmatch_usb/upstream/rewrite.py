"""Rewriting the plugin's imports so that its RSMatch becomes ``semilearn.algorithms.rsmatch``.

Only import statements change, located with :mod:`ast` and replaced in the
source text, so comments and layout survive. Every import is resolved to an
absolute module name first (relative ones against the file's own package),
then mapped: modules of the RSMatch package stay relative, the plugin modules
in :data:`VENDORED` become sibling modules inside the exported folder, and any
other ``rsmatch_usb`` or ``data_tools`` import is an error.
"""
import ast
import re
import sys

SOURCE_PACKAGE = "rsmatch_usb.algorithms.rsmatch"
TARGET_PACKAGE = "semilearn.algorithms.rsmatch"

# Plugin modules RSMatch needs, copied into the exported folder under these names.
VENDORED = {
    "rsmatch_usb.heads": "heads",
    "rsmatch_usb.errors": "errors",
    "rsmatch_usb.fingerprints": "fingerprints",
    "rsmatch_usb.algorithms.common": "common",
    "rsmatch_usb.origin": "origin",
    "data_tools.processes": "processes",  # the queue-draw worker dies with its training
}
# Vendored modules that only re-export: the module whose file is copied instead.
DEFINED_IN = {
    "rsmatch_usb.errors": "data_tools.errors",
}

PLUGIN_ROOTS = ("rsmatch_usb", "data_tools")
_PLUGIN_NAME = re.compile(rf"^(?:{'|'.join(PLUGIN_ROOTS)})(?:\.\w+)*$")


class ExportError(Exception):
    """The plugin's sources cannot be exported as they are (a source to fix, not user input)."""


def _is_plugin(module):
    return module is not None and module.split(".")[0] in PLUGIN_ROOTS


def _absolute(node, package):
    """The absolute module an ``ImportFrom`` reads from, resolving leading dots against ``package``."""
    if node.level == 0:
        return node.module
    parts = package.split(".")
    if node.level > len(parts):
        raise ExportError(f"relative import beyond the top-level package in {package}")
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _target_name(module):
    """The exported module (relative to the exported package) of a plugin module, or None if unmapped."""
    if module == SOURCE_PACKAGE:
        return ""
    if module.startswith(SOURCE_PACKAGE + "."):
        return module[len(SOURCE_PACKAGE) + 1:]
    return VENDORED.get(module)


def _rewrite_from(node, package, origin):
    """The replacement ``from . ...`` statement for a plugin ``ImportFrom``, or None to keep it."""
    module = _absolute(node, package)
    if not _is_plugin(module) or (node.level == 1 and package == SOURCE_PACKAGE):
        return None  # outside the plugin, or a sibling in the RSMatch package: valid as written
    target = _target_name(module)
    if target is not None:
        return ast.ImportFrom(module=target or None, names=node.names, level=1)
    # ``from rsmatch_usb import heads``: the names are modules themselves.
    targets = [_target_name(f"{module}.{alias.name}") for alias in node.names]
    if all(t is not None and "." not in t for t in targets):
        names = [ast.alias(name=t, asname=alias.asname or (alias.name if alias.name != t else None))
                 for t, alias in zip(targets, node.names)]
        return ast.ImportFrom(module=None, names=names, level=1)
    raise ExportError(f"{origin}:{node.lineno}: 'from {module} import ...' has no counterpart in semilearn; "
                      f"add the module to rsmatch_usb.upstream.rewrite.VENDORED or stop importing it")


def _rewrite_import(node, origin):
    """The replacement for a plugin ``import x.y as z``, or None to keep it."""
    if not any(_is_plugin(alias.name) for alias in node.names):
        return None
    if len(node.names) == 1:
        alias = node.names[0]
        target = _target_name(alias.name)
        if target and "." not in target and alias.asname:
            return ast.ImportFrom(module=None, names=[ast.alias(name=target, asname=alias.asname)], level=1)
    raise ExportError(f"{origin}:{node.lineno}: 'import {', '.join(a.name for a in node.names)}' cannot be "
                      f"rewritten; use 'from rsmatch_usb.<module> import ...' or 'import ... as name'")


def rewrite_imports(source, package, origin):
    """``source`` with its plugin imports pointing inside the exported folder.

    ``package`` is the package the source file belongs to (for relative
    imports), ``origin`` its path for error messages.
    """
    tree = ast.parse(source, filename=origin)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            new = _rewrite_from(node, package, origin)
        elif isinstance(node, ast.Import):
            new = _rewrite_import(node, origin)
        else:
            continue
        if new is not None:
            edits.append((node, ast.unparse(new)))
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    # Replace from the end so earlier offsets stay valid. ast offsets are UTF-8 bytes;
    # import statements are ASCII, but the text before them on their line may not be.
    text = source
    for node, replacement in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        start = offsets[node.lineno - 1] + _char_col(lines[node.lineno - 1], node.col_offset)
        end = offsets[node.end_lineno - 1] + _char_col(lines[node.end_lineno - 1], node.end_col_offset)
        text = text[:start] + replacement + text[end:]
    return text


def _char_col(line, byte_col):
    return len(line.encode("utf-8")[:byte_col].decode("utf-8"))


def plugin_imports(source, package, origin):
    """Every import in ``source`` that still reaches ``rsmatch_usb`` or ``data_tools``: [(line, module)].

    Also a string that is exactly a plugin module name, as passed to
    ``importlib.import_module`` (docstrings and messages do not match).
    """
    found = []
    for node in ast.walk(ast.parse(source, filename=origin)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _PLUGIN_NAME.match(node.value):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            if _is_plugin(module):
                found.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_plugin(a.name)]
    return found


def imported_packages(sources):
    """Sorted top-level packages the sources import, leaving out the standard library and relative imports."""
    roots = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
    return sorted(roots - set(sys.stdlib_module_names))


def check_no_plugin_imports(files):
    """Fail loudly if any exported file ``{name: source}`` (in :data:`TARGET_PACKAGE`) imports the plugin."""
    bad = [f"{name}:{line} imports {module}" for name, source in sorted(files.items())
           for line, module in plugin_imports(source, TARGET_PACKAGE, name)]
    if bad:
        raise ExportError("the export still imports the plugin: " + "; ".join(bad))
