"""One error type for bad input, and the shared validators that raise it.

Every problem a user can cause -- a bad option, a malformed dataset, model or stream record --
raises :class:`OnlineDelayError` (a ``ValueError``) or a subclass, with a one-line message that
names the file or option, the field and the value.  The command line turns it into that line and
exit status 2; anything else is a bug.
"""

from __future__ import annotations

import math

import numpy as np


class OnlineDelayError(ValueError):
    """Bad input: the message is one line naming the file or option, the field and the value."""


def check_choice(name: str, value, allowed, error=OnlineDelayError) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise error(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def check_positive(name: str, value, allow_zero: bool = False, error=OnlineDelayError) -> None:
    """``value`` must be a finite real number > 0 (>= 0 with ``allow_zero``)."""
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if bad or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise error(f"{name}={value!r} is not allowed; expected {need}")


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None,
              error=OnlineDelayError) -> None:
    """``value`` must be an int (not a bool) in ``[minimum, maximum]`` (either bound optional)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        if minimum is not None and maximum is not None:
            need = f"an integer in [{minimum}, {maximum}]"
        elif minimum is not None:
            need = f"an integer >= {minimum}"
        elif maximum is not None:
            need = f"an integer <= {maximum}"
        else:
            need = "an integer"
        raise error(f"{name}={value!r} is not allowed; expected {need}")


def check_fraction(name: str, value, low_open: bool = True, high_open: bool = False,
                   error=OnlineDelayError) -> None:
    """``value`` must be a real number in the unit interval, ends open or closed as asked."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise error(f"{name}={value!r} is not allowed; expected a number in {interval}")


def check_batch(batch_size) -> int:
    """A batch size: an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise OnlineDelayError(f"batch_size={batch_size!r} is not allowed; expected an integer >= 1")
    return int(batch_size)


def check_counts(arr, what: str):
    """Spike counts (a numpy array) must be finite, non-negative whole numbers; returns ``arr``."""
    if arr.dtype.kind not in "biuf":
        raise OnlineDelayError(f"{what} has dtype {arr.dtype}; expected integer spike counts")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr < 0) | (arr != np.floor(arr))
    elif arr.dtype.kind == "i":
        bad = arr < 0
    else:
        return arr
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad)), arr.shape)
        raise OnlineDelayError(f"{what}{[int(i) for i in idx]} = {arr[idx].item()!r}; "
                               "spike counts must be whole numbers >= 0")
    return arr


def check_step_counts(x, n_inputs: int, batch_size: int) -> np.ndarray:
    """One step of input counts, (n_inputs,) at batch size 1 or (B, n_inputs); returns (B, n_inputs)."""
    arr = np.asarray(x)
    if arr.ndim == 1 and batch_size == 1:
        arr = arr[None, :]
    if arr.shape != (batch_size, n_inputs):
        raise OnlineDelayError(f"input x has shape {np.shape(x)}; expected ({batch_size}, {n_inputs})"
                               + (f" or ({n_inputs},)" if batch_size == 1 else ""))
    return check_counts(arr, "input x")


def check_sequence_counts(inputs, n_inputs: int) -> np.ndarray:
    """A (T, n_inputs) or (T, B, n_inputs) count array as a (T, B, n_inputs) view (not copied)."""
    arr = np.asarray(inputs)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3 or arr.shape[2] != n_inputs or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise OnlineDelayError(f"inputs have shape {np.shape(inputs)}; expected (T, {n_inputs}) "
                               f"or (T, B, {n_inputs}) with T, B >= 1")
    return check_counts(arr, "inputs")
