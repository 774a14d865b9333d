"""Streaming inference on a live spike feed, with optional online adaptation.

A :class:`StreamRunner` holds a trained :class:`~onlinedelay.network.Network` (and, with
``adapt=True``, a :class:`~onlinedelay.learning.ThreeFactorLearner`) and turns raw events into
per-step predictions::

    runner = StreamRunner("runs/syn/best.h5")
    runner.push(times_s, units)       # raw events: seconds, channels 0 .. n_channels-1
    for result in runner.poll():      # StepResult per completed step (SegmentResult at resets)
        ...
    runner.finish()                   # end of stream: the partial last step, then poll() again

Binning (the same rule as :mod:`onlinedelay.datasets.binning`)
-----------------------------------------------------------------
Raw channels are pooled as the model was trained (``unit // pool``, ``pool`` from the model's
``training["run"]``, default 5; ``n_channels = n_inputs * pool``).  Step ``k`` of a sample covers
feed times ``[origin + k dt, origin + (k + 1) dt)``; an event at time ``t`` falls in step
``floor((t - origin) * 1000 / dt_ms + 1e-9)``.  A step is *completed* (queued for the network)
as soon as the feed's time reaches its end -- by a later event, by :meth:`StreamRunner.advance`
(a ``tick``), or by the end of the stream / sample, which completes the partial step.  Silent
steps are run too (the network keeps decaying), so a sample streamed from ``origin = 0`` gives
exactly the steps of ``EventDataset.frames(i, dt_ms, n_steps=steps_for(last spike), pool)`` and
bit-identical readouts (tested).  Work is lazy: :meth:`~StreamRunner.push` only bins;
:meth:`~StreamRunner.step` / :meth:`~StreamRunner.poll` run the queued steps.

Per step (``x`` the pooled counts, ``y`` the readout; spec sections 2-4)::

    y = net.step(x);   p = softmax(y) (float64);   prediction = argmax p
    vote = argmax sum_{segment steps s >= loss_start_step} p^s     (the offline prediction rule)

Samples, segments, resets
-------------------------
``end_sample()`` (text line ``end``, binary END record, each HDF5 sample, a TCP client hanging
up) completes the partial step, resets the network state, and restarts the clock: the next
sample's times start again at ``origin``.  ``reset_on_gap_ms=G``: once the feed has been silent
(no accepted event) for ``G`` ms, the steps up to that moment are completed, the state is reset,
and the silent steps after it are skipped -- the next segment starts at the step of its first
event; the clock keeps running.  Each reset closes a *segment* (:class:`SegmentResult`: its vote
and label).

Bad input (never raised, counted by reason; see :data:`REJECT_REASONS`)
----------------------------------------------------------------------
``malformed`` (unparsable text line, unknown binary record kind, bytes between records),
``oversized_record`` (text line longer than ``max_line_bytes``, binary record of more than
``max_record_events`` events), ``truncated_record`` (the feed ended inside a binary record; the
complete events of a cut EVENTS record are kept),
``nan_time`` (NaN or infinite time), ``negative_time``, ``unknown_unit`` (unit < 0 or
>= n_channels, or not a whole number), ``backwards`` (time before the feed's clock, or in a step
already completed; with ``on_backwards="fail"`` the events before it are kept and
:class:`StreamError` is raised), ``time_jump`` (more than ``max_jump_s`` ahead of the clock: a
corrupt far-future time would otherwise stall the stream on millions of silent steps and make
every later event "backwards"), ``bad_label``.  Rejected input never reaches the network, and a
parameter update that would produce NaN or inf is reverted, so bad input cannot corrupt a model.

Online adaptation (``adapt=True``)
----------------------------------
The model's rule (its ``learning_config``, else :class:`LearningConfig` defaults; the optimizer
state of a checkpoint is restored) runs after every step with the label in effect (``label``
lines / records, an HDF5 file's labels, or a label file), loss weight
``1 / (n_steps - loss_start_step)`` on segment steps ``>= loss_start_step`` (``n_steps`` of the
training run) and 0 without a label.  Parameters are updated every ``update_every_steps`` steps
(default: the learning config's ``update_every_steps`` for ``update="online"``, else ``n_steps``)
and at every reset -- only when a labelled step contributed, so an unlabelled feed leaves the
model untouched.  Memory is fixed (traces and rings do not grow with the stream).

Binary record format (little-endian; see :func:`encode_events`)
--------------------------------------------------------------
A sequence of records, each a 12-byte header ``magic b"ODEV" | kind u16 | flags u16 (0) |
count u32`` and a payload:

* kind 1 EVENTS: ``count`` events of 12 bytes each, ``time f64 (seconds) | unit u32``
  (packed, no padding); ``count <= max_record_events`` (65536 by default);
* kind 2 LABEL: no payload; ``count`` is the class index, ``0xFFFFFFFF`` clears the label;
* kind 3 TICK: payload ``time f64`` (seconds): the feed's clock reached this time;
* kind 4 END: no payload; end of sample.

After a bad header the reader skips to the next ``b"ODEV"`` (counted once as ``malformed``).

Text format
-----------
One item per line: ``TIME UNIT`` (time in ``time_unit``: ``s`` or ``ms``), ``label K`` (class index
or name; ``label -`` or ``label none`` clears it), ``tick TIME``, ``end``; blank lines and lines
starting with ``#`` are ignored.  A label takes effect from the step being filled if it holds no
event yet, else from the next step; ``end`` clears it.
"""

from __future__ import annotations

import math
import socket
import struct
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import LearningConfig, RunConfig
from .datasets.binning import _SLACK
from .io import LoadedModel, load_model, restore_optimizer, save_model
from .learning import ThreeFactorLearner

__all__ = ["StreamRunner", "StepResult", "SegmentResult", "StreamError", "StreamOptionError", "REJECT_REASONS",
           "TextParser", "BinaryParser", "FileSource", "StdinSource", "TcpSource", "Hdf5Source", "open_source",
           "run_stream", "OutputWriter", "format_summary", "softmax", "encode_events", "encode_label",
           "encode_tick", "encode_end", "MAGIC"]

REJECT_REASONS = ("malformed", "oversized_record", "truncated_record", "nan_time", "negative_time", "unknown_unit",
                  "backwards", "time_jump", "bad_label")
BACKWARDS_POLICIES = ("drop", "fail")
ORIGINS = ("zero", "first")
TIME_UNITS = {"s": 1.0, "ms": 1000.0}     # divisor turning a value in the unit into seconds

MAGIC = b"ODEV"
_HEADER = struct.Struct("<4sHHI")
HEADER_BYTES = _HEADER.size               # 12
KIND_EVENTS, KIND_LABEL, KIND_TICK, KIND_END = 1, 2, 3, 4
NO_LABEL = 0xFFFFFFFF
EVENT_DTYPE = np.dtype([("time_s", "<f8"), ("unit", "<u4")])     # 12 bytes, packed
_TIME_F64 = struct.Struct("<d")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAX_REL_STEPS = float(2 ** 52)           # beyond this a step index is no longer exact in float64
_NO_STEP = -(2 ** 62)
_OK, _BACK, _JUMP = 0, 1, 2


class StreamError(ValueError):
    """The stream was stopped on purpose (``on_backwards="fail"``) or cannot be used."""


class StreamOptionError(ValueError):
    """A bad option value; ``option`` names it (``"every"``, ``"sample"`` ...)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


@dataclass(slots=True)
class StepResult:
    """The prediction after one step.

    Attributes
    ----------
    step : int, index among all steps this runner has run (0-based)
    segment : int, segment (sample) index, +1 at every reset
    index : int, step index on the feed clock: the step covers ``[origin + index dt, origin + (index+1) dt)``
    segment_step : int, steps since the last reset (the network's step counter minus one)
    t_end_s : float, end of the step on the feed clock, seconds
    n_events : int, events binned into the step
    label : int, target class in effect (-1: none)
    y : ndarray, shape (n_outputs,), network dtype, readout after the step
    probs : ndarray, shape (n_outputs,), float64, softmax of ``y``
    prediction : int, argmax of ``probs``
    vote : int or None, argmax of ``probs`` summed over this segment's steps >= loss_start_step
    latency_ns : int, wall time of the step (network, learning, softmax), nanoseconds
    """

    step: int
    segment: int
    index: int
    segment_step: int
    t_end_s: float
    n_events: int
    label: int
    y: np.ndarray
    probs: np.ndarray
    prediction: int
    vote: int | None
    latency_ns: int


@dataclass(slots=True)
class SegmentResult:
    """A segment (sample) closed by a reset.

    Attributes
    ----------
    segment : int
    steps : int, steps run in the segment
    prediction : int or None, the segment's vote (None when no step reached loss_start_step)
    label : int, the label of its last labelled step (-1: none)
    reason : str, "end" (end of sample), "gap" (silence), "disconnect", "eof"
    """

    segment: int
    steps: int
    prediction: int | None
    label: int
    reason: str


def softmax(y) -> np.ndarray:
    """Softmax in float64, computed as :func:`onlinedelay.train.infer` does.

    Parameters
    ----------
    y : array, shape (n_outputs,) or (n_outputs, B), readout

    Returns
    -------
    ndarray, same shape, float64, sums to 1 along axis 0
    """
    y = np.asarray(y).astype(np.float64)
    e = np.exp(y - y.max(axis=0))
    return e / e.sum(axis=0)


class _Latency:
    """Per-step latencies in a fixed histogram (1 % wide log bins, 100 ns .. ~1e3 s): bounded memory."""

    _MIN_NS = 100.0
    _LOG = math.log(1.01)
    _BINS = 2320

    def __init__(self):
        self.counts = np.zeros(self._BINS, np.int64)
        self.n = 0
        self.max_ns = 0

    def add(self, ns: int) -> None:
        i = 0 if ns <= self._MIN_NS else min(int(math.log(ns / self._MIN_NS) / self._LOG), self._BINS - 1)
        self.counts[i] += 1
        self.n += 1
        if ns > self.max_ns:
            self.max_ns = ns

    def quantile_us(self, q: float) -> float | None:
        if not self.n:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n))
        return min(self._MIN_NS * 1.01 ** (i + 0.5) if i else self._MIN_NS, self.max_ns) / 1e3

    def summary(self) -> dict:
        """{"median", "p99", "max"} in microseconds (median and p99 within 0.5 %), None before any step."""
        return {"median": self.quantile_us(0.5), "p99": self.quantile_us(0.99),
                "max": self.max_ns / 1e3 if self.n else None, "steps": self.n}

    def copy(self):
        other = _Latency()
        other.counts[:] = self.counts
        other.n, other.max_ns = self.n, self.max_ns
        return other


def _check_int(option, value, minimum, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise StreamOptionError(option, f"{option}={value!r} is not allowed; expected an integer >= {minimum}")
    return int(value)


def _check_positive(option, value, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise StreamOptionError(option, f"{option}={value!r} is not allowed; expected a finite number > 0")
    return float(value)


def _check_choice(option, value, allowed):
    if value not in allowed:
        raise StreamOptionError(option, f"{option}={value!r} is not allowed; choose one of "
                                        f"{', '.join(map(repr, allowed))}")
    return value


class StreamRunner:
    """A trained network run one step at a time on a stream of raw spike events.

    Parameters
    ----------
    model : path of a model file, or a :class:`~onlinedelay.io.LoadedModel` (its network is used
        and changed in place)
    adapt : bool, keep learning online from labels (see the module docstring)
    learning_config : LearningConfig or None, the rule for ``adapt`` (default: the model's, else defaults)
    update_every_steps : int or None, steps between parameter updates when adapting
    on_backwards : "drop" (count and skip) or "fail" (raise :class:`StreamError`)
    reset_on_gap_ms : float or None, reset the state after this much silence (ms)
    max_jump_s : float or None, reject events more than this far ahead of the clock (s); None: no limit
    origin : "zero" (times are measured from 0) or "first" (the first event of a sample is its time 0)
    pool : int or None, channels summed per input (default: the model's training ``pool``, else 5)
    threads : int, threads for the synapse kernels

    Examples
    --------
    >>> runner = StreamRunner("best.h5")                         # doctest: +SKIP
    >>> runner.push([0.001, 0.012], [350, 351])                  # doctest: +SKIP
    >>> [r.prediction for r in runner.poll()]                    # doctest: +SKIP
    [7]
    """

    def __init__(self, model, *, adapt: bool = False, learning_config: LearningConfig | None = None,
                 update_every_steps: int | None = None, on_backwards: str = "drop",
                 reset_on_gap_ms: float | None = None, max_jump_s: float | None = 3600.0, origin: str = "zero",
                 pool: int | None = None, threads: int = 1):
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self.model = loaded
        self.net = net = loaded.net
        self.class_names = list(loaded.class_names)
        training = loaded.training or {}
        self.run_config = RunConfig.from_dict(training["run"]) if isinstance(training.get("run"), dict) else RunConfig()
        self.pool = _check_int("pool", self.run_config.pool if pool is None else pool, 1)
        self.on_backwards = _check_choice("on_backwards", on_backwards, BACKWARDS_POLICIES)
        self.origin = _check_choice("origin", origin, ORIGINS)
        self.reset_on_gap_ms = _check_positive("reset_on_gap_ms", reset_on_gap_ms)
        self.max_jump_s = _check_positive("max_jump_s", max_jump_s)
        if learning_config is not None and not isinstance(learning_config, LearningConfig):
            raise TypeError(f"learning_config must be a LearningConfig, got {type(learning_config).__name__}")
        c = net.config
        self.n_inputs, self.n_outputs = c.n_inputs, c.n_outputs
        self.n_channels = c.n_inputs * self.pool
        self.dt_ms = c.dt_ms
        self._per_s = 1000.0 / c.dt_ms          # the factor binning.py uses: step = floor(t * 1000/dt + slack)
        self._gap_s = None if self.reset_on_gap_ms is None else self.reset_on_gap_ms / 1000.0
        lc = learning_config or loaded.learning_config or LearningConfig()
        self.learning_config = lc
        self.loss_start_step = lc.loss_start_step
        self.learner = None
        net.set_threads(threads)
        if adapt:
            self.learner = ThreeFactorLearner(net, lc, seed=self.run_config.seed)    # before reset: may grow rings
            restore_optimizer(self.learner, loaded.optimizer)
            default_every = lc.update_every_steps if lc.update == "online" else self.run_config.n_steps
            self.update_every_steps = _check_int("update_every_steps", update_every_steps or default_every, 1)
            self._loss_weight = 1.0 / max(1, self.run_config.n_steps - lc.loss_start_step)
        else:
            self.update_every_steps = None
            self._loss_weight = 0.0
        net.reset(batch_size=1)
        if self.learner is not None:
            self.learner.reset()
        self._x = np.zeros((c.n_inputs, 1), net.dtype)
        self._labels = np.full(1, -1, np.int64)
        # binning position (feed side)
        self._origin_s = 0.0 if self.origin == "zero" else None
        self._clock_s = None          # feed time reached in this sample (None: nothing yet)
        self._last_event_s = None     # last accepted event (for the silence gap)
        self._open = 0 if self.origin == "zero" else None   # clock index of the step being filled
        self._pending = np.zeros(c.n_inputs, np.int64)
        self._pending_events = 0
        self._label = -1
        self._next_label = None
        self._queue = deque()         # ("step", index, frame|None, n_events, label, run, origin_s) | ("reset", reason)
        # network side
        self._steps_run = 0
        self._segment = 0
        self._votes = np.zeros(c.n_outputs)
        self._vote_steps = 0
        self._segment_label = -1
        self._since_apply = 0
        self._labelled_since_apply = False
        # counters
        self.events_accepted = 0
        self.rejected = {reason: 0 for reason in REJECT_REASONS}
        self.latency = _Latency()
        self.updates = 0
        self.updates_reverted = 0
        self.labelled_steps = 0
        self.segments_closed = 0
        self.segments_labelled = 0
        self.segments_correct = 0
        self.gap_resets = 0
        self._warm_up()

    def _warm_up(self) -> None:
        """Load every kernel of the per-step path (step, learning, update, flush) before the first timed
        step, then put the state back exactly (a compiled-and-cached kernel still loads on first call)."""
        snap = self.snapshot()
        self._run_step(0, None, 0, -1, 0.0)
        if self.learner is not None:
            self._labelled_since_apply = True
            self._apply()
            self.learner.flush()
        self.restore(snap)

    # -- feed side: binning ----------------------------------------------------------------------
    @property
    def open_step(self) -> int | None:
        """Clock index of the step being filled (None before a segment's first event)."""
        return self._open

    @property
    def clock_s(self) -> float | None:
        """The feed time reached in this sample, seconds (None before its first event or tick)."""
        return self._clock_s

    @property
    def queued_steps(self) -> int:
        """Completed steps waiting for :meth:`step` / :meth:`poll`."""
        return sum(e[5] for e in self._queue if e[0] == "step")

    def step_of(self, times_s) -> np.ndarray:
        """Clock step index of each time (seconds); the binning rule of the module docstring."""
        origin = 0.0 if self._origin_s is None else self._origin_s
        return np.floor((np.asarray(times_s, np.float64) - origin) * self._per_s + _SLACK).astype(np.int64)

    def _step_of(self, t: float) -> int:
        return int(math.floor((t - self._origin_s) * self._per_s + _SLACK))

    def count_rejected(self, reason: str, n: int = 1) -> None:
        """Count ``n`` pieces of input rejected by a reader for ``reason`` (one of :data:`REJECT_REASONS`)."""
        if reason not in self.rejected:
            raise ValueError(f"reason={reason!r} is not one of {', '.join(REJECT_REASONS)}")
        self.rejected[reason] += int(n)

    def push(self, times_s, units) -> int:
        """Bin raw events; completed steps are queued for :meth:`step` / :meth:`poll`.

        Parameters
        ----------
        times_s : array, shape (n,), float, seconds on the feed clock, non-decreasing
        units : array, shape (n,), int, raw channels 0 .. n_channels-1 (before pooling)

        Returns
        -------
        int, events accepted; the others are counted in ``rejected`` by reason

        Raises
        ------
        StreamError with ``on_backwards="fail"`` at the first event going backwards (the events
        before it are kept); ValueError for arrays of different lengths or non-numeric dtype
        """
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
        if self._origin_s is None:
            self._origin_s = float(t[0])
        rel = (t - self._origin_s) * self._per_s
        far = rel >= _MAX_REL_STEPS
        if far.any():                                     # step index would not be exact: a corrupt time
            self.rejected["time_jump"] += int(far.sum())
            t, u, rel = t[~far], u[~far], rel[~far]
            if not t.size:
                return 0
        steps = np.floor(rel + _SLACK).astype(np.int64)
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
                              f"stream clock is at {self._clock_s!r} s); on_backwards='fail' stops the stream")
        return int(t.size)

    def _order_codes(self, t: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """_OK / _BACK / _JUMP per event: vectorised, exact sequential semantics only when a jump may occur."""
        open0 = _NO_STEP if self._open is None else self._open
        late = steps < open0                              # in a step already completed
        clock = -np.inf if self._clock_s is None else self._clock_s
        ref = np.maximum.accumulate(np.concatenate(([clock], np.where(late, -np.inf, t))))[:-1]
        back = late | (t < ref)
        codes = back.astype(np.int8)                      # _BACK == 1
        if self.max_jump_s is not None:
            base = np.where(np.isneginf(ref), self._origin_s, ref)
            if ((t - base > self.max_jump_s) & ~back).any():
                codes = self._order_codes_sequential(t, late)
        return codes

    def _order_codes_sequential(self, t: np.ndarray, late: np.ndarray) -> np.ndarray:
        codes = np.zeros(t.size, np.int8)
        cur = self._clock_s
        for i in range(t.size):
            ti = float(t[i])
            if late[i] or (cur is not None and ti < cur):
                codes[i] = _BACK
            elif ti - (self._origin_s if cur is None else cur) > self.max_jump_s:
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
            prev[0] = np.inf if self._last_event_s is None else self._last_event_s
            prev[1:] = t[:-1]
            for cut in np.flatnonzero(t - prev >= self._gap_s):
                if cut > start:
                    self._bin(groups[start:cut], steps[start:cut])
                    self._last_event_s = float(t[cut - 1])
                self._gap_reset()
                start = int(cut)
        self._bin(groups[start:], steps[start:])
        self._last_event_s = self._clock_s = float(t[-1])

    def _bin(self, groups: np.ndarray, steps: np.ndarray) -> None:
        n = steps.size
        if not n:
            return
        starts = np.concatenate(([0], np.flatnonzero(steps[1:] != steps[:-1]) + 1))
        ends = np.append(starts[1:], n)
        for a, b in zip(starts.tolist(), ends.tolist()):
            s = int(steps[a])
            if self._open is None or s > self._open:
                self._close_before(s)
            if b - a == 1:
                self._pending[groups[a]] += 1
            else:
                self._pending += np.bincount(groups[a:b], minlength=self.n_inputs)
            self._pending_events += b - a

    def _close_before(self, s: int) -> None:
        """Complete the open step and the silent steps up to ``s`` (exclusive); ``s`` becomes the open step."""
        if self._open is not None and s > self._open:
            k = self._open
            if self._pending_events:
                self._queue.append(("step", k, self._pending.copy(), self._pending_events, self._label, 1,
                                    self._origin_s))
                self._pending[:] = 0
                self._pending_events = 0
                k += 1
            if self._next_label is not None:          # a label set during step k applies from step k + 1
                self._label, self._next_label = self._next_label, None
            if s > k:
                self._queue.append(("step", k, None, 0, self._label, s - k, self._origin_s))
        if self._open is None or s > self._open:
            self._open = s
            if self._next_label is not None:
                self._label, self._next_label = self._next_label, None

    def _gap_reset(self) -> None:
        last = self._last_event_s
        if self._open is not None and last is not None:
            self._close_before(max(self._step_of(last + self._gap_s), self._step_of(last) + 1))
        self._queue.append(("reset", "gap"))
        self._open = None
        self._last_event_s = None
        self.gap_resets += 1

    def advance(self, time_s: float) -> None:
        """The feed's clock reached ``time_s`` (seconds) with no event: completes the steps that end by then.

        Bad times are counted like events' (``nan_time``, ``negative_time``, ``backwards``, ``time_jump``).
        """
        t = float(time_s)
        if not math.isfinite(t):
            self.rejected["nan_time"] += 1
            return
        if t < 0:
            self.rejected["negative_time"] += 1
            return
        if self._origin_s is None:                # origin "first": no event yet, nothing to complete
            return
        if self._clock_s is not None and t < self._clock_s:
            self.rejected["backwards"] += 1
            if self.on_backwards == "fail":
                raise StreamError(f"tick time {t!r} s goes backwards (the stream clock is at {self._clock_s!r} s); "
                                  "on_backwards='fail' stops the stream")
            return
        base = self._origin_s if self._clock_s is None else self._clock_s
        rel = (t - self._origin_s) * self._per_s
        if (self.max_jump_s is not None and t - base > self.max_jump_s) or rel >= _MAX_REL_STEPS:
            self.rejected["time_jump"] += 1
            return
        if self._gap_s is not None and self._last_event_s is not None and t - self._last_event_s >= self._gap_s:
            self._gap_reset()
        elif self._open is not None:
            self._close_before(self._step_of(t))
        self._clock_s = t

    def close_steps_before(self, index: int) -> None:
        """Complete every step with clock index < ``index`` without moving the clock (real-time pacing)."""
        if self._open is not None and index > self._open:
            self._close_before(int(index))

    def set_label(self, label) -> bool:
        """Set the target class: an index, a class name, or -1 / None / "-" / "none" for no target.

        Takes effect from the step being filled if it holds no event yet, else from the next step.
        Returns False (and counts ``bad_label``) for an unknown label.
        """
        value = self._resolve_label(label)
        if value is None:
            self.rejected["bad_label"] += 1
            return False
        if self._open is None or not self._pending_events:
            self._label, self._next_label = value, None
        else:
            self._next_label = value
        return True

    def _resolve_label(self, label):
        if label is None:
            return -1
        if isinstance(label, (bytes, bytearray)):
            label = label.decode("utf-8", "replace")
        if isinstance(label, str):
            text = label.strip()
            if text in ("-", "none", "-1"):
                return -1
            if text in self.class_names:
                return self.class_names.index(text)
            lowered = [n.lower() for n in self.class_names]
            if text.lower() in lowered:
                return lowered.index(text.lower())
            try:
                label = int(text)
            except ValueError:
                return None
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            return None
        label = int(label)
        return label if -1 <= label < self.n_outputs else None

    def end_sample(self, reason: str = "end") -> None:
        """End of a sample: complete the partial step, queue a reset, restart the clock at the origin."""
        if self._open is not None and (self._clock_s is not None or self._pending_events):
            self._close_before(self._open + 1)
        self._queue.append(("reset", reason))
        self._origin_s = 0.0 if self.origin == "zero" else None
        self._open = 0 if self.origin == "zero" else None
        self._clock_s = self._last_event_s = None
        self._label, self._next_label = -1, None

    def finish(self) -> None:
        """End of the stream: like :meth:`end_sample` (reason ``"eof"``); then :meth:`poll` the rest."""
        self.end_sample("eof")

    # -- network side ------------------------------------------------------------------------------
    def step(self):
        """Run the next queued step; returns its :class:`StepResult`, a :class:`SegmentResult` when a
        reset closes a segment, or None when nothing is queued."""
        queue = self._queue
        while queue:
            entry = queue[0]
            if entry[0] == "reset":
                queue.popleft()
                result = self._reset(entry[1])
                if result is not None:
                    return result
                continue
            _, index, frame, n_events, label, run, origin_s = entry
            if run > 1:
                queue[0] = ("step", index + 1, None, 0, label, run - 1, origin_s)
            else:
                queue.popleft()
            return self._run_step(index, frame, n_events, label, origin_s)
        return None

    def poll(self) -> list:
        """Run every queued step; returns their results in order (see :meth:`step`)."""
        out = []
        while self._queue:
            result = self.step()
            if result is None:
                break
            out.append(result)
        return out

    def _run_step(self, index, frame, n_events, label, origin_s):
        start = time.perf_counter_ns()
        net = self.net
        if frame is None:
            self._x.fill(0)
        else:
            self._x[:, 0] = frame
        net._step(self._x)                    # counts validated on push; same kernels as Network.step
        segment_step = net.t - 1
        if self.learner is not None:
            self._learn(label, segment_step)
        y = net.state.y[:, 0].copy()
        probs = softmax(y)
        if segment_step >= self.loss_start_step:
            self._votes += probs
            self._vote_steps += 1
        if label >= 0:
            self._segment_label = label
        prediction = int(np.argmax(probs))
        vote = int(np.argmax(self._votes)) if self._vote_steps else None
        latency = time.perf_counter_ns() - start
        self.latency.add(latency)
        result = StepResult(self._steps_run, self._segment, index, segment_step,
                            origin_s + (index + 1) * self.dt_ms / 1000.0, n_events, label, y, probs, prediction,
                            vote, latency)
        self._steps_run += 1
        return result

    def _learn(self, label: int, segment_step: int) -> None:
        weight = self._loss_weight if (label >= 0 and segment_step >= self.loss_start_step) else 0.0
        self._labels[0] = label
        self.learner.step(self._labels, weight)
        if weight > 0:
            self._labelled_since_apply = True
            self.labelled_steps += 1
        self._since_apply += 1
        if self._since_apply >= self.update_every_steps:
            self._apply()

    def _apply(self) -> None:
        """One optimizer step if a labelled step contributed; reverted if it makes anything non-finite."""
        self._since_apply = 0
        if not self._labelled_since_apply:
            self.learner.zero_grad()
            return
        self._labelled_since_apply = False
        p = self.net.params
        backup = [a.copy() for a in self._mutable(p)]
        self.learner.apply()
        if all(np.isfinite(a).all() for a in self._mutable(p) if a.dtype.kind == "f"):
            self.updates += 1
            return
        for a, b in zip(self._mutable(p), backup):
            a[...] = b
        self.net.parameters_changed()
        opt = self.learner.optimizer
        for moments in (getattr(opt, "m", ()), getattr(opt, "v", ())):
            for arr in moments:
                arr[~np.isfinite(arr)] = 0.0
        self.updates_reverted += 1
        if self.updates_reverted == 1:
            warnings.warn("an online update produced NaN or inf and was reverted (warned once); "
                          "lower the learning rates", RuntimeWarning, stacklevel=3)

    @staticmethod
    def _mutable(p):
        return (p.input.weight, p.input.delay, p.input.delay_steps, p.recurrent.weight, p.recurrent.delay,
                p.recurrent.delay_steps, p.w_out, p.b_out)

    def _reset(self, reason: str):
        net = self.net
        if net.t == 0:
            return None
        if self.learner is not None:
            self.learner.flush()
            self._apply()
        steps = net.t
        prediction = int(np.argmax(self._votes)) if self._vote_steps else None
        result = SegmentResult(self._segment, steps, prediction, self._segment_label, reason)
        self.segments_closed += 1
        if self._segment_label >= 0 and prediction is not None:
            self.segments_labelled += 1
            self.segments_correct += int(prediction == self._segment_label)
        net.reset()
        if self.learner is not None:
            self.learner.reset()
        self._votes[:] = 0.0
        self._vote_steps = 0
        self._segment_label = -1
        self._segment += 1
        return result

    # -- state ------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of the whole stream state: network (parameters, state, rings), learner (traces,
        gradients, optimizer), binning position, queued steps, counters.  See :meth:`restore`."""
        learner = None if self.learner is None else self.learner.snapshot()
        queue = [tuple(e[:2]) + ((None if e[2] is None else e[2].copy()),) + tuple(e[3:]) if e[0] == "step"
                 else e for e in self._queue]
        scalars = {name: getattr(self, name) for name in _SCALARS}
        return {"format": "onlinedelay-stream", "version": 1, "net": self.net.snapshot(), "learner": learner,
                "pending": self._pending.copy(), "votes": self._votes.copy(), "queue": queue,
                "rejected": dict(self.rejected), "latency": self.latency.copy(), "scalars": scalars}

    def restore(self, snap: dict) -> None:
        """Put a :meth:`snapshot` back (into this runner or a fresh one built from the same model and
        options): the stream then continues bit-identically."""
        if not isinstance(snap, dict) or snap.get("format") != "onlinedelay-stream":
            raise ValueError("snap is not a StreamRunner.snapshot()")
        if (snap["learner"] is None) != (self.learner is None):
            raise ValueError(f"snap was taken with adapt={snap['learner'] is not None}; this runner has "
                             f"adapt={self.learner is not None}")
        if snap["pending"].shape != self._pending.shape:
            raise ValueError(f"snap has {snap['pending'].shape[0]} inputs; this model has {self.n_inputs}")
        self.net.restore(snap["net"])
        if self.learner is not None:
            self.learner.restore(snap["learner"])
        self._pending[...] = snap["pending"]
        self._votes[...] = snap["votes"]
        self._queue = deque(tuple(e[:2]) + ((None if e[2] is None else e[2].copy()),) + tuple(e[3:])
                            if e[0] == "step" else e for e in snap["queue"])
        self.rejected = dict(snap["rejected"])
        self.latency = snap["latency"].copy()
        for name, value in snap["scalars"].items():
            setattr(self, name, value)

    def summary(self) -> dict:
        """Counters: steps, segments, events accepted / rejected by reason, latency, adaptation."""
        out = {"steps": self._steps_run, "segments": self.segments_closed, "events_accepted": self.events_accepted,
               "events_rejected": dict(self.rejected), "rejected_total": int(sum(self.rejected.values())),
               "latency_us": self.latency.summary(), "gap_resets": self.gap_resets,
               "segment_accuracy": (self.segments_correct / self.segments_labelled
                                    if self.segments_labelled else None),
               "labelled_segments": self.segments_labelled}
        out["adapt"] = None if self.learner is None else {
            "updates": self.updates, "reverted": self.updates_reverted, "labelled_steps": self.labelled_steps,
            "update_every_steps": self.update_every_steps}
        return out

    def save(self, path) -> None:
        """Write the (adapted) model atomically, with its optimizer state when adapting."""
        training = dict(self.model.training or {})
        training.setdefault("run", self.run_config.to_dict())
        training["stream"] = {"steps": self._steps_run, "updates": self.updates,
                              "labelled_steps": self.labelled_steps, "source_model": str(self.model.path)}
        save_model(path, self.net, self.class_names, self.learner, training)


_SCALARS = ("_origin_s", "_clock_s", "_last_event_s", "_open", "_pending_events", "_label", "_next_label",
            "_steps_run", "_segment", "_vote_steps", "_segment_label", "_since_apply", "_labelled_since_apply",
            "events_accepted", "updates", "updates_reverted", "labelled_steps", "segments_closed",
            "segments_labelled", "segments_correct", "gap_resets")


# -- readers: bytes -> items ------------------------------------------------------------------------
# An item is ("events", times_s (n,) float64, units (n,) int64) | ("label", value) | ("tick", time_s)
# | ("end", reason) | ("reject", reason, count).

class TextParser:
    """Incremental reader of the text format (module docstring); bounded memory per line.

    Parameters
    ----------
    time_unit : "s" or "ms", unit of the times in the lines
    max_line_bytes : int, longer lines are skipped and counted as ``oversized_record``
    """

    def __init__(self, time_unit: str = "s", max_line_bytes: int = 1024):
        self.divisor = TIME_UNITS[_check_choice("time_unit", time_unit, tuple(TIME_UNITS))]
        self.max_line_bytes = _check_int("max_line_bytes", max_line_bytes, 16)
        self._buf = b""
        self._skipping = False

    def feed(self, data: bytes) -> list:
        """Parse a chunk; returns the items of its complete lines."""
        if self._skipping:
            i = data.find(b"\n")
            if i < 0:
                return []
            data = data[i + 1:]
            self._skipping = False
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        items = self._parse(lines)
        if len(self._buf) > self.max_line_bytes:
            items.append(("reject", "oversized_record", 1))
            self._buf = b""
            self._skipping = True
        return items

    def close(self) -> list:
        """End of input: the last line, even without a newline."""
        rest, self._buf = self._buf, b""
        skipping, self._skipping = self._skipping, False
        return [] if skipping or not rest else self._parse([rest])

    def _parse(self, lines) -> list:
        items, times, units = [], [], []
        malformed = oversized = 0
        limit = self.max_line_bytes

        def flush():
            if times:
                items.append(("events", _as_times(times, self.divisor), _as_units(units)))
                times.clear()
                units.clear()

        for line in lines:
            parts = line.split()
            if len(parts) == 2:
                try:
                    t = float(parts[0])
                    u = int(parts[1])
                except ValueError:
                    pass
                else:
                    times.append(t)
                    units.append(u)
                    continue
            if not parts or parts[0][:1] == b"#":
                continue
            if len(line) > limit:
                oversized += 1
                continue
            word = parts[0]
            if word == b"label" and len(parts) >= 2:
                flush()
                items.append(("label", line.split(None, 1)[1].strip().decode("utf-8", "replace")))
            elif word == b"tick" and len(parts) == 2:
                try:
                    value = float(parts[1]) / self.divisor
                except ValueError:
                    malformed += 1
                    continue
                flush()
                items.append(("tick", value))
            elif word == b"end" and len(parts) == 1:
                flush()
                items.append(("end", "end"))
            else:
                malformed += 1
        flush()
        if malformed:
            items.append(("reject", "malformed", malformed))
        if oversized:
            items.append(("reject", "oversized_record", oversized))
        return items


def _as_times(values, divisor) -> np.ndarray:
    arr = np.array(values, np.float64)
    return arr / divisor if divisor != 1.0 else arr


def _as_units(values) -> np.ndarray:
    try:
        return np.array(values, np.int64)
    except OverflowError:                       # a unit beyond int64: make it an unknown unit
        return np.array([max(-1, min(v, 2 ** 62)) for v in values], np.int64)


class BinaryParser:
    """Incremental reader of the binary record format (module docstring); bounded memory.

    Parameters
    ----------
    max_record_events : int, EVENTS records with more events are skipped as ``oversized_record``
    """

    def __init__(self, max_record_events: int = 65536):
        self.max_record_events = _check_int("max_record_events", max_record_events, 1)
        self._buf = bytearray()
        self._resyncing = False

    def feed(self, data: bytes) -> list:
        """Parse a chunk; returns the items of its complete records."""
        buf = self._buf
        buf += data
        items, pos, n = [], 0, len(buf)
        while n - pos >= HEADER_BYTES:
            if buf[pos:pos + 4] != MAGIC:
                j = buf.find(MAGIC, pos + 1)
                self._garbage(items)
                if j < 0:
                    pos = max(pos, n - 3)              # keep a possible partial magic
                    break
                pos = j
                continue
            _, kind, flags, count = _HEADER.unpack_from(buf, pos)
            if kind == KIND_EVENTS and flags == 0:
                if count > self.max_record_events:
                    items.append(("reject", "oversized_record", 1))
                    self._resyncing = True             # its payload is skipped as garbage, not counted again
                    pos += 4
                    continue
                need = HEADER_BYTES + EVENT_DTYPE.itemsize * count
                if n - pos < need:
                    break
                arr = np.frombuffer(buf, EVENT_DTYPE, count, pos + HEADER_BYTES)
                items.append(("events", arr["time_s"].astype(np.float64), arr["unit"].astype(np.int64)))
                del arr
                pos += need
            elif kind == KIND_LABEL and flags == 0:
                items.append(("label", None if count == NO_LABEL else int(count)))
                pos += HEADER_BYTES
            elif kind == KIND_TICK and flags == 0:
                if n - pos < HEADER_BYTES + 8:
                    break
                items.append(("tick", _TIME_F64.unpack_from(buf, pos + HEADER_BYTES)[0]))
                pos += HEADER_BYTES + 8
            elif kind == KIND_END and flags == 0:
                items.append(("end", "end"))
                pos += HEADER_BYTES
            else:                                      # a header of unknown kind (or flags): one bad record
                items.append(("reject", "malformed", 1))
                self._resyncing = True                 # the rest of its header is skipped without a count
                pos += 4
                continue
            self._resyncing = False
        del buf[:pos]
        return items

    def _garbage(self, items) -> None:
        if not self._resyncing:
            items.append(("reject", "malformed", 1))
            self._resyncing = True

    def close(self) -> list:
        """End of input: bytes left over are a truncated record (its complete events are kept) or garbage."""
        items = []
        buf = self._buf
        if buf:
            if buf[:4] == MAGIC[:len(buf[:4])]:
                if len(buf) >= HEADER_BYTES:
                    _, kind, flags, count = _HEADER.unpack_from(buf, 0)
                    whole = min(count, (len(buf) - HEADER_BYTES) // EVENT_DTYPE.itemsize)
                    if kind == KIND_EVENTS and flags == 0 and whole:
                        arr = np.frombuffer(buf, EVENT_DTYPE, whole, HEADER_BYTES)
                        items.append(("events", arr["time_s"].astype(np.float64), arr["unit"].astype(np.int64)))
                        del arr
                items.append(("reject", "truncated_record", 1))
            else:
                self._garbage(items)
        self._buf = bytearray()
        self._resyncing = False
        return items


class _SniffingParser:
    """Text or binary, decided by the first bytes (binary streams start with ``MAGIC``)."""

    def __init__(self, time_unit, max_line_bytes, max_record_events):
        self._args = (time_unit, max_line_bytes, max_record_events)
        self._head = b""
        self.parser = None

    def _decide(self):
        time_unit, max_line, max_events = self._args
        binary = self._head[:4] == MAGIC
        self.parser = BinaryParser(max_events) if binary else TextParser(time_unit, max_line)
        head, self._head = self._head, b""
        return self.parser.feed(head)

    def feed(self, data: bytes) -> list:
        if self.parser is not None:
            return self.parser.feed(data)
        self._head += data
        return self._decide() if len(self._head) >= 4 or b"\n" in self._head else []

    def close(self) -> list:
        items = self._decide() if self.parser is None and self._head else []
        return items + (self.parser.close() if self.parser is not None else [])


def _make_parser(fmt, time_unit, max_line_bytes, max_record_events):
    if fmt == "text":
        return TextParser(time_unit, max_line_bytes)
    if fmt == "binary":
        return BinaryParser(max_record_events)
    return _SniffingParser(time_unit, max_line_bytes, max_record_events)


# -- binary writers -----------------------------------------------------------------------------------
def encode_events(times_s, units) -> bytes:
    """EVENTS record(s) of the binary format (split into records of at most 65536 events).

    Parameters
    ----------
    times_s : array, shape (n,), float, seconds
    units : array, shape (n,), int in [0, 2**32)
    """
    t = np.asarray(times_s, np.float64).ravel()
    u = np.asarray(units).ravel()
    if t.shape != u.shape:
        raise ValueError(f"times_s {t.shape} and units {u.shape} must have the same length")
    if u.size and (u.min() < 0 or u.max() > NO_LABEL):
        raise ValueError("units must fit an unsigned 32-bit integer")
    out = []
    for a in range(0, max(t.size, 1), 65536):
        rec = np.empty(min(65536, t.size - a), EVENT_DTYPE)
        rec["time_s"], rec["unit"] = t[a:a + rec.size], u[a:a + rec.size]
        out.append(_HEADER.pack(MAGIC, KIND_EVENTS, 0, rec.size) + rec.tobytes())
    return b"".join(out)


def encode_label(label) -> bytes:
    """LABEL record: a class index, or None to clear the label."""
    return _HEADER.pack(MAGIC, KIND_LABEL, 0, NO_LABEL if label is None or label < 0 else int(label))


def encode_tick(time_s: float) -> bytes:
    """TICK record: the feed's clock reached ``time_s`` seconds."""
    return _HEADER.pack(MAGIC, KIND_TICK, 0, 0) + _TIME_F64.pack(float(time_s))


def encode_end() -> bytes:
    """END record: end of sample."""
    return _HEADER.pack(MAGIC, KIND_END, 0, 0)


# -- sources ------------------------------------------------------------------------------------------
class FileSource:
    """A text or binary file read in chunks (one session)."""

    replayable = True

    def __init__(self, path, chunk_bytes: int = 1 << 16):
        self.path = Path(path)
        if not self.path.is_file():
            raise StreamOptionError("input", f"input file {self.path} does not exist")
        self.chunk_bytes = chunk_bytes

    def sessions(self):
        """Yields one (name, iterator of byte chunks)."""
        def chunks():
            with open(self.path, "rb") as f:
                while True:
                    data = f.read(self.chunk_bytes)
                    if not data:
                        return
                    yield data
        yield str(self.path), chunks()


class StdinSource:
    """Standard input (or another binary stream), read as bytes arrive (one session)."""

    replayable = False

    def __init__(self, stream=None, chunk_bytes: int = 1 << 16):
        self.stream, self.chunk_bytes = stream, chunk_bytes

    def sessions(self):
        import sys

        stream = self.stream if self.stream is not None else sys.stdin.buffer
        read = getattr(stream, "read1", stream.read)      # read1: what has arrived, without waiting for a full chunk

        def chunks():
            while True:
                data = read(self.chunk_bytes)
                if not data:
                    return
                yield data
        yield "stdin", chunks()


class TcpSource:
    """A TCP listener; clients are served one at a time, each one a session (a sample).

    Parameters
    ----------
    host : str, address to bind (default loopback ``127.0.0.1``; anything else must be asked for)
    port : int, 0 picks a free port (see ``address``)
    max_clients : int or None, stop after this many clients
    accept_timeout_s : float or None, stop when no client connects for this long
    """

    replayable = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_clients: int | None = None,
                 accept_timeout_s: float | None = None, chunk_bytes: int = 1 << 16):
        _check_int("port", port, 0)
        if port > 65535:
            raise StreamOptionError("port", f"port={port} is not allowed; expected 0 .. 65535")
        self.max_clients = _check_int("max_clients", max_clients, 1, allow_none=True)
        self.accept_timeout_s = _check_positive("accept_timeout_s", accept_timeout_s)
        self.chunk_bytes = chunk_bytes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(1)
        except OSError as err:
            self._sock.close()
            raise StreamOptionError("input", f"cannot listen on {host}:{port} ({err})") from None
        self.address = self._sock.getsockname()[:2]
        self.clients = 0

    def sessions(self):
        """Yields (peer, iterator of byte chunks) per client until max_clients or the accept timeout."""
        try:
            while self.max_clients is None or self.clients < self.max_clients:
                self._sock.settimeout(self.accept_timeout_s)
                try:
                    conn, peer = self._sock.accept()
                except TimeoutError:
                    return
                self.clients += 1
                yield f"{peer[0]}:{peer[1]}", self._chunks(conn)
        finally:
            self.close()

    def _chunks(self, conn):
        with conn:
            conn.settimeout(None)
            while True:
                try:
                    data = conn.recv(self.chunk_bytes)
                except (ConnectionError, OSError):
                    return
                if not data:
                    return
                yield data

    def close(self) -> None:
        self._sock.close()


class Hdf5Source:
    """An SHD-layout file replayed sample by sample in time order (label, events, end)."""

    replayable = True

    def __init__(self, path, sample: int | None = None):
        self.path = Path(path)
        self.sample = sample

    def items(self, runner: StreamRunner):
        """Yields the items of the chosen sample(s); labels mapped to the model's classes by name."""
        from .datasets import load_dataset
        from .evaluate import map_labels

        ds = load_dataset(self.path)
        if ds.n_channels != runner.n_channels:
            raise StreamError(f"{self.path}: {ds.n_channels} channels; the model takes {runner.n_inputs} inputs "
                              f"x pool {runner.pool} = {runner.n_channels} channels")
        if self.sample is not None:
            if isinstance(self.sample, bool) or not isinstance(self.sample, (int, np.integer)) \
                    or not 0 <= self.sample < len(ds):
                raise StreamOptionError("sample", f"sample={self.sample!r} is not allowed; {self.path} has "
                                                  f"samples 0 .. {len(ds) - 1}")
            indices = [int(self.sample)]
        else:
            indices = range(len(ds))
        try:
            labels = map_labels(ds.labels, ds.class_names, runner.class_names, str(self.path))
        except ValueError:
            labels = None
        for i in indices:
            yield ("label", None if labels is None else int(labels[i]))
            t, u = ds.events(i)
            if t.size:
                yield ("events", t, u)
            yield ("end", "end")


def open_source(spec: str, *, input_format: str = "auto", host: str = "127.0.0.1", sample: int | None = None,
                max_clients: int | None = None, accept_timeout_s: float | None = None):
    """A source from ``--input``: ``-`` (stdin), ``tcp:PORT`` (listener on ``host``), or a file path."""
    _check_choice("input_format", input_format, ("auto", "text", "binary", "hdf5"))
    if spec == "-":
        if input_format == "hdf5":
            raise StreamOptionError("format", "an HDF5 file cannot be read from stdin; give its path")
        return StdinSource()
    if spec.startswith("tcp:"):
        port = spec[4:]
        if not port.isdigit() or not port.isascii():
            raise StreamOptionError("input", f"input={spec!r}: expected tcp:PORT (the host is --host, "
                                             f"default 127.0.0.1)")
        if input_format == "hdf5":
            raise StreamOptionError("format", "an HDF5 file cannot be read from a socket; give its path")
        if int(port) > 65535:
            raise StreamOptionError("input", f"input={spec!r}: port {port} is not in 0 .. 65535")
        return TcpSource(host, int(port), max_clients=max_clients, accept_timeout_s=accept_timeout_s)
    path = Path(spec)
    if not path.is_file():
        raise StreamOptionError("input", f"input {spec!r} is not '-', tcp:PORT or an existing file")
    if input_format == "auto":
        with open(path, "rb") as f:
            head = f.read(8)
        input_format = "hdf5" if head == _HDF5_SIGNATURE else "auto"
    if input_format == "hdf5":
        return Hdf5Source(path, sample)
    if sample is not None:
        raise StreamOptionError("sample", "sample is only for HDF5 input")
    return FileSource(path)


def _read_label_file(path, time_unit: str):
    """(times_s (n,) float64 sorted, labels list) from lines ``TIME LABEL``."""
    divisor = TIME_UNITS[time_unit]
    times, labels = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        try:
            t = float(parts[0]) / divisor
            if len(parts) != 2 or not math.isfinite(t) or t < 0:
                raise ValueError
        except ValueError:
            raise StreamOptionError("labels", f"{path}:{number}: expected 'TIME LABEL', got {line!r}") from None
        times.append(t)
        labels.append(parts[1].strip())
    order = np.argsort(np.array(times), kind="stable")
    return np.array(times)[order], [labels[i] for i in order]


def _merge_labels(items, times, labels):
    """Insert ("label", x) items where the feed's time reaches each change of a label file."""
    k = 0
    for item in items:
        if k < len(times) and item[0] == "events":
            t, u = item[1], item[2]
            start = 0
            while k < len(times) and start < t.size:
                cut = start + int(np.searchsorted(t[start:], times[k], side="left"))
                if cut >= t.size:
                    break
                if cut > start:
                    yield ("events", t[start:cut], u[start:cut])
                yield ("label", labels[k])
                k += 1
                start = cut
            if start < t.size:
                yield ("events", t[start:], u[start:])
            continue
        if item[0] == "tick":
            while k < len(times) and times[k] <= item[1]:
                yield ("label", labels[k])
                k += 1
        yield item


# -- output -------------------------------------------------------------------------------------------
class OutputWriter:
    """Writes results as JSON lines or a compact table, per step or per window of ``every`` steps.

    Parameters
    ----------
    out : text file object
    class_names : list of str
    output : "json" or "table"
    every : int, steps per output line (probabilities averaged over the window; windows end at resets)
    top_k : int or None, write the k most probable classes instead of every probability
    """

    def __init__(self, out, class_names, output="json", every=1, top_k=None):
        import json

        self._dumps = json.dumps
        self.out = out
        self.names = list(class_names)
        self.output = _check_choice("output", output, ("json", "table"))
        self.every = _check_int("every", every, 1)
        self.top_k = _check_int("top_k", top_k, 1, allow_none=True)
        if self.top_k is not None and self.top_k > len(self.names):
            raise StreamOptionError("top_k", f"top_k={top_k} is more than the {len(self.names)} classes")
        self._window = None
        self._header = False

    def write(self, result) -> None:
        if isinstance(result, SegmentResult):
            self.flush()
            self._segment(result)
            return
        if self.every == 1:
            self._step(result, result.probs, 1, result.n_events)
            return
        w = self._window
        if w is None:
            w = self._window = [np.zeros(len(self.names)), 0, 0, None]
        w[0] += result.probs
        w[1] += 1
        w[2] += result.n_events
        w[3] = result
        if w[1] >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write a partial window."""
        w, self._window = self._window, None
        if w is not None and w[1]:
            self._step(w[3], w[0] / w[1], w[1], w[2])

    def _step(self, r: StepResult, probs, n_steps, n_events) -> None:
        k = int(np.argmax(probs))
        if self.output == "json":
            rec = {"step": r.step, "seg": r.segment, "k": r.index, "t_s": round(r.t_end_s, 9), "events": n_events}
            if n_steps > 1 or self.every > 1:
                rec["steps"] = n_steps
            rec.update({"class": k, "name": self.names[k]})
            if r.label >= 0:
                rec["label"] = r.label
            if self.top_k:
                order = np.argsort(-probs, kind="stable")[:self.top_k]
                rec["top"] = [[self.names[i], round(float(probs[i]), 6)] for i in order]
            else:
                rec["p"] = [round(float(p), 6) for p in probs]
            self.out.write(self._dumps(rec) + "\n")
            return
        if not self._header:
            self.out.write(f"{'step':>8} {'seg':>4} {'t_s':>10} {'events':>6} {'class':>5}  {'name':<12} "
                           f"{'p':>6}" + ("  top" if self.top_k else "") + "\n")
            self._header = True
        line = (f"{r.step:>8d} {r.segment:>4d} {r.t_end_s:>10.3f} {n_events:>6d} {k:>5d}  "
                f"{self.names[k][:12]:<12} {probs[k]:>6.3f}")
        if self.top_k:
            order = np.argsort(-probs, kind="stable")[:self.top_k]
            line += "  " + ", ".join(f"{self.names[i]} {probs[i]:.3f}" for i in order)
        self.out.write(line + "\n")

    def _segment(self, s: SegmentResult) -> None:
        name = None if s.prediction is None else self.names[s.prediction]
        if self.output == "json":
            rec = {"segment": s.segment, "steps": s.steps, "class": s.prediction, "name": name, "reason": s.reason}
            if s.label >= 0:
                rec["label"] = s.label
            self.out.write(self._dumps(rec) + "\n")
        else:
            label = f" (label {self.names[s.label]})" if s.label >= 0 else ""
            self.out.write(f"-- segment {s.segment} ({s.reason}): {s.steps} steps, vote {name}{label}\n")

    def summary(self, summary: dict) -> None:
        """The final summary as one JSON line (json output only)."""
        if self.output == "json":
            self.out.write(self._dumps({"summary": summary}) + "\n")


def format_summary(summary: dict) -> str:
    """Human-readable lines of a :func:`run_stream` summary."""
    lat = summary["latency_us"]
    rejected = ", ".join(f"{k} {v}" for k, v in summary["events_rejected"].items() if v) or "none"
    lines = [f"{summary['steps']} steps in {summary['segments']} segments; {summary['events_accepted']} events "
             f"accepted, {summary['rejected_total']} rejected ({rejected})"]
    if lat["median"] is not None:
        lines.append(f"per-step latency: median {lat['median']:.1f} us, p99 {lat['p99']:.1f} us, "
                     f"max {lat['max']:.1f} us")
    if "wall_s" in summary:
        lines.append(f"{summary['wall_s']:.2f} s wall: {summary['events_per_s']:.0f} events/s, "
                     f"{summary['steps_per_s']:.0f} steps/s")
    if summary.get("segment_accuracy") is not None:
        lines.append(f"segment accuracy {summary['segment_accuracy']:.4f} on {summary['labelled_segments']} "
                     f"labelled segments")
    if summary.get("adapt"):
        a = summary["adapt"]
        lines.append(f"adaptation: {a['updates']} updates ({a['reverted']} reverted) from {a['labelled_steps']} "
                     f"labelled steps; {summary.get('saves', 0)} saves")
    return "\n".join(lines)


class _Session:
    """Feeds items to a runner, writes results, saves, paces a replay."""

    def __init__(self, runner, writer, save_path, save_every, realtime, clock, sleep):
        self.runner, self.writer = runner, writer
        self.save_path, self.save_every = save_path, save_every
        self.realtime, self.clock, self.sleep = realtime, clock, sleep
        self.saves = 0
        self._last_save_step = 0
        self._wall0 = self._feed0 = None

    def handle(self, item) -> None:
        runner, kind = self.runner, item[0]
        if kind == "events":
            if self.realtime:
                self._paced_push(item[1], item[2])
            else:
                runner.push(item[1], item[2])
        elif kind == "label":
            runner.set_label(item[1])
        elif kind == "tick":
            if self.realtime:
                self._wait_until(item[1])
            runner.advance(item[1])
        elif kind == "end":
            runner.end_sample(item[1])
            self._wall0 = self._feed0 = None
        elif kind == "reject":
            runner.count_rejected(item[1], item[2])
        self.drain()

    def _wait_until(self, feed_time: float) -> None:
        if self._wall0 is None:
            self._wall0 = self.clock()
            self._feed0 = self.runner._origin_s if self.runner._origin_s is not None else feed_time
        delay = self._wall0 + (feed_time - self._feed0) - self.clock()
        if delay > 0:
            self.sleep(delay)

    def _paced_push(self, t, u) -> None:
        runner = self.runner
        if not t.size:
            return
        if runner._origin_s is None:           # origin "first": this chunk's first event is time 0
            runner.push(t[:1], u[:1])
            t, u = t[1:], u[1:]
            self._wait_until(runner._origin_s)
            if not t.size:
                return
        steps = runner.step_of(t)
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(steps)) + 1, [t.size]))
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            k = int(steps[a])
            while runner.open_step is not None and runner.open_step < k:     # steps end on the wall clock
                end = runner.open_step + 1
                self._wait_until(runner._origin_s + end * runner.dt_ms / 1000.0)
                runner.close_steps_before(end)
                self.drain()
            self._wait_until(float(t[b - 1]))          # a step's events go in once the last has arrived
            runner.push(t[a:b], u[a:b])
            self.drain()

    def drain(self) -> None:
        results = self.runner.poll()
        for result in results:
            self.writer.write(result)
        if results and hasattr(self.writer.out, "flush"):
            self.writer.out.flush()          # a live consumer sees each step when it is ready
        if self.save_every and self.runner._steps_run - self._last_save_step >= self.save_every:
            self.save()

    def save(self) -> None:
        if self.save_path is not None and self.runner.learner is not None:
            self.runner.save(self.save_path)
            self.saves += 1
            self._last_save_step = self.runner._steps_run


def run_stream(model, source, out, *, input_format: str = "auto", time_unit: str = "s", sample: int | None = None,
               output: str = "json", every: int = 1, top_k: int | None = None, adapt: bool = False,
               labels=None, save_path=None, save_every: int | None = None, reset_on_gap_ms: float | None = None,
               realtime: bool = False, on_backwards: str = "drop", host: str = "127.0.0.1",
               max_clients: int | None = None, accept_timeout_s: float | None = None, origin: str = "zero",
               max_jump_s: float | None = 3600.0, update_every_steps: int | None = None, threads: int = 1,
               max_line_bytes: int = 1024, max_record_events: int = 65536, log=None,
               clock=time.monotonic, sleep=time.sleep) -> dict:
    """Stream a source through a model until it ends; returns the summary (also written by ``out``).

    Parameters
    ----------
    model : model path or LoadedModel
    source : ``"-"``, ``"tcp:PORT"``, a file path, or a source object (:class:`FileSource`,
        :class:`StdinSource`, :class:`TcpSource`, :class:`Hdf5Source`)
    out : text file object for the per-step lines (JSON lines or a table)
    input_format : "auto" (HDF5 by signature, binary by its magic, else text), "text", "binary", "hdf5"
    time_unit : "s" or "ms", times of text lines and of the label file
    sample : int or None, the one HDF5 sample to replay (None: all, in order)
    output, every, top_k : see :class:`OutputWriter`
    adapt : keep learning from labels; labels : path of a label file (lines ``TIME LABEL``)
    save_path : where the adapted model is written (atomically) every ``save_every`` steps and at the end
    reset_on_gap_ms, on_backwards, origin, max_jump_s, update_every_steps, threads : see :class:`StreamRunner`
    realtime : pace a file replay at wall-clock speed
    host, max_clients, accept_timeout_s : the TCP listener (``source="tcp:PORT"``)
    max_line_bytes, max_record_events : limits of the text and binary readers
    log : callable receiving informational lines (e.g. the listening address), or None

    Returns
    -------
    dict: :meth:`StreamRunner.summary` plus ``wall_s``, ``events_per_s``, ``steps_per_s``, ``saves``,
    ``clients`` (TCP), ``error`` (why the stream stopped early, or None), ``interrupted``
    """
    log = log or (lambda line: None)
    _check_choice("time_unit", time_unit, tuple(TIME_UNITS))
    save_every = _check_int("save_every", save_every, 1, allow_none=True)
    if (save_every or save_path is not None) and not adapt:
        raise StreamOptionError("save_every" if save_every else "save", "saving needs adapt (nothing changes "
                                                                        "the model otherwise)")
    if isinstance(source, str):
        source = open_source(source, input_format=input_format, host=host, sample=sample, max_clients=max_clients,
                             accept_timeout_s=accept_timeout_s)
    if realtime and not getattr(source, "replayable", False):
        raise StreamOptionError("realtime", "realtime paces a file replay; live sources already arrive in real time")
    label_changes = _read_label_file(labels, time_unit) if labels is not None else None
    runner = StreamRunner(model, adapt=adapt, update_every_steps=update_every_steps, on_backwards=on_backwards,
                          reset_on_gap_ms=reset_on_gap_ms, max_jump_s=max_jump_s, origin=origin, threads=threads)
    if adapt and save_path is None and save_every:
        save_path = Path(runner.model.path).with_suffix(".adapted.h5")
    if adapt and save_path is None:
        log("note: the adapted model is not written (give --save PATH or --save-every N)")
    writer = OutputWriter(out, runner.class_names, output, every, top_k)
    session = _Session(runner, writer, save_path, save_every, realtime, clock, sleep)
    if isinstance(source, TcpSource):
        log(f"listening on {source.address[0]}:{source.address[1]}")
    error, interrupted = None, False
    start = time.perf_counter()
    try:
        for item in _merge_labels(_items(source, runner, input_format, time_unit, max_line_bytes,
                                         max_record_events, log), *(label_changes or ((), ()))):
            session.handle(item)
    except StreamError as err:
        error = str(err)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if isinstance(source, TcpSource):
            source.close()
    runner.finish()
    session.drain()
    writer.flush()
    if adapt and save_path is not None:
        session.save()
    wall = time.perf_counter() - start
    summary = runner.summary()
    summary.update({"wall_s": wall, "events_per_s": summary["events_accepted"] / max(wall, 1e-9),
                    "steps_per_s": summary["steps"] / max(wall, 1e-9), "saves": session.saves,
                    "save_path": None if save_path is None else str(save_path), "error": error,
                    "interrupted": interrupted})
    if isinstance(source, TcpSource):
        summary["clients"] = source.clients
    writer.summary(summary)
    return summary


def _items(source, runner, input_format, time_unit, max_line_bytes, max_record_events, log):
    if isinstance(source, Hdf5Source):
        yield from source.items(runner)
        return
    for name, chunks in source.sessions():
        if isinstance(source, TcpSource):
            log(f"client {name} connected")
        parser = _make_parser(input_format, time_unit, max_line_bytes, max_record_events)
        for data in chunks:
            yield from parser.feed(data)
        yield from parser.close()
        if isinstance(source, TcpSource):
            log(f"client {name} disconnected")
            yield ("end", "disconnect")
