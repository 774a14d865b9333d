"""What a stream produces: a result per step, one per closed segment, and a latency histogram."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["StepResult", "SegmentResult", "LatencyHistogram", "softmax"]


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
    reason : str, "end" (end of sample), "gap" (silence), "disconnect", "timeout" (an idle TCP client), "eof"
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


class LatencyHistogram:
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
        other = LatencyHistogram()
        other.counts[:] = self.counts
        other.n, other.max_ns = self.n, self.max_ns
        return other
