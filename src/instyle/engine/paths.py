"""Where instyle keeps what it downloads, converts and caches: one folder, ``$INSTYLE_HOME`` or the
platform's user cache folder (platformdirs: ``~/.cache/instyle`` on Linux,
``~/Library/Caches/instyle`` on macOS, ``%LOCALAPPDATA%\\instyle\\Cache`` on Windows)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "cache_dir"]

HOME_ENV = "INSTYLE_HOME"


def cache_dir(*parts: str) -> Path:
    """``$INSTYLE_HOME`` (or the user cache folder) joined with ``parts``; nothing is created."""
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("instyle", appauthor=False))
    return root.joinpath(*parts)
