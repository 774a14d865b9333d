"""The feed side of a stream: raw events -> a queue of completed steps.

Binning is the datasets' rule (:func:`onlinedelay.datasets.binning.step_index`): step ``k`` of a
sample covers feed times ``[origin + k dt, origin + (k + 1) dt)``; an event at time ``t`` falls in
step ``step_index(t - origin, dt_ms)``, channel group ``unit // pool``.  A step is *completed*
(queued for the network) as soon as the feed's time reaches its end -- by a later event, by
:meth:`Binner.advance` (a ``tick``), or by the end of the sample, which completes the partial
step.  Silent steps are queued too (the network keeps decaying), within two rules:

* **padding** -- :meth:`Binner.end_sample` pads a segment that ran fewer than ``pad_to_steps``
  steps (default: the model's ``n_steps``) with silent steps, so a sample ends as the offline
  evaluation runs it: all ``n_steps`` steps (at once, also in a real-time replay).  A sample
  with no event or tick is not padded; silence resets (``reset_on_gap_ms``) do not pad.
* **silence bound** -- of a stretch of steps without events, only the first
  ``max_silent_steps`` (default: the model's ``n_steps``) are queued; the rest are skipped
  (counted in ``skipped_steps``): the network keeps the state of the last step run, and the next
  event's step follows it.  A legal event an hour ahead thus costs ``n_steps`` steps, not 360 k.
  Padding is not cut by this bound.

Samples and segments: ``end_sample()`` completes the partial step, pads, queues a reset, and
restarts the clock at ``origin``.  ``reset_on_gap_ms=G``: once the feed has been silent (no
accepted event) for ``G`` ms, the steps up to that moment are completed, a reset is queued and the
silent steps after it are skipped -- the next segment starts at the step of its first event; the
clock keeps running.

A queue entry is ``("step", index, counts (n_inputs,) int64 or None, n_events, label, run,
origin_s)`` (``run`` silent steps from ``index`` when counts is None) or ``("reset", reason)``;
:meth:`Binner.take` hands them out one step at a time.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ..datasets.binning import step_index
from ..errors import check_choice, check_int, check_positive
from .protocol import REJECT_REASONS, StreamError, check_option

__all__ = ["Binner", "BACKWARDS_POLICIES", "ORIGINS"]

BACKWARDS_POLICIES = ("drop", "fail")
ORIGINS = ("zero", "first")
_MAX_REL_STEPS = float(2 ** 52)           # beyond this a step index is no longer exact in float64
_NO_STEP = -(2 ** 62)
_OK, _BACK, _JUMP = 0, 1, 2
_SCALARS = ("origin_s", "clock_s", "last_event_s", "open", "pending_events", "label", "next_label", "silent_steps",
            "segment_steps", "events_accepted", "gap_resets", "skipped_steps")


class Binner:
    """Bins raw events into per-step input counts (module docstring).

    Parameters
    ----------
    n_inputs : int, network inputs; pool : int, raw channels per input (n_channels = n_inputs * pool)
    dt_ms : float, step length
    origin, on_backwards, reset_on_gap_ms, max_jump_s : see :class:`~onlinedelay.stream.StreamRunner`
    pad_to_steps : int, pad a sample to this many steps at its end (0: no padding)
    max_silent_steps : int, silent steps queued per silent stretch (0: no bound)
    """

    def __init__(self, n_inputs: int, pool: int, dt_ms: float, *, origin: str = "zero", on_backwards: str = "drop",
                 reset_on_gap_ms: float | None = None, max_jump_s: float | None = 3600.0, pad_to_steps: int = 0,
                 max_silent_steps: int = 0):
        self.n_inputs, self.pool, self.dt_ms = n_inputs, pool, dt_ms
        self.n_channels = n_inputs * pool
        self.on_backwards = check_option(check_choice, "on_backwards", on_backwards, BACKWARDS_POLICIES)
        self.origin = check_option(check_choice, "origin", origin, ORIGINS)
        self.reset_on_gap_ms = check_option(check_positive, "reset_on_gap_ms", reset_on_gap_ms, allow_none=True)
        self.max_jump_s = check_option(check_positive, "max_jump_s", max_jump_s, allow_none=True)
        self.pad_to_steps = check_option(check_int, "pad_to_steps", pad_to_steps, 0)
        self.max_silent_steps = check_option(check_int, "max_silent_steps", max_silent_steps, 0)
        self._per_s = 1000.0 / dt_ms
        self._gap_s = None if reset_on_gap_ms is None else reset_on_gap_ms / 1000.0
        self.origin_s = 0.0 if origin == "zero" else None   # feed time of step 0 (None: the next event's)
        self.clock_s = None           # feed time reached in this sample (None: nothing yet)
        self.last_event_s = None      # last accepted event (for the silence gap)
        self.open = 0 if origin == "zero" else None          # clock index of the step being filled
        self.pending = np.zeros(n_inputs, np.int64)
        self.pending_events = 0
        self.label = -1
        self.next_label = None
        self.silent_steps = 0         # clock steps of the current silent stretch (run or skipped)
        self.segment_steps = 0        # steps queued since the last reset
        self.queue = deque()
        self.events_accepted = 0
        self.rejected = {reason: 0 for reason in REJECT_REASONS}
        self.gap_resets = 0
        self.skipped_steps = 0

    # -- times -> steps ------------------------------------------------------------------------------
    def step_of(self, times_s) -> np.ndarray:
        """Clock step index of each time (seconds); the binning rule of the module docstring."""
        origin = 0.0 if self.origin_s is None else self.origin_s
        return step_index(np.asarray(times_s, np.float64) - origin, self.dt_ms)

    def _step_of(self, t: float) -> int:
        return int(step_index(t - self.origin_s, self.dt_ms))

    def count_rejected(self, reason: str, n: int = 1) -> None:
        """Count ``n`` pieces of input rejected for ``reason`` (one of :data:`REJECT_REASONS`)."""
        if reason not in self.rejected:
            raise ValueError(f"reason={reason!r} is not one of {', '.join(REJECT_REASONS)}")
        self.rejected[reason] += int(n)

    @property
    def queued_steps(self) -> int:
        """Completed steps waiting in the queue."""
        return sum(e[5] for e in self.queue if e[0] == "step")

    # -- events ---------------------------------------------------------------------------------------
    def push(self, times_s, units) -> int:
        """Bin raw events (see :meth:`StreamRunner.push <onlinedelay.stream.StreamRunner.push>`)."""
        t = np.asarray(times_s)
        u = np.asarray(units)
        if t.ndim != 1 or u.shape != t.shape:
            raise ValueError(f"times_s {t.shape} and units {u.shape} must be 1-D arrays of the same length")
        if t.dtype.kind not in "iuf" or u.dtype.kind not in "iuf":
            raise ValueError(f"times_s ({t.dtype}) and units ({u.dtype}) must be numeric")
        if not t.size:
            return 0
        t = t.astype(np.float64, copy=False)
        finite = np.isfinite(t)
        negative = finite & (t < 0)
        if u.dtype.kind == "f":
            whole = np.isfinite(u) & (u == np.floor(u))
            bad_unit = ~whole | (u < 0) | (u >= self.n_channels)
            u = np.where(bad_unit, 0, u).astype(np.int64)
        else:
            bad_unit = (u < 0) | (u >= self.n_channels)
        bad_unit &= finite & ~negative
        ok = finite & ~negative & ~bad_unit
        self.rejected["nan_time"] += int((~finite).sum())
        self.rejected["negative_time"] += int(negative.sum())
        self.rejected["unknown_unit"] += int(bad_unit.sum())
        if not ok.all():
            t, u = t[ok], u[ok]
            if not t.size:
                return 0
        if self.origin_s is None:
            self.origin_s = float(t[0])
        far = (t - self.origin_s) * self._per_s >= _MAX_REL_STEPS
        if far.any():                                     # step index would not be exact: a corrupt time
            self.rejected["time_jump"] += int(far.sum())
            t, u = t[~far], u[~far]
            if not t.size:
                return 0
        steps = step_index(t - self.origin_s, self.dt_ms)
        codes = self._order_codes(t, steps)
        fail_at = None
        if self.on_backwards == "fail" and (codes == _BACK).any():
            fail_at = int(np.argmax(codes == _BACK))
            fail_time = float(t[fail_at])
            codes, t, u, steps = codes[:fail_at], t[:fail_at], u[:fail_at], steps[:fail_at]
        self.rejected["backwards"] += int((codes == _BACK).sum())
        self.rejected["time_jump"] += int((codes == _JUMP).sum())
        keep = codes == _OK
        if not keep.all():
            t, u, steps = t[keep], u[keep], steps[keep]
        if t.size:
            self._accept(t, u.astype(np.int64, copy=False) // self.pool, steps)
        if fail_at is not None:
            self.rejected["backwards"] += 1
            raise StreamError(f"event time {fail_time!r} s goes backwards (the "
                              f"stream clock is at {self.clock_s!r} s); on_backwards='fail' stops the stream")
        return int(t.size)

    def _order_codes(self, t: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """_OK / _BACK / _JUMP per event: vectorised, exact sequential semantics only when a jump may occur."""
        open0 = _NO_STEP if self.open is None else self.open
        late = steps < open0                              # in a step already completed
        clock = -np.inf if self.clock_s is None else self.clock_s
        ref = np.maximum.accumulate(np.concatenate(([clock], np.where(late, -np.inf, t))))[:-1]
        back = late | (t < ref)
        codes = back.astype(np.int8)                      # _BACK == 1
        if self.max_jump_s is not None:
            base = np.where(np.isneginf(ref), self.origin_s, ref)
            if ((t - base > self.max_jump_s) & ~back).any():
                codes = self._order_codes_sequential(t, late)
        return codes

    def _order_codes_sequential(self, t: np.ndarray, late: np.ndarray) -> np.ndarray:
        codes = np.zeros(t.size, np.int8)
        cur = self.clock_s
        for i in range(t.size):
            ti = float(t[i])
            if late[i] or (cur is not None and ti < cur):
                codes[i] = _BACK
            elif ti - (self.origin_s if cur is None else cur) > self.max_jump_s:
                codes[i] = _JUMP
            else:
                cur = ti
        return codes

    def _accept(self, t: np.ndarray, groups: np.ndarray, steps: np.ndarray) -> None:
        """Bin accepted events (sorted, in steps >= the open one), resetting at silence gaps."""
        self.events_accepted += int(t.size)
        start = 0
        if self._gap_s is not None:
            prev = np.empty_like(t)
            prev[0] = np.inf if self.last_event_s is None else self.last_event_s
            prev[1:] = t[:-1]
            for cut in np.flatnonzero(t - prev >= self._gap_s):
                if cut > start:
                    self._bin(groups[start:cut], steps[start:cut])
                    self.last_event_s = float(t[cut - 1])
                self._gap_reset()
                start = int(cut)
        self._bin(groups[start:], steps[start:])
        self.last_event_s = self.clock_s = float(t[-1])

    def _bin(self, groups: np.ndarray, steps: np.ndarray) -> None:
        n = steps.size
        if not n:
            return
        starts = np.concatenate(([0], np.flatnonzero(steps[1:] != steps[:-1]) + 1))
        ends = np.append(starts[1:], n)
        for a, b in zip(starts.tolist(), ends.tolist()):
            s = int(steps[a])
            if self.open is None or s > self.open:
                self._close_before(s)
            if b - a == 1:
                self.pending[groups[a]] += 1
            else:
                self.pending += np.bincount(groups[a:b], minlength=self.n_inputs)
            self.pending_events += b - a

    # -- completing steps ---------------------------------------------------------------------------------
    def _close_before(self, s: int) -> None:
        """Complete the open step and the silent steps up to ``s`` (exclusive); ``s`` becomes the open step."""
        if self.open is not None and s > self.open:
            k = self.open
            if self.pending_events:
                self.queue.append(("step", k, self.pending.copy(), self.pending_events, self.label, 1,
                                   self.origin_s))
                self.pending[:] = 0
                self.pending_events = 0
                self.segment_steps += 1
                self.silent_steps = 0
                k += 1
            if self.next_label is not None:          # a label set during step k applies from step k + 1
                self.label, self.next_label = self.next_label, None
            if s > k:
                self._queue_silent(k, s - k, bounded=True)
        if self.open is None or s > self.open:
            self.open = s
            if self.next_label is not None:
                self.label, self.next_label = self.next_label, None

    def _queue_silent(self, k: int, n: int, bounded: bool) -> None:
        """Queue ``n`` silent steps from clock index ``k``; with ``bounded``, within the silence bound."""
        run = n
        if bounded and self.max_silent_steps:
            run = min(n, max(0, self.max_silent_steps - self.silent_steps))
            self.silent_steps += n
            self.skipped_steps += n - run
        if run:
            self.queue.append(("step", k, None, 0, self.label, run, self.origin_s))
            self.segment_steps += run

    def _queue_reset(self, reason: str) -> None:
        self.queue.append(("reset", reason))
        self.segment_steps = self.silent_steps = 0

    def _gap_reset(self) -> None:
        last = self.last_event_s
        if self.open is not None and last is not None:
            self._close_before(max(self._step_of(last + self._gap_s), self._step_of(last) + 1))
        self._queue_reset("gap")
        self.open = None
        self.last_event_s = None
        self.gap_resets += 1

    def advance(self, time_s: float) -> None:
        """The feed's clock reached ``time_s`` (see :meth:`StreamRunner.advance`)."""
        t = float(time_s)
        if not math.isfinite(t):
            self.rejected["nan_time"] += 1
            return
        if t < 0:
            self.rejected["negative_time"] += 1
            return
        if self.origin_s is None:                 # origin "first": no event yet, nothing to complete
            return
        if self.clock_s is not None and t < self.clock_s:
            self.rejected["backwards"] += 1
            if self.on_backwards == "fail":
                raise StreamError(f"tick time {t!r} s goes backwards (the stream clock is at {self.clock_s!r} s); "
                                  "on_backwards='fail' stops the stream")
            return
        base = self.origin_s if self.clock_s is None else self.clock_s
        rel = (t - self.origin_s) * self._per_s
        if (self.max_jump_s is not None and t - base > self.max_jump_s) or rel >= _MAX_REL_STEPS:
            self.rejected["time_jump"] += 1
            return
        if self._gap_s is not None and self.last_event_s is not None and t - self.last_event_s >= self._gap_s:
            self._gap_reset()
        elif self.open is not None:
            self._close_before(self._step_of(t))
        self.clock_s = t

    def close_steps_before(self, index: int) -> None:
        """Complete every step with clock index < ``index`` without moving the clock (real-time pacing)."""
        if self.open is not None and index > self.open:
            self._close_before(int(index))

    def set_label(self, value: int) -> None:
        """Target class ``value`` (-1: none) from the step being filled if it holds no event yet, else the next."""
        if self.open is None or not self.pending_events:
            self.label, self.next_label = value, None
        else:
            self.next_label = value

    def end_sample(self, reason: str = "end") -> None:
        """End of a sample: complete the partial step, pad, queue a reset, restart the clock at the origin."""
        if self.open is not None and (self.clock_s is not None or self.pending_events):
            self._close_before(self.open + 1)
            if self.segment_steps < self.pad_to_steps:
                self._queue_silent(self.open, self.pad_to_steps - self.segment_steps, bounded=False)
        self._queue_reset(reason)
        self.origin_s = 0.0 if self.origin == "zero" else None
        self.open = 0 if self.origin == "zero" else None
        self.clock_s = self.last_event_s = None
        self.label, self.next_label = -1, None

    # -- the queue ------------------------------------------------------------------------------------------
    def take(self):
        """The next queued item, one step at a time: ``("step", index, counts or None, n_events, label,
        origin_s)``, ``("reset", reason)``, or None when the queue is empty."""
        queue = self.queue
        if not queue:
            return None
        entry = queue[0]
        if entry[0] == "reset":
            return queue.popleft()
        _, index, frame, n_events, label, run, origin_s = entry
        if run > 1:
            queue[0] = ("step", index + 1, None, 0, label, run - 1, origin_s)
        else:
            queue.popleft()
        return ("step", index, frame, n_events, label, origin_s)

    # -- state ------------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of the binning position, the queue and the counters."""
        return {"pending": self.pending.copy(), "queue": _copy_queue(self.queue), "rejected": dict(self.rejected),
                "scalars": {name: getattr(self, name) for name in _SCALARS}}

    def restore(self, snap: dict) -> None:
        """Put a :meth:`snapshot` back (same number of inputs)."""
        if snap["pending"].shape != self.pending.shape:
            raise ValueError(f"snap has {snap['pending'].shape[0]} inputs; this model has {self.n_inputs}")
        self.pending[...] = snap["pending"]
        self.queue = deque(_copy_queue(snap["queue"]))
        self.rejected = dict(snap["rejected"])
        for name, value in snap["scalars"].items():
            setattr(self, name, value)


def _copy_queue(queue) -> list:
    return [e[:2] + (None if e[2] is None else e[2].copy(),) + e[3:] if e[0] == "step" else e for e in queue]
