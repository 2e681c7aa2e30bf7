"""``rsmatch-export-usb``: RSMatch as a contribution to a USB checkout, applied in place.

    rsmatch-export-usb [--usb-root CHECKOUT] [--overwrite] [--pr-text PATH]
    python -m rsmatch_usb.export_usb [...]

Writes into the USB checkout ``--usb-root`` (default: the current folder),
nowhere else in it than:

- ``semilearn/algorithms/rsmatch/``: the plugin modules listed in
  :data:`.upstream.manifest.MODULES`, imports rewritten
  (:mod:`.upstream.rewrite`), each file under USB's header;
- ``semilearn/core/utils/registry.py``: ``'rsmatch'`` appended to the
  checkout's own algorithm list, found by parsing the file
  (:mod:`.upstream.registration`);
- ``config/classic_cv/rsmatch/``: one config per FixMatch classic-CV config
  of USB (:mod:`.upstream.usb_configs`).

The pull-request text goes to stdout, or to ``--pr-text PATH`` outside the
checkout. Every check runs before the first write, and a write that fails
anyway (a full disk) is rolled back: bad input is one error line, exit code
2, and the checkout as it was. Sources the export cannot rewrite are exit code 1.
"""
import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

from . import __version__
from .errors import UserError, report
from .upstream import manifest, registration, rewrite, usb_configs

PROG = "rsmatch-export-usb"
ALGORITHM_DIR = manifest.ALGORITHM_DIR
# Folders that hold nothing but the export: replaced as a whole with --overwrite.
OWNED_DIRS = (ALGORITHM_DIR, usb_configs.EXPORT_CONFIG_DIR)
PAPER = "https://arxiv.org/abs/2405.16930"
PULL_REQUEST = Path(__file__).with_name("upstream") / "pull_request.md"


def _source_of(module: str):
    """``(path, package)`` of a plugin module: its file, and the package its relative imports resolve in."""
    spec = importlib.util.find_spec(module)
    package = module if spec.submodule_search_locations is not None else module.rpartition(".")[0]
    return Path(spec.origin), package


def algorithm_files() -> Dict[str, str]:
    """``{relative path: source}`` of ``semilearn/algorithms/rsmatch/``, imports rewritten and checked."""
    files = {}
    for module, filename in manifest.MODULES.items():
        path, package = _source_of(module)
        text = rewrite.rewrite_imports(path.read_text(encoding="utf-8"), package, f"{module} ({path.name})")
        files[filename] = f"{manifest.HEADER}\n{text}"
    rewrite.check_no_plugin_imports(files)
    return {f"{ALGORITHM_DIR}/{name}": text for name, text in files.items()}


def registry_file(usb_root: Path) -> Dict[str, str]:
    """``{registry path: text}``: the checkout's registry file with ``rsmatch`` in its algorithm list."""
    path = usb_root / registration.REGISTRY_PATH
    try:
        before = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--usb-root {usb_root}: {registration.REGISTRY_PATH} is not UTF-8 text; restore USB's "
                        "file (git checkout -- semilearn/core/utils/registry.py)") from None
    except OSError as exc:
        raise UserError(f"--usb-root {usb_root}: cannot read {registration.REGISTRY_PATH} ({exc.strerror})") from None
    try:
        after = registration.register(before)
    except SyntaxError as exc:
        raise UserError(f"--usb-root {usb_root}: {registration.REGISTRY_PATH} is not valid Python (line "
                        f"{exc.lineno}); restore USB's file") from None
    except registration.RegistrationError as exc:
        raise UserError(f"--usb-root {usb_root}: {exc}; add 'rsmatch' to the algorithm list by hand") from None
    return {registration.REGISTRY_PATH: after}


def config_files() -> Dict[str, str]:
    """The RSMatch configs, one per FixMatch classic-CV config of USB (see :mod:`.upstream.usb_configs`)."""
    from semilearn.algorithms.fixmatch import FixMatch

    from .algorithms.rsmatch.config import diagnostic_keys
    from .algorithms.rsmatch.rsmatch import RSMatch

    # USB's FixMatch configs become RSMatch on FixMatch (the paper's): the exported algorithm's keys.
    defaults = {a.name.lstrip("-"): a.default for a in RSMatch.get_argument()}
    try:
        own = usb_configs.own_settings(manifest.CONFIG_SETTINGS, defaults, diagnostic_keys())
    except ValueError as exc:
        raise rewrite.ExportError(f"manifest.CONFIG_SETTINGS: {exc}") from None
    return usb_configs.rsmatch_configs(own, FixMatch.get_argument())


def pull_request_text(files: Dict[str, str]) -> str:
    """The pull request's description for ``files`` (the export), from ``upstream/pull_request.md``."""
    algorithm = {p: t for p, t in files.items() if p.startswith(ALGORITHM_DIR + "/")}
    configs = sorted(p for p in files if p.startswith(usb_configs.EXPORT_CONFIG_DIR + "/"))
    own = [line for line in files[configs[0]].splitlines()
           if line.split(":")[0] in manifest.CONFIG_SETTINGS]
    settings = ("plus RSMatch's keys where they differ from its defaults: " + ", ".join(f"`{o}`" for o in own)
                if own else "RSMatch's own keys keep their defaults (from its `get_argument()`).")
    return PULL_REQUEST.read_text(encoding="utf-8").format(
        paper=PAPER, version=__version__, algorithm_files=len(algorithm),
        algorithm_lines=sum(t.count("\n") for t in algorithm.values()),
        packages=", ".join(rewrite.imported_packages(algorithm.values())), config_count=len(configs),
        settings=settings, config_example=next((c for c in configs if c.endswith("cifar10_40_0.yaml")), configs[0]))


def build_export(usb_root: Path) -> Dict[str, str]:
    """``{path relative to the checkout: text}`` of the whole export; nothing is written."""
    files = algorithm_files()
    files.update(registry_file(usb_root))
    files.update(config_files())
    return files


# ---------------------------------------------------------------- checks
def check_usb_root(usb_root: Path) -> None:
    if not usb_root.is_dir():
        raise UserError(f"--usb-root {usb_root} is not a folder; give a clone of microsoft/Semi-supervised-learning")
    if not (usb_root / registration.REGISTRY_PATH).is_file():
        raise UserError(f"--usb-root {usb_root} is not a USB checkout (no {registration.REGISTRY_PATH}); run from "
                        "the root of a clone of microsoft/Semi-supervised-learning or pass --usb-root")


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_pr_text(pr_text: Optional[str], usb_root: Path, overwrite: bool) -> Optional[Path]:
    """The ``--pr-text`` file (None: stdout), which must lie outside the checkout."""
    if pr_text is None:
        return None
    path = Path(pr_text)
    if _within(path, usb_root):
        raise UserError(f"--pr-text {path} lies inside the USB checkout, where the pull request must not carry it; "
                        "give a path outside it, or leave --pr-text out to print the text")
    if path.is_dir():
        raise UserError(f"--pr-text {path} is a folder; give a file path")
    if path.exists() and not overwrite:
        raise UserError(f"--pr-text {path} exists; pass --overwrite to replace it, or give another path")
    return path


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_targets(usb_root: Path, targets: List[Path], overwrite: bool) -> None:
    """A UserError unless every target can be written: no file where a folder must be, writable folders,
    and no earlier export in the way without ``overwrite``. Writes nothing."""
    for owned in OWNED_DIRS:
        folder = usb_root / owned
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file where the export writes a folder; move it away")
        if folder.is_dir() and not overwrite:
            raise UserError(f"{folder} exists (an earlier export?); pass --overwrite to replace it")
        if folder.is_dir() and not _writable(folder.parent):
            raise UserError(f"{folder.parent} is not writable, so {folder} cannot be replaced; check its permissions")
    for target in targets:
        existing = target.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(f"{existing} is a file where the export needs a folder (for {target}); move it away")
        if not _writable(existing):
            raise UserError(f"{existing} is not writable, so {target} cannot be written; check its permissions "
                            "(nothing was written)")
        if target.is_dir():
            raise UserError(f"{target} is a folder where the export writes a file; move it away")
        if target.exists() and not os.access(target, os.W_OK):
            raise UserError(f"{target} is not writable; check its permissions (nothing was written)")


# ---------------------------------------------------------------- writing, all or nothing
class Changes:
    """The files and folders written so far, so that a failed write can be undone."""

    def __init__(self) -> None:
        self.created_dirs: List[Path] = []
        self.created_files: List[Path] = []
        self.replaced: Dict[Path, bytes] = {}
        self.moved: List[tuple] = []

    def move_aside(self, folder: Path) -> None:
        aside = folder.with_name(f".{folder.name}.replaced-by-export-{os.getpid()}")
        os.rename(folder, aside)
        self.moved.append((folder, aside))

    def write(self, path: Path, text: str) -> None:
        missing = []
        folder = path.parent
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            folder.mkdir()
            self.created_dirs.append(folder)
        existed = path.exists()
        if existed:
            self.replaced[path] = path.read_bytes()
        tmp = path.with_name(f".{path.name}.export-tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            if existed:
                shutil.copymode(path, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        if not existed:
            self.created_files.append(path)

    def undo(self) -> None:
        for path in reversed(self.created_files):
            path.unlink(missing_ok=True)
        for path, data in self.replaced.items():
            path.write_bytes(data)
        for folder in reversed(self.created_dirs):
            if folder.is_dir():
                shutil.rmtree(folder)
        for folder, aside in reversed(self.moved):
            os.rename(aside, folder)

    def done(self) -> None:
        for _, aside in self.moved:
            shutil.rmtree(aside)


def write_all(usb_root: Path, targets: Dict[Path, str]) -> None:
    """Write ``targets`` (the owned folders replaced as a whole); on an OSError undo every change, then raise."""
    changes = Changes()
    try:
        for owned in OWNED_DIRS:
            if (usb_root / owned).is_dir():
                changes.move_aside(usb_root / owned)  # no stale file of an earlier export survives
        for path, text in targets.items():
            changes.write(path, text)
    except OSError as exc:
        changes.undo()
        where = f" ({exc.filename})" if exc.filename else ""
        raise UserError(f"cannot write the export: {exc.strerror}{where}; {usb_root} is as it was") from None
    changes.done()


def cli(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rsmatch-export-usb``; returns the process exit code."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--usb-root", default=".",
                        help="the USB checkout to add RSMatch to (default: the current folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export (its two folders) and an existing --pr-text file")
    parser.add_argument("--pr-text", default=None,
                        help="write the pull-request text to this file outside the checkout (default: stdout)")
    args = parser.parse_args(argv)
    usb_root = Path(args.usb_root)
    try:
        check_usb_root(usb_root)
        pr_path = check_pr_text(args.pr_text, usb_root, args.overwrite)
        files = build_export(usb_root)
        text = pull_request_text(files)
        targets = {usb_root / relpath: content for relpath, content in files.items()}
        if pr_path is not None:
            targets[pr_path] = text
        check_targets(usb_root, list(targets), args.overwrite)
        write_all(usb_root, targets)
    except UserError as exc:
        return report(exc, PROG)
    except (rewrite.ExportError, ImportError) as exc:
        print(f"{PROG}: error: cannot export the plugin's sources: {exc}", file=sys.stderr)
        return 1
    if pr_path is None:
        print(text, end="")
    print(f"{PROG}: wrote {len(files)} files into {usb_root}"
          + (f" and the pull-request text to {pr_path}" if pr_path else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
