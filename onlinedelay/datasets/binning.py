"""Events -> per-step frames of spike counts.

An event at time ``t`` (seconds) falls in step ``floor(t * 1000 / dt_ms)`` (a time exactly on a
step boundary belongs to the step it starts; a 1e-9 slack absorbs float rounding such as
``0.03 * 1000 / 10 = 2.9999999999999996``) and in channel group ``unit // pool``.  Events at or
past the end of the window (``step >= n_steps``) are counted in the last step (``overflow="clip"``)
or discarded (``"drop"``) -- however late they are: steps are compared in floating point before
any integer conversion, so a time of 1e17 s is "late", never wrapped round into step 0.  Counts
are uint16; a count above 65535 saturates with a warning.

Frames are mostly zeros (most channel groups are silent in most steps); callers that want a
sparse view take ``np.nonzero`` of a frame.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import OnlineDelayError, check_choice, check_int, check_positive

__all__ = ["OVERFLOW_MODES", "MAX_DERIVED_STEPS", "bin_events", "bin_batch", "steps_for", "check_binning"]

OVERFLOW_MODES = ("clip", "drop")
MAX_DERIVED_STEPS = 1_000_000   # n_steps=None may not derive more steps than this from the data
_SLACK = 1e-9


def _plain(value):
    """numpy scalars as Python numbers, so the shared validators accept them."""
    return value.item() if isinstance(value, np.generic) and not isinstance(value, np.bool_) else value


def check_binning(dt_ms, n_steps, n_channels, pool, overflow):
    """Validate binning options; returns ``(dt_ms float, n_steps int, pool int)``."""
    dt_ms, n_steps, pool = _plain(dt_ms), _plain(n_steps), _plain(pool)
    check_positive("dt_ms", dt_ms)
    check_int("n_steps", n_steps, 1)
    check_int("pool", pool, 1)
    if n_channels % pool:
        raise OnlineDelayError(f"pool={pool} does not divide n_channels={n_channels}; choose a divisor "
                               f"(e.g. 1, 2, 4, 5, 7, 10 for 700)")
    check_choice("overflow", overflow, OVERFLOW_MODES)
    return float(dt_ms), int(n_steps), int(pool)


def steps_for(max_time_s: float, dt_ms: float) -> int:
    """Smallest number of ``dt_ms`` steps whose window holds an event at ``max_time_s`` seconds."""
    max_time_s, dt_ms = _plain(max_time_s), _plain(dt_ms)
    check_positive("max_time_s", max_time_s, allow_zero=True)
    check_positive("dt_ms", dt_ms)
    return max(1, int(math.floor(max_time_s * (1000.0 / dt_ms) + _SLACK)) + 1)


def _steps(times_s, dt_ms, n_steps):
    """Step of each time, int64; every time at or past the window's end gives ``n_steps``."""
    steps = np.floor(np.asarray(times_s, dtype=np.float64) * (1000.0 / dt_ms) + _SLACK)
    return np.minimum(steps, n_steps).astype(np.int64)


def step_index(times_s, dt_ms, n_steps: int = 2**62):
    """Step of each time (seconds from the window's start), int64: the rule of the module docstring;
    times at or past ``n_steps`` steps (default: no window, but no int64 overflow) give ``n_steps``."""
    return _steps(times_s, dt_ms, n_steps)


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
    dt_ms, n_steps, pool = check_binning(dt_ms, n_steps, n_channels, pool, overflow)
    n_groups = n_channels // pool
    batch = len(indices)
    flat = []
    for b, i in enumerate(indices):
        a, e = offsets[i], offsets[i + 1]
        times = np.asarray(times_s[a:e], dtype=np.float64)
        if times.size and not (np.all(np.isfinite(times)) and times.min() >= 0):
            raise OnlineDelayError(f"times_s: sample {i}: expected finite times >= 0 s, got "
                                   f"{times[~(np.isfinite(times) & (times >= 0))][0]!r}")
        group = np.asarray(units[a:e]).astype(np.int64)
        if group.size and (group.min() < 0 or group.max() >= n_channels):
            raise OnlineDelayError(f"units: sample {i}: expected channels 0..{n_channels - 1}, got "
                                   f"{group.min()}..{group.max()}")
        step = _steps(times, dt_ms, n_steps)
        group //= pool
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
