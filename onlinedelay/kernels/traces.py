"""Eligibility traces of one projection onto the hidden layer and their gradient accumulation.

Weights (at step t, psi, L and a of step t)::

    eps_w  = a eps_w + zeta x^(t - d)
    ebar_w = kappa ebar_w + zeta_o psi eps_w;      g_w[s] += sum_b L ebar_w

Delays (at the lagged step tau = t - K, psi, L and a of step tau)::

    eps_d  = a eps_d + zeta w xi(D)
    ebar_d = kappa ebar_d + zeta_o psi eps_d;      g_d[s] += sum_b L ebar_d

``a`` is the decay the membrane actually applied (alpha, or alpha (1 - z^(t-1)) with hard reset).
Delay gradients are accumulated per synapse; with axonal delays (all synapses leaving unit i
share ``D_i``) the caller sums them by presynaptic unit.  Accumulating per synapse keeps every
write inside the row being processed, so rows can run on separate threads.
Per-neuron arrays are (n_post, B), per-synapse traces (n_syn, B): the batch is innermost.

These per-step kernels serve the hard reset.  With the soft reset (``a = alpha`` for every neuron
and step) the traces factorise through the presynaptic filtered trace and are summed per chunk of
steps instead (kernels/chunk.py).
"""

from numba import prange

from ._jit import jit, jit_parallel
from .ring import ring_slot


@jit
def learning_signal(delta, feedback, signal):
    """signal[j, b] = sum_k feedback[k, j] * delta[k, b].  delta (n_out, B), feedback (n_out, n)."""
    n_out, n_batch = delta.shape
    n = feedback.shape[1]
    for j in range(n):
        for b in range(n_batch):
            signal[j, b] = 0.0
    for k in range(n_out):
        for j in range(n):
            f = feedback[k, j]
            for b in range(n_batch):
                signal[j, b] += f * delta[k, b]


def _weight_traces(hist, t, indptr, pre, delay_steps, psi, signal, decay_eff,
                   gain, decay_out, gain_out, eps_w, ebar_w, grad_w):
    """Update weight eligibility traces at step ``t`` and accumulate ``grad_w``.

    hist : (n_slots, n_pre, B) ring; indptr, pre, delay_steps : CSR synapses (int32)
    psi, signal, decay_eff : (n_post, B) of step t
    gain : zeta; decay_out : kappa; gain_out : zeta_o
    eps_w, ebar_w : (n_syn, B) in place; grad_w : (n_syn,) accumulated (summed over b)
    """
    n_slots, _, n_batch = hist.shape
    n_post = indptr.size - 1
    now = t % n_slots
    for j in prange(n_post):
        for s in range(indptr[j], indptr[j + 1]):
            slot = ring_slot(now, delay_steps[s], n_slots)
            i = pre[s]
            acc = 0.0
            for b in range(n_batch):
                e = decay_eff[j, b] * eps_w[s, b] + gain * hist[slot, i, b]
                eps_w[s, b] = e
                eb = decay_out * ebar_w[s, b] + gain_out * psi[j, b] * e
                ebar_w[s, b] = eb
                acc += signal[j, b] * eb
            grad_w[s] += acc


def _delay_traces(xi, indptr, delay_of_syn, weight, psi, signal, decay_eff,
                  gain, decay_out, gain_out, eps_d, ebar_d, grad_d):
    """Update delay eligibility traces at the lagged step and accumulate ``grad_d`` per synapse.

    xi : (n_delays, B) Gaussian derivative at tau; delay_of_syn : (n_syn,) int32
    weight : (n_syn,); psi, signal, decay_eff : (n_post, B) of step tau
    eps_d, ebar_d : (n_syn, B) in place; grad_d : (n_syn,) accumulated (summed over b)
    """
    n_batch = xi.shape[1]
    n_post = indptr.size - 1
    for j in prange(n_post):
        for s in range(indptr[j], indptr[j + 1]):
            p = delay_of_syn[s]
            wg = gain * weight[s]
            acc = 0.0
            for b in range(n_batch):
                e = decay_eff[j, b] * eps_d[s, b] + wg * xi[p, b]
                eps_d[s, b] = e
                eb = decay_out * ebar_d[s, b] + gain_out * psi[j, b] * e
                ebar_d[s, b] = eb
                acc += signal[j, b] * eb
            grad_d[s] += acc


def _synaptic_delay_traces(hist, tau, t_last, indptr, pre, centre, taps, weight, psi, signal, decay_eff,
                           gain, decay_out, gain_out, eps_d, ebar_d, grad_d):
    """Delay traces of per-synapse delays at the lagged step ``tau``, Gaussian derivative inline.

    Same update as :func:`delay_traces` with ``xi[s, b]`` summed from the ring on the fly
    (``xi = sum_q taps[s, q] x^(tau - m_q)``, ``m_q = centre[s] - K + q``; steps after ``t_last`` are
    0), so no per-synapse xi array is written and read back.

    hist : (n_slots, n_pre, B) ring; tau, t_last : int absolute steps
    indptr, pre : CSR synapses; centre : (n_syn,) int32; taps : (n_syn, 2K+1) from gaussian_taps
    weight : (n_syn,); psi, signal, decay_eff : (n_post, B) of step tau
    eps_d, ebar_d : (n_syn, B) in place; grad_d : (n_syn,) accumulated (summed over b)
    """
    n_slots, _, n_batch = hist.shape
    n_taps = taps.shape[1]
    half_width = (n_taps - 1) // 2
    n_post = indptr.size - 1
    tau_slot = tau % n_slots
    ahead = t_last - tau                            # steps readable after tau
    for j in prange(n_post):
        for s in range(indptr[j], indptr[j + 1]):
            i = pre[s]
            offset = half_width - centre[s]         # tap q = 0 reads step tau + offset
            q_first = max(0, offset - ahead)
            slot = tau_slot + offset - q_first
            if slot >= n_slots:
                slot -= n_slots
            elif slot < 0:
                slot += n_slots
            for b in range(n_batch):
                eps_d[s, b] *= decay_eff[j, b]
            wg = gain * weight[s]
            for q in range(q_first, n_taps):
                c = wg * taps[s, q]
                for b in range(n_batch):
                    eps_d[s, b] += c * hist[slot, i, b]
                slot = slot - 1 if slot > 0 else n_slots - 1
            acc = 0.0
            for b in range(n_batch):
                eb = decay_out * ebar_d[s, b] + gain_out * psi[j, b] * eps_d[s, b]
                ebar_d[s, b] = eb
                acc += signal[j, b] * eb
            grad_d[s] += acc


weight_traces = jit(_weight_traces)
weight_traces_parallel = jit_parallel(_weight_traces)
delay_traces = jit(_delay_traces)
delay_traces_parallel = jit_parallel(_delay_traces)
synaptic_delay_traces = jit(_synaptic_delay_traces)
synaptic_delay_traces_parallel = jit_parallel(_synaptic_delay_traces)
