"""Optimizer steps on flat parameter arrays, and delay clipping/rounding."""

import math

from ._jit import jit


@jit
def sgd_step(param, grad, lr):
    """param -= lr * grad.  param, grad : (n,) float."""
    for i in range(param.size):
        param[i] -= lr * grad[i]


@jit
def adam_step(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step (bias-corrected, ``step`` >= 1).  param, grad, m, v : (n,) float."""
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    for i in range(param.size):
        g = grad[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        param[i] -= lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)


@jit
def round_delays(delay, max_delay, delay_of_syn, delay_steps):
    """Clip real delays to [0, max_delay] in place; delay_steps[s] = floor(delay[p] + 0.5).

    Returns the number of delays that had to be clipped.
    delay : (n_delays,) float; delay_of_syn : (n_syn,) int32; delay_steps : (n_syn,) int32 out.
    """
    clipped = 0
    for p in range(delay.size):
        d = delay[p]
        if d < 0.0:
            delay[p] = 0.0
            clipped += 1
        elif d > max_delay:
            delay[p] = max_delay
            clipped += 1
    for s in range(delay_of_syn.size):
        delay_steps[s] = int(math.floor(delay[delay_of_syn[s]] + 0.5))
    return clipped
