"""Optimizer steps on flat parameter arrays, and delay clipping/rounding."""

import math

import numpy as np

from ._jit import jit


@jit
def sgd_step(param, grad, lr):
    """param -= lr * grad.  param, grad : (n,) float."""
    for i in range(param.size):
        param[i] -= lr * grad[i]


@jit
def adam_step(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step (bias-corrected, ``step`` >= 1).  param, grad, m, v : (n,) float.

    The arithmetic is in the parameters' float type (the bias corrections folded into the rate and
    the scale of v once per call): float32 vectors are twice as wide, and float32 division and square
    root several times cheaper than float64's (700 -> 256 input weights: 0.33 -> 0.06 ms per step).
    Our choice: moments below the float type's smallest normal number are stored as 0.  The moment
    of a weight whose gradient stays 0 decays by beta1 per step and turns subnormal after ~800 steps
    (float32); every operation on a subnormal then takes a microcode assist (700 -> 256 at batch 1, one
    sample repeated: the three calls per update 0.65 -> 0.42 ms, profiled; the rest is memory traffic).
    The update such a moment would give is below lr tiny / eps, ~1e-33 at the defaults.
    """
    s = np.empty(8, param.dtype)                  # the constants, rounded once to the float type
    s[0], s[1] = beta1, 1.0 - beta1
    s[2], s[3] = beta2, 1.0 - beta2
    s[4], s[5] = lr / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step)
    s[6], s[7] = eps, 1.1754943508222875e-38 if param.itemsize == 4 else 2.2250738585072014e-308
    b1, a1, b2, a2, rate, scale, e, tiny = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
    zero = s[7] - s[7]
    for i in range(param.size):
        g = grad[i]
        mi = b1 * m[i] + a1 * g
        vi = b2 * v[i] + a2 * g * g
        mi = zero if abs(mi) < tiny else mi          # (NaN stays NaN)
        vi = zero if vi < tiny else vi
        m[i], v[i] = mi, vi
        param[i] -= rate * mi / (np.sqrt(vi * scale) + e)


@jit
def round_delays(delay, max_delay, delay_of_syn, delay_steps):
    """Clip real delays to [0, max_delay] in place; delay_steps[s] = floor(delay[p] + 0.5).

    Returns the number of delays that had to be clipped.
    delay : (n_delays,) float; delay_of_syn : (n_syn,) int32; delay_steps : (n_syn,) int32 out.
    Branch-free and in order where each synapse has its own delay (delay_of_syn = 0, 1, 2 ...: tested
    first), so the loops vectorise (float64 floor, converted to int32: 179 k delays 0.25 -> 0.12 ms).
    """
    clipped = 0
    for p in range(delay.size):
        d = delay[p]
        low, high = d < 0.0, d > max_delay
        clipped += low | high
        delay[p] = 0.0 if low else (max_delay if high else d)
    own = 0
    if delay.size == delay_of_syn.size:
        for s in range(delay_of_syn.size):
            own += delay_of_syn[s] == s
    if own == delay_of_syn.size:
        for s in range(delay_of_syn.size):
            delay_steps[s] = np.int32(np.floor(np.float64(delay[s]) + 0.5))
    else:
        for s in range(delay_of_syn.size):
            delay_steps[s] = np.int32(np.floor(np.float64(delay[delay_of_syn[s]]) + 0.5))
    return clipped
