"""Atomic file writes: every file instyle writes (images, model files, checkpoints, reports)
appears whole or not at all, and a failed write leaves the previous file as it was."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable


class WriteError(OSError):
    """A write that failed (disk full, no permission); the file it would have replaced is intact."""


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
