"""The machine's streaming bound: a numba triad ``a[i] = b[i] + s * c[i]`` (float32).

A training step that streams every per-synapse trace once per step cannot beat this rate;
``bench`` times it over arrays as large as a configuration's trace state, alternately with the
training repeats, and reports every training figure also as a ratio to it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..kernels._jit import jit


def _triad(a, b, c, scalar, passes):
    """a[i] = b[i] + s * c[i] over the whole arrays, ``passes`` times (s changes per pass)."""
    n = a.size
    for p in range(passes):
        s = np.float32(scalar + 1e-7 * p)         # varies per pass: no pass can be elided
        for i in range(n):
            a[i] = b[i] + s * c[i]
    return a[n // 2]


# the package's decorator: compiled lazily, cached on disk, nogil (threads run it side by side)
_triad_kernel = jit(_triad)


class Triad:
    """Three float32 arrays of ``n_elements`` and the triad ``a = b + s c`` over them.

    The arrays are cut from one buffer at offsets that differ modulo 4 KiB, so the measured bound
    does not suffer the 4 KiB cache-aliasing stall.  With ``threads > 1`` the arrays are split
    into contiguous chunks, one per Python thread running the (GIL-free) numba kernel: the bound
    is the machine's streaming rate, independent of numba's threading layer.

    Parameters
    ----------
    n_elements : int, length of each array
    threads : int
    min_elements_per_timing : int, each timing streams at least this many elements (several passes
        over small arrays)
    """

    def __init__(self, n_elements: int, threads: int, min_elements_per_timing: int):
        n = max(1, int(n_elements))
        stride = -(-n // 1024) * 1024 + 272           # floats: multiple of 4 KiB + 1088 bytes
        self.buffer = np.empty(3 * stride, np.float32)
        self.a, self.b, self.c = (self.buffer[k * stride:k * stride + n] for k in range(3))
        self.b[:] = 1.0
        self.c[:] = 0.5
        self.a[:] = 0.0
        self.n_elements = n
        self.threads = max(1, min(int(threads), n))
        self.passes = max(1, -(-int(min_elements_per_timing) // n))
        bounds = [k * n // self.threads for k in range(self.threads + 1)]
        self._chunks = [(self.a[lo:hi], self.b[lo:hi], self.c[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _chunk(self, arrays) -> None:
        _triad_kernel(*arrays, 0.5, self.passes)

    def run(self) -> None:
        """One timing's worth of passes (all threads)."""
        if self._pool is None:
            self._chunk(self._chunks[0])
        else:
            list(self._pool.map(self._chunk, self._chunks))

    def ns_per_element(self) -> float:
        """Time one :meth:`run`; nanoseconds (wall clock) per array element per pass."""
        start = time.perf_counter_ns()
        self.run()
        return (time.perf_counter_ns() - start) / (self.passes * self.n_elements)

    def close(self) -> None:
        """Stop the worker threads and drop the arrays."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._chunks = []
        self.buffer = self.a = self.b = self.c = None
