"""File hashing shared by the driver's stages (the manifest's file list, ``edgec verify``'s integrity check, the
source model's identity). The compile cache keys its inputs with its own stat-indexed digests (:mod:`edgec.cache`)."""

from __future__ import annotations

import hashlib
import os
import stat


def sha256_file(path: str) -> str | None:
    """sha256 of a regular file, read in 1 MiB chunks; None for anything else or a file that cannot be opened (a
    FIFO or a /proc file is never read: it is opened non-blocking and checked before reading)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        h = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        return h.hexdigest()
