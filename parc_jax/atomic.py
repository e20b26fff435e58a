"""Atomic file writes: the data goes to a temporary file in the destination's directory, is
flushed to disk, then renamed into place, so a reader never sees a half-written file and a
failure leaves the destination as it was.

A symlink is followed: the file it names is replaced, the link kept. A destination that exists
and is not a regular file (a FIFO, a character device such as ``/dev/null``, a socket) is
written straight into, as ``open(path, "wb")`` would: renaming over it would destroy it, and
atomicity means nothing for a stream."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "is_special", "resolve_destination", "write_bytes", "write_text"]


def resolve_destination(path: str | os.PathLike) -> Path:
    """The path a write to ``path`` lands on: symlinks followed (a dangling link names the
    file to create), so the link itself is kept and its target replaced."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def is_special(path: str | os.PathLike) -> bool:
    """``path`` exists (after symlinks) and is not a regular file or a folder: a FIFO, a device
    or a socket, which a write goes straight into instead of replacing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_file(path) as f: f.write(...)``: ``path`` appears, whole, only when the
    block ends without an exception; otherwise it is left as it was and the temporary file is
    removed. The folder must exist. A symlink's target is replaced (the link kept); a FIFO or
    device is written straight into (no atomicity there, see the module docstring).

    The file gets the permissions a plain ``open(path, "wb")`` would give it: those of the
    file it replaces, else ``0o666`` less the umask (``mkstemp`` alone would leave ``0o600``).
    """
    path = resolve_destination(path)
    if is_special(path):
        with open(path, "wb") as f:
            yield f
            f.flush()
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a crash


def write_bytes(path: str | os.PathLike, data: bytes, *, parents: bool = False) -> None:
    """Write ``data`` to ``path`` atomically.

    The folder must exist (``FileNotFoundError`` otherwise: a mistyped path must not build
    folders); ``parents=True`` creates missing ones, for a program writing into its own run
    or results directory."""
    path = resolve_destination(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(path.parent))
    with atomic_file(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, *, parents: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``parents`` as in :func:`write_bytes`."""
    write_bytes(path, text.encode("utf-8"), parents=parents)


def _read_umask() -> int:
    # The only portable way to read the umask is to set it and restore it: done once, at
    # import, not per write (the umask is process-wide and other threads may create files).
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)
