"""Where hedit keeps its cache: $HEDIT_CACHE, else $XDG_CACHE_HOME/hedit, else ~/.cache/hedit."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("HEDIT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "hedit"
