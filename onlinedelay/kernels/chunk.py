"""Soft-reset eligibility traces of a whole chunk of steps in one pass over the synapses.

With the soft reset the membrane decay is the constant ``alpha``, so a synapse's traces factorise
through the presynaptic filtered trace ``X^u = alpha X^(u-1) + x^u`` (see traces.py)::

    ebar_w^t = kappa ebar_w^(t-1) + c psi^t V_w^t,         V_w^t = X^(t - d)
    ebar_d^t = kappa ebar_d^(t-1) + c w psi^t V_d^t,       V_d^t = sum_q taps_q X^(t - m_q) - edge
    g += sum_b L^t ebar^t                                  (c = zeta_o zeta)

Over ``n`` consecutive steps ``a .. a+n-1`` these recursions sum in closed form.  With the
per-neuron factors (:func:`chunk_factors`)::

    Lam^u = L^u + kappa Lam^(u+1)                      (backward over the chunk, Lam^(a+n) = 0)
    P^u = c psi^u Lam^u,   Q^u = c psi^u kappa^(a+n-1-u),   A = kappa Lam^a

each synapse and batch element needs two dot products over the chunk::

    g     += E A + sum_u P^u V^u
    E     <- kappa^n E + sum_u Q^u V^u

so a trace is read and written once per chunk instead of once per step, and the inner loops are
contiguous multiply-adds over (step, batch).  The result equals the step-by-step recursion
(rounding aside) while w and d are constant within the chunk; the learner ends a chunk before
every parameter update.

Our choice of layout: the filtered trace of each presynaptic unit lives in a *mirrored* time ring
``xh[i, slot, b]`` with ``2H`` slots; step ``u`` is written to slots ``u % H`` and ``u % H + H``, so
any window of up to ``H`` consecutive steps is contiguous.  Steps before 0 read zeros as long as
``H`` covers the oldest step still needed (see :func:`history_slots`).

The taps that read ahead of step 0 (``m_q < 0``; the recursion starts at step 0) are corrected by
``alpha^(u+1) X^(-m_q-1)``, kept per unit in ``xearly``; its sum over the chunk is the per-neuron
factor ``Pa = sum_u P^u alpha^(u+1)`` (and ``Qa`` for the trace).

Arrays: psi, signal (n_buf, n_post, B); P, Q (n_post, n_buf, B); A, Pa, Qa (n_post, B); traces ebar (n_syn, B); xh (n_pre, 2H, B);
xearly (n_pre, K, B); the batch is innermost everywhere.
"""

import numpy as np
from numba import prange

from ._jit import jit, jit_parallel


def history_slots(chunk_steps: int, max_delay_steps: int, half_width: int) -> int:
    """H: steps the mirrored filtered-trace ring must hold for chunks of ``chunk_steps``.

    The oldest step read is ``a - max_delay - K`` for a delay chunk starting at ``a``, the newest
    ``a + chunk + 2K - 1`` (the delay pipeline lags K steps and reads K ahead); all of them, and the
    zeros standing for steps before 0, must sit in distinct slots.
    """
    return int(chunk_steps + max_delay_steps + 3 * half_width + 1)


def _filter_history(hist, u_from, u_to, t_last, decay, xh, xearly):
    """X^u = decay X^(u-1) + x^u for steps u in [u_from, u_to) into the mirrored ring ``xh``.

    hist : (n_slots, n_pre, B) network ring of presynaptic activity (step u at slot u % n_slots;
    it must still hold steps u_from .. min(u_to - 1, t_last)); steps after ``t_last`` have x = 0.
    xh : (n_pre, 2H, B); xearly : (n_pre, K, B), out: X^u for u < K.
    """
    n_slots, n_pre, n_batch = hist.shape
    n_hist = xh.shape[1] // 2
    n_early = xearly.shape[1]
    for i in prange(n_pre):
        prev = (u_from - 1) % n_hist
        for u in range(u_from, u_to):
            slot = u % n_hist
            src = u % n_slots
            live = u <= t_last
            for b in range(n_batch):
                value = decay * xh[i, prev, b]
                if live:
                    value += hist[src, i, b]
                xh[i, slot, b] = value
                xh[i, slot + n_hist, b] = value
                if u < n_early:
                    xearly[i, u, b] = value
            prev = slot


def _chunk_factors(psi, signal, lo, n, first_step, kappa, scale, alpha, P, Q, A, Pa, Qa, early):
    """Per-neuron factors of the ``n`` steps ``first_step ..`` stored at ``psi[:, lo:lo + n]``.

    psi, signal : (n_buf, n_post, B) pseudo-derivative and learning signal per buffered step
    kappa : readout decay; scale : zeta_o zeta; alpha : membrane decay
    P, Q : (n_post, >= n, B) out; A, Pa, Qa : (n_post, B) out (see the module docstring); the
    backward recursion runs in them (Lam in A); early : (>= n,) float64 scratch, alpha^(step + 1).
    """
    _, n_post, n_batch = psi.shape
    for u in range(n):
        early[u] = alpha ** (first_step + u + 1)
    for j in prange(n_post):
        lam, pa, qa = A[j], Pa[j], Qa[j]
        lam[:] = 0.0
        pa[:] = 0.0
        qa[:] = 0.0
        kq = 1.0
        for u in range(n - 1, -1, -1):
            e = early[u]
            for b in range(n_batch):
                lam[b] = signal[lo + u, j, b] + kappa * lam[b]
                ps = scale * psi[lo + u, j, b]
                p = ps * lam[b]
                q = ps * kq
                P[j, u, b] = p
                Q[j, u, b] = q
                pa[b] += p * e
                qa[b] += q * e
            kq *= kappa
        for b in range(n_batch):
            lam[b] *= kappa


SCRATCH_ROWS = 7      # per-neuron scratch vectors of the chunk kernels: (n_post, SCRATCH_ROWS, B)


def _weight_chunk(xh, first_step, n, indptr, pre, delay_steps, P, Q, A, decay_n, ebar, grad, keep, scratch):
    """Weight traces of one projection over ``n`` steps from ``first_step``.

    V^u = X^(u - d) read from the mirrored ring; decay_n : kappa^n.
    ebar : (n_syn, B) in place; grad : (n_syn,) accumulated (summed over the batch).
    keep : False for the last chunk of a sample: the traces are not carried on (not updated).
    scratch : (n_post, SCRATCH_ROWS, B), overwritten (row j is neuron j's, so rows run in parallel).
    """
    n_hist = xh.shape[1] // 2
    n_batch = xh.shape[2]
    n_post = indptr.size - 1
    for j in prange(n_post):
        acc_p, acc_q, zero = scratch[j, 0], scratch[j, 1], scratch[j, 2]
        zero[:] = 0.0
        for s in range(indptr[j], indptr[j + 1]):
            i = pre[s]
            start = (first_step - delay_steps[s]) % n_hist
            acc_p[:] = 0.0
            acc_q[:] = 0.0
            for u in range(n):
                slot = np.uint64(start + u)               # unsigned: no wrap-around test, so LLVM vectorises
                if keep:
                    for b in range(n_batch):
                        v = xh[i, slot, b]
                        acc_p[b] += P[j, u, b] * v
                        acc_q[b] += Q[j, u, b] * v
                else:
                    for b in range(n_batch):
                        acc_p[b] += P[j, u, b] * xh[i, slot, b]
            _finish(s, j, 1.0, acc_p, acc_q, zero, A, A, A, decay_n, ebar, grad, keep)


def _finish(s, j, w, acc_p, acc_q, edge, A, Pa, Qa, decay_n, ebar, grad, keep):
    """End of a synapse's chunk: g += sum_b E A + w (acc_p - edge Pa); E <- kappa^n E + w (acc_q - edge Qa)
    (the trace only if ``keep``)."""
    g = 0.0
    for b in range(acc_p.size):
        e = ebar[s, b]
        g += e * A[j, b] + w * (acc_p[b] - edge[b] * Pa[j, b])
        if keep:
            ebar[s, b] = decay_n * e + w * (acc_q[b] - edge[b] * Qa[j, b])
    grad[s] += g


def _synaptic_delay_chunk(xh, xearly, first_step, n, indptr, pre, centre, taps, weight,
                          P, Q, APQ, decay_n, ebar, grad, ebar_w, grad_w, keep, scratch):
    """Per-synapse delay traces over ``n`` lagged steps from ``first_step`` (and the weight traces).

    V^u = sum_q taps[s, q] X^(u - m_q) - sum_{m_q < 0} taps[s, q] alpha^(u+1) X^(-m_q-1),
    m_q = centre[s] - K + q.  centre, taps : from gaussian_taps; weight : (n_syn,);
    APQ : (3, n_post, B) = A, Pa, Qa (one array: numba calls with 20 or more arguments leave a tuple
    behind per call, docs/benchmarks.md).  ebar : (n_syn, B) in place; grad : (n_syn,) accumulated.
    The weight traces of the same steps read the centre tap (centre = the forward delay): pass
    ebar_w (n_syn, B) and grad_w (n_syn,) to update them in the same pass, or empty arrays.
    keep : False for the last chunk of a sample: the traces are not carried on (not updated), which
    drops the Q half of the work.
    scratch : (n_post, SCRATCH_ROWS, B), overwritten.
    The default window (K = 3, seven taps) sums the taps in registers; other widths sum them per
    step into a scratch vector.
    """
    n_hist = xh.shape[1] // 2
    n_batch = xh.shape[2]
    n_taps = taps.shape[1]
    half_width = (n_taps - 1) // 2
    n_post = indptr.size - 1
    A, Pa, Qa = APQ[0], APQ[1], APQ[2]
    for j in prange(n_post):
        acc_p, acc_q, acc_wp, acc_wq = scratch[j, 0], scratch[j, 1], scratch[j, 2], scratch[j, 3]
        edge, zero, v_u = scratch[j, 4], scratch[j, 5], scratch[j, 6]
        zero[:] = 0.0
        for s in range(indptr[j], indptr[j + 1]):
            i = pre[s]
            c = centre[s]
            # tap q reads step u - m_q = u + K - c - q: slots first .. descending by one per tap; keep
            # them >= 0 by starting in the mirror's upper half when needed
            top = (first_step + half_width - c) % n_hist
            if top < n_taps - 1:
                top += n_hist
            acc_p[:] = 0.0
            acc_q[:] = 0.0
            acc_wp[:] = 0.0
            acc_wq[:] = 0.0
            if n_taps == 7:
                t0, t1, t2, t3 = taps[s, 0], taps[s, 1], taps[s, 2], taps[s, 3]
                t4, t5, t6 = taps[s, 4], taps[s, 5], taps[s, 6]
                for u in range(n):
                    k = top + u
                    k0, k1, k2, k3 = np.uint64(k), np.uint64(k - 1), np.uint64(k - 2), np.uint64(k - 3)
                    k4, k5, k6 = np.uint64(k - 4), np.uint64(k - 5), np.uint64(k - 6)
                    if keep:                                # two copies of the loop: each vectorises
                        for b in range(n_batch):
                            x3 = xh[i, k3, b]
                            v = (t0 * xh[i, k0, b] + t1 * xh[i, k1, b] + t2 * xh[i, k2, b] + t3 * x3
                                 + t4 * xh[i, k4, b] + t5 * xh[i, k5, b] + t6 * xh[i, k6, b])
                            p = P[j, u, b]
                            q = Q[j, u, b]
                            acc_p[b] += p * v
                            acc_q[b] += q * v
                            acc_wp[b] += p * x3
                            acc_wq[b] += q * x3
                    else:
                        for b in range(n_batch):
                            x3 = xh[i, k3, b]
                            v = (t0 * xh[i, k0, b] + t1 * xh[i, k1, b] + t2 * xh[i, k2, b] + t3 * x3
                                 + t4 * xh[i, k4, b] + t5 * xh[i, k5, b] + t6 * xh[i, k6, b])
                            p = P[j, u, b]
                            acc_p[b] += p * v
                            acc_wp[b] += p * x3
            else:
                for u in range(n):
                    v_u[:] = 0.0
                    for q in range(n_taps):
                        tap = taps[s, q]
                        slot = np.uint64(top + u - q)
                        for b in range(n_batch):
                            v_u[b] += tap * xh[i, slot, b]
                    slot = np.uint64(top + u - half_width)
                    for b in range(n_batch):
                        acc_p[b] += P[j, u, b] * v_u[b]
                        acc_q[b] += Q[j, u, b] * v_u[b]
                        acc_wp[b] += P[j, u, b] * xh[i, slot, b]
                        acc_wq[b] += Q[j, u, b] * xh[i, slot, b]
            edge[:] = 0.0
            for q in range(half_width - c):             # taps reading ahead of step 0
                for b in range(n_batch):
                    edge[b] += taps[s, q] * xearly[i, half_width - c - q - 1, b]
            _finish(s, j, weight[s], acc_p, acc_q, edge, A, Pa, Qa, decay_n, ebar, grad, keep)
            if ebar_w.shape[0]:
                _finish(s, j, 1.0, acc_wp, acc_wq, zero, A, A, A, decay_n, ebar_w, grad_w, keep)


def _unit_delay_signal(xh, xearly, first_step, n, pre_of_delay, centre, taps, signal, edge):
    """Axonal delays: the tap sum of each delay parameter over ``n`` lagged steps from ``first_step``.

    signal[p, u, b] = sum_q taps[p, q] X_i^(first_step + u - m_q);  edge[p, b] = sum_{m_q < 0}
    taps[p, q] X_i^(-m_q-1), i = pre_of_delay[p].  signal : (n_delays, >= n, B); edge : (n_delays, B).
    """
    n_hist = xh.shape[1] // 2
    n_batch = xh.shape[2]
    n_taps = taps.shape[1]
    half_width = (n_taps - 1) // 2
    for p in prange(centre.size):
        i = pre_of_delay[p]
        c = centre[p]
        top = (first_step + half_width - c) % n_hist
        if top < n_taps - 1:
            top += n_hist
        signal[p, :n, :] = 0.0
        for q in range(n_taps):
            tap = taps[p, q]
            for u in range(n):
                slot = np.uint64(top + u - q)
                for b in range(n_batch):
                    signal[p, u, b] += tap * xh[i, slot, b]
        edge[p, :] = 0.0
        for q in range(half_width - c):
            for b in range(n_batch):
                edge[p, b] += taps[p, q] * xearly[i, half_width - c - q - 1, b]


def _unit_delay_chunk(signal, edge, n, indptr, delay_of_syn, weight, P, Q, A, Pa, Qa, decay_n, ebar, grad, keep,
                      scratch):
    """Delay traces of synapses that share a delay parameter (axonal) over ``n`` lagged steps.

    signal, edge : from :func:`unit_delay_signal`; delay_of_syn : (n_syn,) int32.
    ebar : (n_syn, B) in place; grad : (n_syn,) accumulated per synapse (summed by unit later);
    keep : False for the last chunk of a sample (traces not updated); scratch : (n_post, SCRATCH_ROWS, B).
    """
    n_batch = signal.shape[2]
    n_post = indptr.size - 1
    for j in prange(n_post):
        acc_p, acc_q = scratch[j, 0], scratch[j, 1]
        for s in range(indptr[j], indptr[j + 1]):
            p = delay_of_syn[s]
            acc_p[:] = 0.0
            acc_q[:] = 0.0
            for u in range(n):
                for b in range(n_batch):
                    v = signal[p, u, b]
                    acc_p[b] += P[j, u, b] * v
                    acc_q[b] += Q[j, u, b] * v
            _finish(s, j, weight[s], acc_p, acc_q, edge[p], A, Pa, Qa, decay_n, ebar, grad, keep)


_finish = jit(_finish, contract=True)
filter_history = jit(_filter_history, contract=True)
filter_history_parallel = jit_parallel(_filter_history, contract=True)
chunk_factors = jit(_chunk_factors, contract=True)
chunk_factors_parallel = jit_parallel(_chunk_factors, contract=True)
weight_chunk = jit(_weight_chunk, contract=True)
weight_chunk_parallel = jit_parallel(_weight_chunk, contract=True)
synaptic_delay_chunk = jit(_synaptic_delay_chunk, contract=True)
synaptic_delay_chunk_parallel = jit_parallel(_synaptic_delay_chunk, contract=True)
unit_delay_signal = jit(_unit_delay_signal, contract=True)
unit_delay_signal_parallel = jit_parallel(_unit_delay_signal, contract=True)
unit_delay_chunk = jit(_unit_delay_chunk, contract=True)
unit_delay_chunk_parallel = jit_parallel(_unit_delay_chunk, contract=True)


def _unit_windows(xh, first_step, n, shift, out):
    """out[i, u, b] = X_i^(first_step + u - shift[i]) for u < n: the filtered trace of every presynaptic
    unit over a chunk, delayed by its unit's delay (axonal) or not at all (shift 0).

    xh : (n_pre, 2H, B) mirrored ring; shift : (n_pre,) int32; out : (n_pre, n, B) C-contiguous.
    """
    n_hist = xh.shape[1] // 2
    n_batch = xh.shape[2]
    for i in prange(out.shape[0]):
        start = (first_step - shift[i]) % n_hist
        for u in range(n):
            slot = np.uint64(start + u)
            for b in range(n_batch):
                out[i, u, b] = xh[i, slot, b]


def _dense_trace_gradient(ebar, A, grad):
    """grad[j, i] += sum_b A[j, b] ebar[b, j, i]: the carried-over part of a dense projection's chunk.

    ebar : (B, n_post, n_pre) weight traces (batch outermost); A : (n_post, B); grad : (n_post, n_pre).
    """
    n_batch, n_post, n_pre = ebar.shape
    for j in prange(n_post):
        for b in range(n_batch):
            a = A[j, b]
            for i in range(n_pre):
                grad[j, i] += a * ebar[b, j, i]


unit_windows = jit(_unit_windows, contract=True)
unit_windows_parallel = jit_parallel(_unit_windows, contract=True)
dense_trace_gradient = jit(_dense_trace_gradient, contract=True)
dense_trace_gradient_parallel = jit_parallel(_dense_trace_gradient, contract=True)
