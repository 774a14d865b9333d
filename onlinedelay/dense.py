"""Weight traces of a dense projection without per-synapse delays, a chunk at a time, by BLAS.

When every hidden neuron sees every presynaptic unit and the delay depends on the presynaptic
unit only (no delays, or axonal delays), the chunk sums of kernels/chunk.py become matrix
products over (step, batch).  With ``Xs[i, u, b]`` the filtered trace of unit ``i`` at step
``first + u`` delayed by its unit's delay and the per-neuron factors P, Q, A of the chunk::

    grad[j, i] += sum_b A[j, b] E[b, j, i] + sum_{u, b} P[j, u, b] Xs[i, u, b]      (one GEMM)
    E[b]       <- kappa^n E[b] + Q[:, :, b] Xs[:, :, b]^T                          (one GEMM per b)

The traces ``E`` are stored batch-outermost, (B, n_post, n_pre), so each update is one GEMM
writing in place (beta = kappa^n).  BLAS runs on one thread (threadpoolctl): OpenBLAS's own
threads spin between calls and fight numba's workers (docs/benchmarks.md, tuning constants).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from scipy.linalg import blas

from .kernels import chunk as KC
from .kernels._jit import build

_BLAS_LIBRARIES = None


@contextmanager
def blas_threads(threads: int):
    """Context manager limiting the BLAS libraries to ``threads`` threads (restored on exit).

    Through threadpoolctl's library controllers directly: its ``limit`` queries every library's
    full info on entry and exit (25 against 13 us per use here); a nested use, finding the limit
    already set, only reads the thread counts."""
    global _BLAS_LIBRARIES
    if _BLAS_LIBRARIES is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_LIBRARIES = tuple(lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas")
    before = [lib.get_num_threads() for lib in _BLAS_LIBRARIES]
    changed = [lib for lib, n in zip(_BLAS_LIBRARIES, before) if n != threads]
    for lib in changed:
        lib.set_num_threads(threads)
    try:
        yield
    finally:
        for lib, n in zip(_BLAS_LIBRARIES, before):
            if n != threads:
                lib.set_num_threads(n)


def is_dense(proj, n_pre: int) -> bool:
    """True when row j of the CSR projection holds every presynaptic unit in order (s = j n_pre + i)."""
    n_post = proj.indptr.size - 1
    return (n_pre > 0 and proj.pre.size == n_post * n_pre
            and np.array_equal(proj.pre, np.tile(np.arange(n_pre, dtype=proj.pre.dtype), n_post)))


def dense_weight_chunk(xh, first_step: int, n: int, shift, P, Q, A, decay_n: float, ebar, grad, windows,
                       parallel: bool, keep: bool = True) -> None:
    """Weight traces and gradient of a dense projection over ``n`` steps from ``first_step``.

    xh : (n_pre, 2H, B) mirrored filtered-trace ring; shift : (n_pre,) int32 delay of each unit's
    synapses (zeros without delays); P, Q : (n_post, >= n, B); A : (n_post, B); decay_n : kappa^n;
    ebar : (B, n_post, n_pre) in place; grad : (n_post * n_pre,) accumulated;
    windows : flat scratch of at least n_pre * n * B elements; parallel : use the parallel builds;
    keep : False for the last chunk of a sample (the traces are not updated: no per-b products).
    """
    n_pre, _, n_batch = xh.shape
    n_post = P.shape[0]
    xs = windows[:n_pre * n * n_batch].reshape(n_pre, n, n_batch)
    build(KC, "unit_windows", parallel)(xh, first_step, n, shift, xs)
    grad2 = grad.reshape(n_post, n_pre)
    build(KC, "dense_trace_gradient", parallel)(ebar, A, grad2)          # uses E before its update
    gemm = blas.sgemm if ebar.dtype == np.float32 else blas.dgemm
    p = np.ascontiguousarray(P[:, :n, :]).reshape(n_post, n * n_batch)
    grad2 += p @ xs.reshape(n_pre, n * n_batch).T
    for b in range(n_batch if keep else 0):
        # E[b]^T (n_pre, n_post) is a Fortran-ordered view of the C-ordered E[b]: updated in place
        out = gemm(1.0, xs[:, :, b], Q[:, :n, b], beta=decay_n, c=ebar[b].T, trans_b=True, overwrite_c=True)
        if not np.shares_memory(out, ebar):
            ebar[b] = out.T
