"""How many public functions and methods of a package carry full type annotations.

``python tests/annotated_share.py [PACKAGE ...]`` prints, per package (default
``rsmatch_usb data_tools``), the annotated share and the files that hold the
unannotated ones. Read from the source with :mod:`ast`; nothing is imported.

Counted: every ``def`` at module level or in a class body whose own name, and
whose class's name, does not start with ``_`` (``__init__`` and the other
dunders are left out: their return type says nothing), in modules whose name
does not start with ``_`` (package ``__init__.py`` files included). Functions
nested in functions are private to them and not counted. Annotated: a return
annotation and one on every parameter, ``*args`` and ``**kwargs`` included,
but ``self``/``cls`` (the first parameter of a method that is not a
``staticmethod``).
"""
from __future__ import annotations

import ast
import os
import sys
from collections import Counter
from typing import Iterator, List, NamedTuple, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PublicFunction(NamedTuple):
    path: str
    line: int
    name: str
    annotated: bool


def _is_annotated(func: ast.FunctionDef, method: bool) -> bool:
    args = func.args
    params = [*args.posonlyargs, *args.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list)
    if method and not static and params:
        params = params[1:]
    params += [*args.kwonlyargs, *(a for a in (args.vararg, args.kwarg) if a is not None)]
    return func.returns is not None and all(p.annotation is not None for p in params)


def _public(name: str) -> bool:
    return not name.startswith("_")


def public_functions(path: str) -> Iterator[PublicFunction]:
    """The public functions and methods defined in the Python file at ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)

    def walk(body: list, method: bool) -> Iterator[PublicFunction]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
                yield PublicFunction(path, node.lineno, node.name, _is_annotated(node, method))
            elif isinstance(node, ast.ClassDef) and _public(node.name):
                yield from walk(node.body, method=True)
            elif isinstance(node, (ast.If, ast.Try)):  # definitions under ``if TYPE_CHECKING``/``try``
                yield from walk(node.body + getattr(node, "orelse", []), method)

    yield from walk(tree.body, method=False)


def package_files(package: str, root: str = REPO) -> List[str]:
    """The ``.py`` files of ``package`` (a folder under ``root``) whose module name is public."""
    found = []
    for folder, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if _public(d) and d != "__pycache__")
        found += [os.path.join(folder, f) for f in sorted(files)
                  if f.endswith(".py") and (_public(f) or f == "__init__.py")]
    return found


def share(package: str, root: str = REPO, exclude: tuple = ()) -> tuple:
    """``(annotated, public, [unannotated PublicFunction])`` over ``package``'s files not under ``exclude``."""
    functions = [fn for path in package_files(package, root)
                 if not any(os.path.relpath(path, root).startswith(e) for e in exclude)
                 for fn in public_functions(path)]
    missing = [fn for fn in functions if not fn.annotated]
    return len(functions) - len(missing), len(functions), missing


def main(argv: Optional[List[str]] = None) -> int:
    for package in (argv if argv else ["rsmatch_usb", "data_tools"]):
        annotated, total, missing = share(package)
        print(f"{package}: {annotated} of {total} public functions annotated ({annotated / max(total, 1):.1%})")
        for path, count in Counter(os.path.relpath(fn.path, REPO) for fn in missing).most_common():
            print(f"  {count:3d} unannotated in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
