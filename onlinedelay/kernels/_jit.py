"""The numba decorators every kernel uses.

Kernels are compiled lazily on first call (never at import) and cached on disk unless
``ONLINEDELAY_NUMBA_CACHE=0``.  fastmath stays off: thresholds and NaN checks need IEEE
behaviour; kernels that only multiply and add may allow ``contract=True`` (fused multiply-add,
one rounding instead of two).  ``error_model="numpy"`` makes a division by zero give inf/nan instead of raising.
Kernels whose outer loop is a ``prange`` over rows also get a parallel build (each thread owns
the rows it writes); serial builds treat ``prange`` as ``range``.
"""

import os
import types

import numba
from numba import njit

CACHE = os.environ.get("ONLINEDELAY_NUMBA_CACHE", "1") != "0"


def configure_threading() -> None:
    """Prefer numba's OpenMP threading layer with passive waiting (unless NUMBA_THREADING_LAYER says
    otherwise).  Called by the entry points that run parallel kernels (the command line,
    ``Network.set_threads`` with threads > 1) before the first parallel launch; importing the
    package changes no global setting.  Why OpenMP, passive: docs/benchmarks.md (its launches cost
    less than the workqueue layer's, and passive threads do not fight other work for the cores).
    """
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build(module, name: str, parallel: bool):
    """The serial build of kernel ``name`` in ``module``, or its parallel build (``name + "_parallel"``)."""
    return getattr(module, name + "_parallel" if parallel else name)


def _fastmath(contract: bool):
    return {"contract"} if contract else False


def jit(function, contract: bool = False, inline: bool = False):
    """Compile ``function`` lazily with the project's numba settings (serial).  ``inline``: a helper
    that numba inlines into its callers, so that constant arguments at a call site specialise it
    (LLVM does not inline across numba functions reliably)."""
    return njit(cache=CACHE, error_model="numpy", nogil=True, fastmath=_fastmath(contract),
                inline="always" if inline else "never")(function)


def jit_parallel(function, contract: bool = False):
    """The same kernel built with ``parallel=True`` (its ``prange`` loops spread over threads).

    numba's disk cache names entries after the function and does not include ``parallel`` in the
    key (numba issue #6845), so the serial and parallel builds of one function would load each
    other's machine code.  The parallel build therefore compiles a renamed clone of the function.
    """
    name = function.__name__ + "_parallel"
    clone = types.FunctionType(function.__code__.replace(co_name=name), function.__globals__, name,
                               function.__defaults__, function.__closure__)
    clone.__qualname__ = function.__qualname__ + "_parallel"
    clone.__module__ = function.__module__
    clone.__doc__ = function.__doc__
    return njit(cache=CACHE, error_model="numpy", nogil=True, parallel=True, fastmath=_fastmath(contract))(clone)
