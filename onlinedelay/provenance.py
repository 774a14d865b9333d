"""Where a result came from: the machine, the library versions and the source revision.

Used by ``onlinedelay bench`` (the ``machine`` block of its report) and ``onlinedelay ablate``
(``ablation.json``), so both record the same facts the same way.  Everything here is best
effort: a fact that cannot be read (not Linux, no git checkout) is left empty, never an error.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import numba
import numpy as np

from ._version import __version__

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def read_text(path) -> str:
    """The text of ``path``, or "" when it cannot be read (a /proc or /sys file off Linux)."""
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def git_revision() -> dict:
    """``{"commit": sha, "dirty": bool}`` of the source checkout, or {} outside one.

    Never takes git's index lock (``GIT_OPTIONAL_LOCKS=0``), so it is safe while git runs elsewhere.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        commit = subprocess.run(["git", "-C", str(_SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, env=env)
        status = subprocess.run(["git", "-C", str(_SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return {}
    if commit.returncode != 0 or not commit.stdout.strip():
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def numba_max_threads() -> int:
    """The most threads numba's parallel kernels may use here (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def load_average():
    """[1, 5, 15]-minute load averages (other work on a shared machine skews every timing), or None."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict:
    """Versions of Python, numpy, numba and this package."""
    return {"python_version": platform.python_version(), "numpy_version": np.__version__,
            "numba_version": numba.__version__, "package_version": __version__}


def machine_info() -> dict:
    """CPU model, cores, caches, memory, platform, :func:`versions`, git revision and the date (UTC)."""
    cpuinfo = read_text("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.lower().startswith("model name")), platform.processor() or platform.machine())
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        level, kind, size = (read_text(index / f).strip() for f in ("level", "type", "size"))
        if level and size:
            caches[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    mem_kb = next((int(line.split()[1]) for line in read_text("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:                   # not Linux
        usable = os.cpu_count()
    try:
        layer = numba.threading_layer()
    except ValueError:                       # no parallel kernel has run yet
        layer = None
    return {"cpu_model": model, "cores": os.cpu_count(), "cores_usable": usable, "caches": caches,
            "memory_gb": mem_kb * 1024 / 1e9, "platform": platform.platform(), **versions(),
            "numba_threads": numba_max_threads(), "numba_threading_layer": layer, "git": git_revision(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
