"""Atomic file writes: everything the package writes goes through :func:`atomic_path`."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

_SUFFIX = ".tmp"


def _prefix(name: str) -> str:
    return f".{name}."


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; renamed onto ``path`` on success, removed on error.

    A reader never sees a half-written file under the final name, and an interrupted write
    leaves the previous file (if any) untouched.  A process killed mid-write (SIGKILL) leaves its
    temporary ``.<name>.XXXXXXXX.tmp`` behind; :func:`remove_stale_temporaries` clears those.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name), suffix=_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder, names) -> list[Path]:
    """Delete the temporaries :func:`atomic_path` left in ``folder`` for the files ``names``.

    Only call this where no other process is writing those files (e.g. a training run's own
    folder when the run starts).  Returns the paths removed.
    """
    folder = Path(folder)
    patterns = [re.compile(re.escape(_prefix(name)) + r"[A-Za-z0-9_]+" + re.escape(_SUFFIX) + "$") for name in names]
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        if path.is_file() and any(p.match(path.name) for p in patterns):
            path.unlink()
            removed.append(path)
    return removed
