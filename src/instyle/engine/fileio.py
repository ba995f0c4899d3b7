"""Atomic file writes: every file instyle writes (images, model files, checkpoints, reports)
appears whole or not at all, and a failed write leaves the previous file as it was; and the check
of an output location before any work (:func:`check_writable_output`)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from instyle.engine.config import ConfigError


class WriteError(OSError):
    """A write that failed (disk full, no permission); the file it would have replaced is intact."""


class OutputError(ConfigError):
    """An output location no write can succeed in, found before any work: ``field`` names the
    argument (``output``, ``log_dir``), the reason names the path."""


def check_writable_output(
    path: str | os.PathLike, *, field: str, folder: bool = False, make_parents: bool = False
) -> None:
    """Refuse, before any work, an output ``path`` that cannot be written: a file (or, with
    ``folder``, a folder) whose place is taken by the other kind, under a regular file, in a folder
    that does not exist (unless ``make_parents``: then the nearest existing one must take new
    folders) or that cannot be written. Raises :class:`OutputError` naming ``field`` and the path;
    creates nothing."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise OutputError(field, f"{path} is a folder; name a file inside it")
    if path.exists() and not path.is_dir() and folder:
        raise OutputError(field, f"{path} is a file, not a folder")
    parent = path if folder and path.is_dir() else path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(field, f"{path}: {existing} is a file, not a folder")
    if existing != parent and not make_parents:
        raise OutputError(field, f"{path}: folder {parent} does not exist")
    # os.access answers for the real user and a read-only filesystem alike, and creates nothing
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(field, f"{path}: folder {existing} is not writable")


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a ``write(file)`` callable) to a new temporary file
    beside ``path``, flush it to disk, then rename it over ``path``.

    A kill or a crash at any moment leaves either the old file or the new one, never a part.
    On failure the temporary file is removed and a :class:`WriteError` names ``path`` and the
    reason (for example "No space left on device")."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never follow or reuse an existing name; mode 0o666 lets the umask decide, as for
        # any new file (mkstemp would make it 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():  # keep the permissions of the file being replaced
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    except OSError as error:
        _discard(tmp)
        kept = "; the previous file is kept" if path.exists() else ""
        raise WriteError(error.errno, f"cannot write {path}: {error.strerror or error}{kept}") from error
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it is there; on a read-only filesystem even a missing one fails
    to unlink (EROFS), and that must not hide the error that names the file being written."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a folder that cannot be opened (Windows): the rename stands as it is
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
