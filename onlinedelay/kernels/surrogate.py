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
delays change and the per-step kernel (:func:`xi_from_taps`) does no transcendental math.
"""

import math

from numba import prange

from ._jit import jit, jit_parallel


@jit
def pseudo_derivative(v, gamma, threshold, psi):
    """psi = (gamma / theta) * max(0, 1 - |v - theta| / theta), elementwise.  v, psi : (n, B)."""
    n, n_batch = v.shape
    scale = gamma / threshold
    for j in range(n):
        for b in range(n_batch):
            h = 1.0 - abs(v[j, b] - threshold) / threshold
            psi[j, b] = scale * h if h > 0.0 else 0.0


@jit
def gaussian_taps(delay, half_width, sigma, centre, taps):
    """Tabulate the Gaussian-derivative taps of every delay (recomputed only when delays change).

    centre[p] = floor(delay[p] + 0.5);  taps[p, q] = (u / sigma^2) g_sigma(u), u = centre[p] - K + q - delay[p]
    for q = 0 .. 2K.  delay : (n_delays,) float; centre : (n_delays,) int32 out; taps : (n_delays, 2K+1) out.
    Three exponentials per delay instead of 2K + 1: from the centre tap outward, the Gaussian's ratio
    between neighbouring taps, ``g(u +- 1) / g(u) = exp(-(1/2 +- u) / sigma^2)``, changes by the factor
    ``exp(-1 / sigma^2)`` per tap (the magnitudes only decrease outward, so nothing underflows early).
    """
    inv_var = 1.0 / (sigma * sigma)
    norm = 1.0 / (math.sqrt(2.0 * math.pi) * sigma)
    step = math.exp(-inv_var)
    for p in range(delay.size):
        d = delay[p]
        c = int(math.floor(d + 0.5))
        centre[p] = c
        u = c - d
        g = math.exp(-0.5 * u * u * inv_var)
        taps[p, half_width] = u * inv_var * norm * g
        up, down = g, g
        ratio_up, ratio_down = math.exp(-(u + 0.5) * inv_var), math.exp((u - 0.5) * inv_var)
        for m in range(1, half_width + 1):
            up *= ratio_up
            down *= ratio_down
            ratio_up *= step
            ratio_down *= step
            u_up = c + m - d
            u_down = c - m - d
            taps[p, half_width + m] = u_up * inv_var * norm * up
            taps[p, half_width - m] = u_down * inv_var * norm * down


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
