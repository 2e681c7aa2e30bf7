"""Public functions carry type annotations (parameters and return), as timm's do: at least 70% per package.

Measured from the source by tests/annotated_share.py (``python tests/annotated_share.py``
prints the shares and the files holding unannotated functions).
"""
import pytest

from annotated_share import public_functions, share

MINIMUM = 0.70




@pytest.mark.parametrize("package, exclude", [("data_tools", ()), ("rsmatch_usb", ())])
def test_most_public_functions_are_annotated(package, exclude):
    annotated, total, missing = share(package, exclude=exclude)
    assert total > 100
    unannotated = sorted(f"{fn.path}:{fn.line} {fn.name}" for fn in missing)
    assert annotated / total >= MINIMUM, f"{annotated} of {total} annotated; unannotated: {unannotated}"


def test_the_count_covers_functions_and_methods_but_not_private_ones(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "def typed(a: int, *rest: str, key: bool = False, **extra: float) -> None: ...\n"
        "def half(a: int, b) -> int: ...\n"
        "def no_return(a: int): ...\n"
        "def _private(a): ...\n"
        "class Public:\n"
        "    def __init__(self, a): ...\n"
        "    def method(self, a: int) -> int: ...\n"
        "    @staticmethod\n"
        "    def static(a) -> int: ...\n"
        "    @classmethod\n"
        "    def build(cls) -> 'Public': ...\n"
        "class _Hidden:\n"
        "    def method(self, a): ...\n"
        "def outer() -> None:\n"
        "    def inner(a): ...\n")
    found = {fn.name: fn.annotated for fn in public_functions(str(source))}
    assert found == {"typed": True, "half": False, "no_return": False, "method": True, "static": False,
                     "build": True, "outer": True}
