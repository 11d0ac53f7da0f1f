"""Durability on disk: the directory fsync that makes a created, renamed or removed file survive a crash."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | os.PathLike[str] | Path) -> None:
    """fsync a directory, so that a file created, renamed or removed in it is durable (POSIX: fsync of the
    file alone does not persist its directory entry). Raises OSError."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
