"""Eligibility traces of one projection onto the hidden layer and their gradient accumulation.

Weights (at step t, psi, L and a of step t)::

    eps_w  = a eps_w + zeta x^(t - d)
    ebar_w = kappa ebar_w + zeta_o psi eps_w;      g_w += L ebar_w

Delays (at the lagged step tau = t - K, psi, L and a of step tau)::

    eps_d  = a eps_d + zeta w xi(D)
    ebar_d = kappa ebar_d + zeta_o psi eps_d;      g_D[delay_of_syn[s]] += L ebar_d

``a`` is the decay the membrane actually applied (alpha, or alpha (1 - z^(t-1)) with hard reset);
with synaptic delays every synapse owns its delay, with axonal delays all synapses leaving
presynaptic unit i share ``D_i`` and their contributions add up in ``g_D[i]``.
"""

from ._jit import jit
from .ring import ring_slot


@jit
def learning_signal(delta, feedback, signal):
    """signal[b, j] = sum_k feedback[k, j] * delta[b, k].  delta (B, n_out), feedback (n_out, n)."""
    n_batch, n_out = delta.shape
    n = feedback.shape[1]
    for b in range(n_batch):
        for j in range(n):
            signal[b, j] = 0.0
        for k in range(n_out):
            d = delta[b, k]
            if d != 0.0:
                for j in range(n):
                    signal[b, j] += feedback[k, j] * d


@jit
def weight_traces(hist, t, indptr, pre, delay_steps, psi, signal, decay_eff,
                  gain, decay_out, gain_out, eps_w, ebar_w, grad_w):
    """Update weight eligibility traces at step ``t`` and accumulate ``grad_w``.

    hist : (B, n_slots, n_pre) ring; indptr, pre, delay_steps : CSR synapses (int32)
    psi, signal, decay_eff : (B, n_post) of step t
    gain : zeta; decay_out : kappa; gain_out : zeta_o
    eps_w, ebar_w : (B, n_syn) in place; grad_w : (n_syn,) accumulated (summed over b)
    """
    n_batch, n_slots, _ = hist.shape
    n_post = indptr.size - 1
    now = t % n_slots
    for b in range(n_batch):
        for j in range(n_post):
            a = decay_eff[b, j]
            post = gain_out * psi[b, j]
            learn = signal[b, j]
            for s in range(indptr[j], indptr[j + 1]):
                e = a * eps_w[b, s] + gain * hist[b, ring_slot(now, delay_steps[s], n_slots), pre[s]]
                eps_w[b, s] = e
                eb = decay_out * ebar_w[b, s] + post * e
                ebar_w[b, s] = eb
                grad_w[s] += learn * eb


@jit
def delay_traces(xi, indptr, delay_of_syn, weight, psi, signal, decay_eff,
                 gain, decay_out, gain_out, eps_d, ebar_d, grad_d):
    """Update delay eligibility traces at the lagged step and accumulate ``grad_d``.

    xi : (B, n_delays) Gaussian derivative at tau; delay_of_syn : (n_syn,) int32
    weight : (n_syn,); psi, signal, decay_eff : (B, n_post) of step tau
    eps_d, ebar_d : (B, n_syn) in place; grad_d : (n_delays,) accumulated
    """
    n_batch = xi.shape[0]
    n_post = indptr.size - 1
    for b in range(n_batch):
        for j in range(n_post):
            a = decay_eff[b, j]
            post = gain_out * psi[b, j]
            learn = signal[b, j]
            for s in range(indptr[j], indptr[j + 1]):
                p = delay_of_syn[s]
                e = a * eps_d[b, s] + gain * weight[s] * xi[b, p]
                eps_d[b, s] = e
                eb = decay_out * ebar_d[b, s] + post * e
                ebar_d[b, s] = eb
                grad_d[p] += learn * eb
