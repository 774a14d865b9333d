"""The one numba decorator every kernel uses.

Kernels are compiled lazily on first call (never at import) and cached on disk unless
``ONLINEDELAY_NUMBA_CACHE=0``.  fastmath stays off: thresholds and NaN checks need IEEE
behaviour.  ``error_model="numpy"`` makes a division by zero give inf/nan instead of raising.
"""

import os

from numba import njit

CACHE = os.environ.get("ONLINEDELAY_NUMBA_CACHE", "1") != "0"


def jit(function):
    """Compile ``function`` lazily with the project's numba settings."""
    return njit(cache=CACHE, error_model="numpy", nogil=True)(function)
