"""Writing a file atomically: readers see the old file or the new one, never a torn one.

The one place every tool writes files that way (checkpoints, the runner's
results file and kept logs, synthesized images and manifests, the generator
scripts' checkpoints and caches). Like :mod:`data_tools.errors` it imports
nothing of the project (torch only when :func:`torch_save` runs).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_folder(folder: PathLike) -> None:
    """fsync a folder, so a rename in it survives a power loss; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", unique: bool = True, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it is flushed, fsynced and renamed over ``path``.

    On an exception (a full disk, a bad value half-way) the temporary file is
    removed and ``path`` keeps its previous content. ``unique``: the
    temporary file gets a name of its own, so two processes writing ``path``
    at once never share one (the last rename wins; serialize them with a lock
    when the content must merge); ``unique=False`` uses ``<path>.tmp``, for a
    file that one process owns (a locked run folder), where a killed write's
    leftover is simply overwritten by the next write instead of piling up.
    ``open_kwargs`` go to :func:`open` (``encoding``, ``newline``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if unique:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        # mkstemp makes the file 0600; a replaced file keeps the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        f = os.fdopen(fd, mode, **open_kwargs)
    else:
        tmp = f"{path}.tmp"
        f = open(tmp, mode, **open_kwargs)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`: a crash or full disk leaves the previous file intact.

    For files one process owns (a locked run folder's checkpoints, a generator
    script's work folder): the fixed ``<path>.tmp`` name suffices, and a killed
    save's leftover is simply overwritten by the next save.
    """
    import torch

    with atomic_write(path, "wb", unique=False) as f:
        torch.save(obj, f)
