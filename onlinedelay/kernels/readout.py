"""Leaky-integrator readout, per-step cross-entropy error, and the exact readout gradients.

y_k^t = kappa y_k^(t-1) + zeta_o sum_j Wo_kj z_j^t + b_k
delta_k^t = w^t (softmax(y^t)_k - onehot_k)                 (w^t: loss weight of the step)
zbar^t = kappa zbar^(t-1) + zeta_o z^t;   g_Wo += delta^t zbar^t
bbar^t = kappa bbar^(t-1) + 1;            g_b  += delta^t bbar^t
"""

import math

from ._jit import jit


@jit
def readout_step(z, w_out, bias, decay, gain, y):
    """y[b] = decay * y[b] + gain * w_out @ z[b] + bias, event-driven over spiking z.

    z : (B, n_hidden) float; w_out : (n_out, n_hidden); bias : (n_out,); y : (B, n_out) in place.
    """
    n_batch, n_hidden = z.shape
    n_out = w_out.shape[0]
    for b in range(n_batch):
        for k in range(n_out):
            y[b, k] = decay * y[b, k] + bias[k]
        for j in range(n_hidden):
            zj = z[b, j]
            if zj != 0.0:
                for k in range(n_out):
                    y[b, k] += gain * w_out[k, j] * zj


@jit
def readout_error(y, labels, loss_weight, probs, delta):
    """Softmax probabilities and the weighted error; returns the weighted cross-entropy sum.

    y : (B, n_out); labels : (B,) int64, a label < 0 means no target (delta = 0)
    loss_weight : float, w^t; probs, delta : (B, n_out) out
    """
    n_batch, n_out = y.shape
    loss = 0.0
    for b in range(n_batch):
        top = y[b, 0]
        for k in range(1, n_out):
            if y[b, k] > top:
                top = y[b, k]
        total = 0.0
        for k in range(n_out):
            e = math.exp(y[b, k] - top)
            probs[b, k] = e
            total += e
        for k in range(n_out):
            probs[b, k] /= total
        label = labels[b]
        for k in range(n_out):
            target = 1.0 if k == label else 0.0
            delta[b, k] = loss_weight * (probs[b, k] - target) if label >= 0 else 0.0
        if label >= 0:
            loss -= loss_weight * (y[b, label] - top - math.log(total))
    return loss


@jit
def readout_traces(z, delta, decay, gain, zbar, bbar, grad_w_out, grad_bias):
    """Filtered presynaptic traces of the readout and its gradient accumulation.

    z : (B, n_hidden); delta : (B, n_out); zbar : (B, n_hidden) and bbar : (B,) in place;
    grad_w_out : (n_out, n_hidden) and grad_bias : (n_out,) accumulated (summed over b).
    """
    n_batch, n_hidden = z.shape
    n_out = delta.shape[1]
    for b in range(n_batch):
        bbar[b] = decay * bbar[b] + 1.0
        for j in range(n_hidden):
            zbar[b, j] = decay * zbar[b, j] + gain * z[b, j]
        for k in range(n_out):
            d = delta[b, k]
            if d != 0.0:
                grad_bias[k] += d * bbar[b]
                for j in range(n_hidden):
                    grad_w_out[k, j] += d * zbar[b, j]
