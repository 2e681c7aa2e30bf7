"""Rewriting the plugin's imports so that its RSMatch becomes ``semilearn.algorithms.rsmatch``.

Only import statements, and the names :data:`.manifest.SUBSTITUTES` replaces,
change: they are located with :mod:`ast` and replaced in the source text, so
comments and layout survive. Every import is resolved to an absolute module
name first (relative ones against the file's own package), then mapped: a
module listed in :data:`.manifest.MODULES` becomes its sibling file in the
exported folder, a substituted name (the plugin's ``UserError``) is dropped
from the import and replaced where it is used (``ValueError``), and any other
``rsmatch_usb`` or ``data_tools`` import is an error naming file and line.
"""
import ast
import re
import sys
from typing import Dict, Iterable, List, Optional, Tuple

from . import manifest

TARGET_PACKAGE = "semilearn.algorithms.rsmatch"
PLUGIN_ROOTS = ("rsmatch_usb", "data_tools")
_PLUGIN_NAME = re.compile(rf"^(?:{'|'.join(PLUGIN_ROOTS)})(?:\.\w+)*$")


class ExportError(Exception):
    """The plugin's sources cannot be exported as they are (a source or the manifest to fix, not user input)."""


def _is_plugin(module: Optional[str]) -> bool:
    return module is not None and module.split(".")[0] in PLUGIN_ROOTS


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module an ``ImportFrom`` reads from, resolving leading dots against ``package``."""
    if node.level == 0:
        return node.module
    parts = package.split(".")
    if node.level > len(parts):
        raise ExportError(f"relative import beyond the top-level package in {package}")
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def exported_name(module: str) -> Optional[str]:
    """The exported module of a plugin module, relative to the exported package ('' for the package), or None."""
    filename = manifest.MODULES.get(module)
    if filename is None:
        return None
    stem = filename[:-len(".py")]
    return "" if stem == "__init__" else stem


def _unmapped(origin: str, node: ast.AST, module: str) -> ExportError:
    return ExportError(f"{origin}:{node.lineno}: 'from {module} import ...' has no counterpart in the export; "
                       "add the module to rsmatch_usb/upstream/manifest.py (MODULES) or stop importing it")


def _rewrite_from(node: ast.ImportFrom, package: str, origin: str,
                  renames: Dict[str, str]) -> Optional[ast.AST]:
    """The replacement of a plugin ``ImportFrom`` (an ``ast.Pass`` to drop it), or None to keep it.

    Substituted names are added to ``renames`` (local name -> replacement).
    """
    module = _absolute(node, package)
    if not _is_plugin(module):
        return None
    kept = []
    for alias in node.names:
        replacement = manifest.SUBSTITUTES.get((module, alias.name))
        if replacement is None:
            kept.append(alias)
        else:
            renames[alias.asname or alias.name] = replacement
    if not kept:
        return ast.Pass()
    target = exported_name(module)
    if target is not None:
        new = ast.ImportFrom(module=target or None, names=kept, level=1)
    else:
        # ``from rsmatch_usb import heads``: the names are modules themselves.
        targets = [exported_name(f"{module}.{alias.name}") for alias in kept]
        if not all(targets):
            raise _unmapped(origin, node, module)
        new = ast.ImportFrom(module=None, level=1, names=[
            ast.alias(name=t, asname=alias.asname or (alias.name if alias.name != t else None))
            for t, alias in zip(targets, kept)])
    return None if ast.dump(new) == ast.dump(ast.ImportFrom(module=node.module, names=node.names,
                                                           level=node.level)) else new


def _rewrite_import(node: ast.Import, origin: str) -> Optional[ast.AST]:
    """The replacement for a plugin ``import x.y as z``, or None to keep it."""
    if not any(_is_plugin(alias.name) for alias in node.names):
        return None
    if len(node.names) == 1:
        alias = node.names[0]
        target = exported_name(alias.name)
        if target and alias.asname:
            return ast.ImportFrom(module=None, names=[ast.alias(name=target, asname=alias.asname)], level=1)
    raise ExportError(f"{origin}:{node.lineno}: 'import {', '.join(a.name for a in node.names)}' cannot be "
                      f"rewritten; use 'from rsmatch_usb.<module> import ...' or 'import ... as name'")


def _char_col(line: str, byte_col: int) -> int:
    """ast's UTF-8 byte column as a character column of ``line``."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8"))


def rewrite_imports(source: str, package: str, origin: str) -> str:
    """``source`` with its plugin imports pointing inside the exported folder and substituted names replaced.

    ``package`` is the package the source file belongs to (for relative
    imports), ``origin`` its path for error messages.
    """
    tree = ast.parse(source, filename=origin)
    renames: Dict[str, str] = {}
    statements = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            new = _rewrite_from(node, package, origin, renames)
        elif isinstance(node, ast.Import):
            new = _rewrite_import(node, origin)
        else:
            continue
        if new is not None:
            statements.append((node, new))
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def span(node):
        return (offsets[node.lineno - 1] + _char_col(lines[node.lineno - 1], node.col_offset),
                offsets[node.end_lineno - 1] + _char_col(lines[node.end_lineno - 1], node.end_col_offset))

    edits: List[Tuple[int, int, str]] = []
    for node, new in statements:
        start, end = span(node)
        if isinstance(new, ast.Pass):
            # A dropped statement takes its whole line(s) with it when it stands alone there.
            line_start, line_end = offsets[node.lineno - 1], offsets[node.end_lineno]
            if not source[line_start:start].strip() and not source[end:line_end].strip():
                start, end = line_start, line_end
            edits.append((start, end, ""))
        else:
            edits.append((start, end, ast.unparse(new)))
    edits += [(*span(node), renames[node.id]) for node in ast.walk(tree)
              if isinstance(node, ast.Name) and node.id in renames]
    text = source
    # From the end, so that earlier offsets stay valid.
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def plugin_imports(source: str, package: str, origin: str) -> List[Tuple[int, str]]:
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


def imported_packages(sources: Iterable[str]) -> List[str]:
    """Sorted top-level packages the sources import, leaving out the standard library and relative imports."""
    roots = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
    return sorted(roots - set(sys.stdlib_module_names))


def check_no_plugin_imports(files: Dict[str, str]) -> None:
    """Fail loudly if any exported file ``{name: source}`` (in :data:`TARGET_PACKAGE`) imports the plugin."""
    bad = [f"{name}:{line} imports {module}" for name, source in sorted(files.items())
           for line, module in plugin_imports(source, TARGET_PACKAGE, name)]
    if bad:
        raise ExportError("the export still imports the plugin: " + "; ".join(bad))
