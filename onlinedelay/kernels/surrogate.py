"""Surrogates used only for learning: the spike pseudo-derivative and the Gaussian delay derivative.

psi^t = (gamma / theta) max(0, 1 - |v^t - theta| / theta)            (piecewise linear)

Gaussian relaxation of a delayed train (spec section 5): the train delayed by a real ``D`` is
replaced by ``G(D)^tau = sum_m x^(tau - m) g(m - D)``, ``g(u) = exp(-u^2/2s^2) / (sqrt(2 pi) s)``,
and its derivative is

    xi^tau(D) = dG/dD = sum_m x^(tau - m) (u / s^2) g(u),    u = m - D.

Our choice of window: the taps are ``m = c - K .. c + K`` around the integer delay
``c = floor(D + 0.5)`` that the forward pass uses, so every delay has exactly ``2K + 1`` taps
(branch-free, the same work for every synapse) and ``|u| <= K + 1/2``.  Taps that would read
beyond the last written step (``tau - m > t_last``) count as zero: this is the end-of-sample flush.
The taps depend only on the delays, so they are tabulated (:func:`gaussian_taps`) whenever the
delays change and the per-step kernel (:func:`xi_from_taps`) does no transcendental math; the
per-spike gradients of a one-chunk sample compute them a block at a time where they are used
(:func:`tap_factors`, kernels/spike_delays.py), without a table.  The exponentials are plain
arithmetic (:func:`exp`) so that the loops over a block vectorise; float32 gradients take float32
taps (:func:`exp_float32`, :func:`tap_factors_float32`: eight lanes, a shorter series), whose error
is a few float32 ulps, below what the float32 sums round away.
"""

import math
from functools import partial

import numpy as np
from numba import prange, types
from numba.extending import intrinsic, overload

from ._jit import jit, jit_parallel


@jit
def pseudo_derivative(v, gamma, threshold, psi):
    """psi = (gamma / theta) * max(0, 1 - |v - theta| / theta), elementwise.  v, psi : (n, B)."""
    pseudo_derivative_columns(v, gamma, threshold, psi, 0, v.shape[1])


@jit
def pseudo_derivative_columns(v, gamma, threshold, psi, b0, b1):
    """:func:`pseudo_derivative` on the batch columns b0 .. b1 - 1 only (the others untouched)."""
    scale = gamma / threshold
    for j in range(v.shape[0]):
        for b in range(b0, b1):
            psi[j, b] = pseudo_derivative_value(v[j, b], scale, threshold)


@partial(jit, inline=True)
def pseudo_derivative_value(v, scale, threshold):
    """psi of one membrane potential ``v``, ``scale`` = gamma / theta (:func:`pseudo_derivative`)."""
    h = 1.0 - abs(v - threshold) / threshold
    return scale * h if h > 0.0 else 0.0


def _bitcast_intrinsic(source, target):
    """An intrinsic reinterpreting the 64 bits of a ``source`` scalar as a ``target`` scalar (vectorises)."""
    @intrinsic
    def bitcast(typingctx, x):
        if x != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return bitcast


_float_bits = _bitcast_intrinsic(types.float64, types.int64)
_bits_float = _bitcast_intrinsic(types.int64, types.float64)
_LOG2E, _LN2_HI, _LN2_LO = 1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10
_ROUND = 6755399441055744.0             # 1.5 * 2^52: x + _ROUND rounds x to an integer held in the low bits
_EXP_TERMS = tuple(1.0 / math.factorial(i) for i in range(13, -1, -1))   # Taylor series of exp, Horner order


def _exp(x):
    """exp(x) for a float64 x in [-708, 709] (clamped), to about one ulp, in plain arithmetic so that
    loops calling it vectorise (numba's math.exp is a scalar libm call; no vector math library here).

    x = n ln2 + r (n = round(x / ln2) in the low bits of ``x / ln2 + 1.5 2^52``, Cody-Waite split of
    ln2), exp(r) by its Taylor series to r^13 (|r| <= ln2 / 2: truncation < 1e-17), 2^n by its bits.
    """
    x = min(max(x, -708.0), 709.0)
    t = x * _LOG2E + _ROUND
    n = t - _ROUND
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 0.0
    for c in _EXP_TERMS:
        p = p * r + c
    return p * _bits_float((_float_bits(t) + 1023) << 52)


exp = jit(_exp, contract=True)
exp_inline = jit(_exp, contract=True, inline=True)     # for loops that vectorise


def _tap_factors(delay, inv_var, step):
    """(u, g, ratio_up, ratio_down) of one delay: u = floor(delay + 1/2) - delay (|u| <= 1/2), the centre
    tap's Gaussian g = exp(-u^2 / 2 sigma^2) and the ratios g(u +- 1) / g(u) = exp(-(1/2 +- u) / sigma^2)
    (inv_var = 1 / sigma^2, step = exp(-1 / sigma^2); the normalisation is left to the caller).  The
    ratios' product is ``step``: two exponentials and a division (cheaper than a third exponential)."""
    d = np.float64(delay)
    u = math.floor(d + 0.5) - d
    ratio_up = exp(-(u + 0.5) * inv_var)
    return u, exp(-0.5 * u * u * inv_var), ratio_up, step / ratio_up


tap_factors = jit(_tap_factors, inline=True)


_F32 = np.float32
_float32_bits = _bitcast_intrinsic(types.float32, types.int32)
_bits_float32 = _bitcast_intrinsic(types.int32, types.float32)
_LOG2E_F32, _LN2_HI_F32, _LN2_LO_F32 = _F32(_LOG2E), _F32(0.693145751953125), _F32(1.4286068203094172e-06)
_ROUND_F32 = _F32(12582912.0)           # 1.5 * 2^23
_EXP_TERMS_F32 = tuple(_F32(1.0 / math.factorial(i)) for i in range(7, -1, -1))


def _exp_float32(x):
    """:func:`exp` for a float32 x in [-87, 88] (clamped), in float32 arithmetic (eight lanes, not four):
    the Taylor series to r^7 (truncation < 1e-8 relative, under float32's half ulp), 2^n by its bits."""
    x = min(max(x, _F32(-87.0)), _F32(88.0))
    t = x * _LOG2E_F32 + _ROUND_F32
    n = t - _ROUND_F32
    r = (x - n * _LN2_HI_F32) - n * _LN2_LO_F32
    p = _F32(0.0)
    for c in _EXP_TERMS_F32:
        p = p * r + c
    return p * _bits_float32(np.int32((_float32_bits(t) - 0x4B400000 + 127) << 23))


exp_float32 = jit(_exp_float32, contract=True, inline=True)


def _tap_factors_float32(delay, inv_var, step):
    """:func:`tap_factors` of a float32 delay in float32 (inv_var, step: float32): for float32 gradients,
    whose sums round every term to float32 anyway (a few float32 ulps apart from the float64 taps)."""
    d = np.float32(delay)
    u = np.floor(d + _F32(0.5)) - d
    ratio_up = exp_float32(-(u + _F32(0.5)) * inv_var)
    return u, exp_float32(_F32(-0.5) * u * u * inv_var), ratio_up, step / ratio_up


tap_factors_float32 = jit(_tap_factors_float32, inline=True)


def is_float32(a) -> bool:
    """Whether array ``a`` holds float32 (a constant where numba compiles it, so a branch on it is resolved
    when the kernel is compiled for the array type)."""
    return a.dtype == np.float32


@overload(is_float32, jit_options={"cache": True})
def _is_float32(a):
    value = isinstance(a, types.Array) and a.dtype == types.float32
    return lambda a: value


TAP_BLOCK = 256     # delays whose taps are computed in one vectorised pass (scratch: (5 + 2K + 1) x TAP_BLOCK)


@jit
def tap_block(delay, half_width, sigma, taps_t, work):
    """The Gaussian-derivative taps of a block of delays, transposed: taps_t[q, e] = taps[e, q] of
    :func:`gaussian_taps`.

    delay : (n,) float; taps_t : (2K+1, >= n) float64 out; work : (5, >= n) float64 scratch.
    Two exponentials and a division per delay (:func:`tap_factors`), then from the centre tap outward:
    the Gaussian's ratio between neighbouring taps, ``g(u +- 1) / g(u) = exp(-(1/2 +- u) / sigma^2)``,
    changes by the factor ``exp(-1 / sigma^2)`` per tap (the magnitudes only decrease outward, so nothing underflows
    early).  Every loop runs over the block, so it vectorises.
    """
    inv_var = 1.0 / (sigma * sigma)
    scale = inv_var / (math.sqrt(2.0 * math.pi) * sigma)
    step = math.exp(-inv_var)
    n = delay.size
    u, up, down, ratio_up, ratio_down = work[0], work[1], work[2], work[3], work[4]
    centre_tap = taps_t[half_width]
    for e in range(n):
        v, g, ratio_up[e], ratio_down[e] = tap_factors(delay[e], inv_var, step)
        u[e], up[e], down[e] = v, g, g
        centre_tap[e] = v * scale * g
    for m in range(1, half_width + 1):
        after, before = taps_t[half_width + m], taps_t[half_width - m]
        for e in range(n):
            up[e] *= ratio_up[e]
            down[e] *= ratio_down[e]
            ratio_up[e] *= step
            ratio_down[e] *= step
            after[e] = (u[e] + m) * scale * up[e]
            before[e] = (u[e] - m) * scale * down[e]


@jit
def gaussian_taps(delay, half_width, sigma, centre, taps):
    """Tabulate the Gaussian-derivative taps of every delay (recomputed only when delays change).

    centre[p] = floor(delay[p] + 0.5);  taps[p, q] = (u / sigma^2) g_sigma(u), u = centre[p] - K + q - delay[p]
    for q = 0 .. 2K.  delay : (n_delays,) float; centre : (n_delays,) int32 out; taps : (n_delays, 2K+1) out.
    Blocks of :data:`TAP_BLOCK` delays (:func:`tap_block`).
    """
    n_taps = taps.shape[1]
    taps_t, work = np.empty((n_taps, TAP_BLOCK)), np.empty((5, TAP_BLOCK))
    for p0 in range(0, delay.size, TAP_BLOCK):
        n = min(delay.size - p0, TAP_BLOCK)
        tap_block(delay[p0:p0 + n], n_taps // 2, sigma, taps_t, work)
        for e in range(n):
            centre[p0 + e] = int(math.floor(delay[p0 + e] + 0.5))
            for q in range(n_taps):
                taps[p0 + e, q] = taps_t[q, e]


def _xi_from_taps(hist, tau, t_last, pre_of_delay, centre, taps, xi):
    """Gaussian derivative of each delayed presynaptic train at the lagged step ``tau``.

    xi[p, b] = sum_q hist_x[tau - m_q, pre_of_delay[p], b] * taps[p, q],  m_q = centre[p] - K + q;
    steps after ``t_last`` count as zero (the end-of-sample flush).

    Parameters
    ----------
    hist : (n_slots, n_pre, B) float ring; needs n_slots > max delay + 2K when tau = t_last - K
    tau, t_last : int, absolute steps
    pre_of_delay : (n_delays,) int32, presynaptic unit of each delay parameter
    centre, taps : from :func:`gaussian_taps`
    xi : (n_delays, B) float, out
    """
    n_slots, _, n_batch = hist.shape
    n_taps = taps.shape[1]
    half_width = (n_taps - 1) // 2
    tau_slot = tau % n_slots
    for p in prange(centre.size):
        i = pre_of_delay[p]
        offset = half_width - centre[p]             # tap q = 0 reads step tau + offset
        q_first = max(0, tau + offset - t_last)     # taps reading beyond t_last count as zero
        slot = (tau_slot + offset - q_first) % n_slots
        for b in range(n_batch):
            xi[p, b] = 0.0
        for q in range(q_first, n_taps):
            tap = taps[p, q]
            for b in range(n_batch):
                xi[p, b] += hist[slot, i, b] * tap
            slot = slot - 1 if slot > 0 else n_slots - 1


xi_from_taps = jit(_xi_from_taps)
xi_from_taps_parallel = jit_parallel(_xi_from_taps)
