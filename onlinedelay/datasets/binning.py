"""Events -> per-step frames of spike counts.

An event at time ``t`` (seconds) falls in step ``floor(t / dt)`` (a time exactly on a step
boundary belongs to the step it starts; a 1e-9 relative slack absorbs float rounding such as
``0.03 / 0.01 = 2.9999999999999996``) and in channel group ``unit // pool``.  Events at or past
the end of the window (``step >= n_steps``) are counted in the last step (``overflow="clip"``)
or discarded (``"drop"``).  Counts are uint16; a count above 65535 saturates with a warning.

Frames are mostly zeros (most channel groups are silent in most steps); callers that want a
sparse view take ``np.nonzero`` of a frame.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["OVERFLOW_MODES", "bin_events", "bin_batch", "steps_for"]

OVERFLOW_MODES = ("clip", "drop")
_SLACK = 1e-9


def _check(dt_ms, n_steps, n_channels, pool, overflow):
    if isinstance(dt_ms, bool) or not isinstance(dt_ms, (int, float, np.floating, np.integer)) \
            or not math.isfinite(dt_ms) or dt_ms <= 0:
        raise ValueError(f"dt_ms={dt_ms!r} is not allowed; expected a finite number > 0 (ms)")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps={n_steps!r} is not allowed; expected an integer >= 1 (or None to derive it)")
    if isinstance(pool, bool) or not isinstance(pool, (int, np.integer)) or pool < 1:
        raise ValueError(f"pool={pool!r} is not allowed; expected an integer >= 1")
    if n_channels % pool:
        raise ValueError(f"pool={pool} does not divide n_channels={n_channels}; choose a divisor "
                         f"(e.g. 1, 2, 4, 5, 7, 10 for 700)")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow={overflow!r} is not allowed; choose 'clip' or 'drop'")


def steps_for(max_time_s: float, dt_ms: float) -> int:
    """Smallest number of ``dt_ms`` steps whose window holds an event at ``max_time_s``."""
    return max(1, int(math.floor(max_time_s * 1000.0 / dt_ms + _SLACK)) + 1)


def _steps(times_s, dt_ms):
    return np.floor(np.asarray(times_s, dtype=np.float64) * (1000.0 / dt_ms) + _SLACK).astype(np.int64)


def step_index(times_s, dt_ms):
    """Step of each time (seconds from the window's start), int64: the rule of the module docstring."""
    return _steps(times_s, dt_ms)


def bin_events(times_s, units, dt_ms=10.0, n_steps=100, n_channels=700, pool=5, overflow="clip"):
    """Bin one sample.

    Parameters
    ----------
    times_s : (n,) float, seconds >= 0
    units : (n,) int, 0 .. n_channels-1
    dt_ms, n_steps, pool, overflow : see the module docstring

    Returns
    -------
    ndarray, shape (n_steps, n_channels // pool), uint16
    """
    offsets = np.array([0, np.shape(times_s)[0]], dtype=np.int64)
    return bin_batch(np.asarray(times_s), np.asarray(units), offsets, np.array([0]), dt_ms, n_steps,
                     n_channels, pool, overflow)[:, 0, :]


def bin_batch(times_s, units, offsets, indices, dt_ms=10.0, n_steps=100, n_channels=700, pool=5,
              overflow="clip"):
    """Bin several samples stored flat (sample ``i`` = ``[offsets[i], offsets[i+1])``).

    Returns
    -------
    ndarray, shape (n_steps, len(indices), n_channels // pool), uint16
    """
    _check(dt_ms, n_steps, n_channels, pool, overflow)
    n_steps, pool = int(n_steps), int(pool)
    n_groups = n_channels // pool
    batch = len(indices)
    flat = []
    for b, i in enumerate(indices):
        a, e = offsets[i], offsets[i + 1]
        step = _steps(times_s[a:e], dt_ms)
        group = units[a:e].astype(np.int64) // pool
        if overflow == "clip":
            np.minimum(step, n_steps - 1, out=step)
        else:
            keep = step < n_steps
            step, group = step[keep], group[keep]
        flat.append((step * batch + b) * n_groups + group)
    flat = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=n_steps * batch * n_groups)
    if counts.size and counts.max() > np.iinfo(np.uint16).max:
        warnings.warn(f"frames: a bin holds {counts.max()} spikes; saturated at 65535 (uint16)", stacklevel=3)
        np.minimum(counts, np.iinfo(np.uint16).max, out=counts)
    return counts.astype(np.uint16).reshape(n_steps, batch, n_groups)
