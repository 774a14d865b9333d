"""The three-factor rule: eligibility traces x a top-down learning signal, and the optimizer.

A :class:`ThreeFactorLearner` attaches to a :class:`~onlinedelay.network.Network` and, after
every ``net.step``, runs (spec section 8), for every hidden layer l::

    delta^t = w^t (softmax(y^t) - onehot(label))           readout error (per-step CE)
    L_l^t   = B_l^T delta^t                                B_l = the readout weights of layer l
                                                           (symmetric) or a fixed random matrix
    psi_l^t = pseudo-derivative of v_l^t
    weight traces at t:   g_W += L^t ebar_W^t              readout: g_Wo += delta^t zbar^t, g_b += delta^t bbar^t
    delay traces at tau = t - K (lagged, the Gaussian kernel is non-causal): g_D += L^tau ebar_D^tau

Each layer learns from its own presynaptic trains -- the input, or the spikes of the layer below
-- taken as given: their dependence on lower layers' parameters is not propagated (no gradient
flows down through spikes).  A layer the readout does not read (``readout="last"``, layers below
the last) gets a fixed random feedback matrix.  Conv taps get the sum of the gradients of the
synapses that share them.

``flush()`` runs the last K lagged delay steps at the end of a sample: inputs after the end
count as zero, except the recurrent train's step T, which is ``z^(T-1)``, a spike of the sample.
With the soft reset the synapse traces are not touched every step: the per-neuron factors
(psi, L) are buffered and each synapse's traces are summed in closed form once per chunk of
steps (kernels/chunk.py); gradients are complete after ``flush()`` and are brought up to date
before every update.  Updates: ``accumulate`` sums gradients over a sample/batch and applies
them once; ``online`` applies them every ``update_every_steps`` steps.  With symmetric feedback,
the readout reading every layer, and the reset, recurrent and inter-layer spikes treated as
constants, the accumulated gradients equal BPTT of the Gaussian-relaxed model exactly
(tests/test_gradients.py).

Known sequences: ``run_sample`` on a one-layer network without recurrence advances a segment at a
time (segments.py) and does the per-step work of the rule in one kernel call per segment, the
learning signal and the readout gradients as matrix products over the segment
(kernels/readout.readout_gradients).  When a sample is one chunk (T <= chunk_steps), every gradient
is summed per presynaptic spike at the flush: the chunk factors filtered backward in time, then
per spike one row added for a projection whose delays are
not learned (kernels/sample.py), or the window of lags around each synapse's delay for learned
synaptic and axonal delays (kernels/spike_delays.py); no per-synapse trace touched.  Both give the
per-step rule's gradients up to rounding (tests/test_segments.py, tests/test_spike_delays.py).

Gradient units: E is the per-step cross-entropy averaged over the loss window and the batch.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from . import quantize as Q
from .kernels import chunk as KC
from .kernels import readout as KR
from .kernels import sample as KS
from .kernels import spike_delays as KD
from .kernels import spike_weights as KW
from .kernels.spike_weights import unit_blocks
from .kernels._jit import build
from .config import LayerSpec, LearningConfig
from .dense import blas_threads, dense_weight_chunk, is_dense
from .errors import OnlineDelayError
from .evaluate import vote
from .network import Network
from .projections import add_from_csc, to_csc
from .segments import SEGMENT_STEPS, parallel_parts, ring_tail, supports_segments
from .state import (Gradients, LayerGradients, LayerLearnerState, LearnerState, Projection,
                    ProjectionGradients, ProjectionTraces, aligned_zeros, assign_tuple, copy_tuple, fill_tuple)


# LayerLearnerState buffers written before they are read (rows of a step by that step, chunk factors by
# the chunk): a reset need not zero them
SCRATCH_FIELDS = ("psi_buf", "signal_buf", "factors", "factors_b", "scratch", "early")
MIN_SEGMENT_STEPS = 16   # online updates more often than this: run_sample steps one step at a time
LAG_BLOCK_BYTES = 1 << 17   # per-spike delay gradients: the lag sums of a block of units that stay in cache (L2)
LAG_TILE_BYTES = 1 << 14    # ... and the rows of R read by the whole block before the next rows (L1)
UNIT_ORDER_BYTES = 1 << 18  # per-spike weight gradients (sparse) by unit blocks while R (n_buf B N) fits (L2)
UNIT_BLOCK, UNIT_BLOCK_SYNAPSES = 16, 4096    # ... blocks of at most 16 units and 4096 synapses (their rows in L1)
STEP_BLOCK_BYTES = 1 << 20  # ... else by blocks of steps whose rows of R (B N each) fill at most 1 MB (L2)


class _LayerRule:
    """The three-factor rule of one hidden layer: its traces, per-synapse gradients and kernels."""

    def __init__(self, learner: "ThreeFactorLearner", index: int, spec: LayerSpec, feedback):
        net = learner.net
        self.net, self.index, self.spec = net, index, spec
        self.config = learner.config
        self.lag_steps, self.n_hist, self.n_buf = learner.lag_steps, learner.n_hist, learner.n_buf
        self.feedback = feedback                 # (n_out, N) fixed random, or None: the readout weights
        self.chunked = spec.reset == "soft"
        lp = net.params.layers[index]
        self.modes = (spec.feedforward.delays, spec.recurrent.delays if spec.recurrent is not None else "none")
        self.n_pre = (spec.n_pre, spec.n_neurons if spec.recurrent is not None else 0)
        learns = tuple(self._learns_delays(proj) for proj in lp)
        # weight traces trail the delay pipeline where a synaptic-delay pass can update them too
        self.fuse = self.chunked and any(l and mode == "synaptic" for l, mode in zip(learns, self.modes))
        # dense projections whose delays depend on the presynaptic unit only: weight traces by BLAS
        self.dense = tuple(self.chunked and mode != "synaptic" and is_dense(proj, n_pre)
                           for proj, mode, n_pre in zip(lp, self.modes, self.n_pre))
        dt = net.dtype
        self.grads = LayerGradients(*(ProjectionGradients(np.zeros_like(proj.learned_weight), np.zeros_like(proj.delay),
                                                          np.zeros_like(proj.weight_scale),
                                                          np.zeros_like(proj.delay_offset)) for proj in lp))
        # per-synapse accumulators (race-free over rows); shared conv taps and axonal delays are summed
        self.grad_w_syn = tuple(g.weight if not proj.weight_of_syn.size else np.zeros(proj.weight.size, dt)
                                for proj, g in zip(lp, self.grads))
        self.grad_d_syn = tuple(np.zeros(0, dt) if not learn else g.delay if mode == "synaptic"
                                else np.zeros(proj.weight.size, dt)
                                for proj, g, learn, mode in zip(lp, self.grads, learns, self.modes))
        n_taps = 2 * self.lag_steps + 1          # Gaussian taps of each delay, refreshed when delays change
        self.taps = tuple((np.zeros(proj.delay.size, np.int32), np.zeros((proj.delay.size, n_taps), dt))
                          for proj in lp)
        self.taps_version = -1
        self.no_trace, self.no_grad = np.zeros((0, 1), dt), np.zeros(0, dt)
        self.spike_scratch = None   # per-spike weight gradients (kernels/spike_weights.py): scratch per batch size
        self.lag_scratch = None     # per-spike delay gradients (kernels/spike_delays.py): scratch
        self.csc_arrays = [None, None]  # per projection: delays, weights and two gradient buffers in CSC order
        self.traces_touched = True     # the trace arrays may hold values (reset zeroes them then)
        self.input_trains = None       # (T, n_pre, B) the sample's input, read by the per-spike flush (layer 0)

    # -- state ----------------------------------------------------------------------------------
    def _learns_delays(self, proj: Projection) -> bool:
        return self.config.learn_delays and proj.delay.size > 0

    def allocate(self, batch: int) -> LayerLearnerState:
        dt, n = self.net.dtype, self.spec.n_neurons
        n_lag = 0 if self.chunked else self.lag_steps + 1
        n_buf = self.n_buf if self.chunked else 0
        lp = self.net.params.layers[self.index]
        return LayerLearnerState(
            psi_lag=aligned_zeros((n_lag, n, batch), dt), signal_lag=aligned_zeros((n_lag, n, batch), dt),
            decay_lag=aligned_zeros((n_lag, n, batch), dt),
            psi_buf=aligned_zeros((n_buf, n, batch), dt), signal_buf=aligned_zeros((n_buf, n, batch), dt),
            factors=aligned_zeros((2, n, n_buf, batch), dt), factors_b=aligned_zeros((3, n, batch), dt),
            scratch=aligned_zeros((n if self.chunked else 0, KC.SCRATCH_ROWS, batch), dt),
            early=aligned_zeros(n_buf, np.float64),
            feedforward=self._traces(0, lp.feedforward, batch), recurrent=self._traces(1, lp.recurrent, batch),
            cursor=aligned_zeros(3, np.int64))

    def reset(self, state: LayerLearnerState) -> None:
        """Zero the layer's per-sample state; the trace arrays only if a sample touched them (a sample
        learned spike by spike leaves them zero: large dense traces are not rewritten per sample);
        buffers every step or chunk writes before it reads (SCRATCH_FIELDS) are left as they are."""
        for name, value in zip(state._fields, state):
            if name in SCRATCH_FIELDS or (name in ("feedforward", "recurrent") and not self.traces_touched):
                continue
            fill_tuple((value,), 0)
        self.traces_touched = False

    def _traces(self, k: int, proj: Projection, batch: int) -> ProjectionTraces:
        """Trace arrays of projection ``k`` (see :class:`~onlinedelay.state.ProjectionTraces`)."""
        dt = self.net.dtype
        n_syn = proj.weight.size
        n_d = n_syn if self._learns_delays(proj) else 0
        chunked = self.chunked and n_syn > 0
        hard = 0 if self.chunked else 1
        n_pre = self.n_pre[k] if chunked else 0
        n_units = proj.delay.size if n_d and self.modes[k] == "axonal" else 0
        dense = self.dense[k]
        return ProjectionTraces(
            eps_w=aligned_zeros((n_syn * hard, batch), dt),
            ebar_w=aligned_zeros((batch, n_syn) if dense else (n_syn, batch), dt),
            eps_d=aligned_zeros((n_d * hard, batch), dt), ebar_d=aligned_zeros((n_d, batch), dt),
            xi=aligned_zeros((n_units * hard, batch), dt),
            xh=aligned_zeros((n_pre, 2 * self.n_hist, batch), dt),
            xearly=aligned_zeros((n_pre, self.lag_steps, batch), dt),
            unit_signal=aligned_zeros((n_units * (1 - hard), self.n_buf, batch), dt),
            unit_edge=aligned_zeros((n_units * (1 - hard), batch), dt),
            windows=aligned_zeros(n_pre * self.n_buf * batch if dense else 0, dt))

    def zero_grad(self) -> None:
        """Zero the per-synapse accumulators that are not the gradient arrays themselves (conv taps, axonal
        delays: summed into them by :meth:`sync_grads`); the learner zeroes ``self.grads``, part of its own."""
        for g, grads in zip(self.grad_w_syn + self.grad_d_syn, tuple(g.weight for g in self.grads)
                            + tuple(g.delay for g in self.grads)):
            if g is not grads:
                g[...] = 0

    def sync_grads(self) -> None:
        """Sum per-synapse gradients into shared parameters (conv taps, axonal delays); then the
        gradients of learned ternary scales and delay offsets (quantize.py; the shadow weights and
        delays take dE/dWq and dE/dd_hat straight through)."""
        specs = (self.spec.feedforward, self.spec.recurrent)
        for proj, spec, g, g_w, g_d in zip(self.net.params.layers[self.index], specs, self.grads, self.grad_w_syn,
                                           self.grad_d_syn):
            if g_w is not g.weight:
                g.weight[:] = np.bincount(proj.weight_of_syn, weights=g_w, minlength=g.weight.size)
            if g_d.size and g_d is not g.delay:
                g.delay[:] = np.bincount(proj.delay_of_syn, weights=g_d, minlength=g.delay.size)
            Q.sync_quantizer_grads(proj, spec, g)

    def _projections(self, state: LayerLearnerState, by_spike: bool = False):
        """(k, projection, traces, ring, weight gradient, per-synapse delay gradient) of each active projection;
        ``by_spike``: the feedforward ring is the sample's input where :attr:`input_trains` holds it."""
        lp, ls = self.net.params.layers[self.index], self.net.state.layers[self.index]
        ring = self.input_trains if by_spike and self.input_trains is not None else ls.hist_ff
        out = [(0, lp.feedforward, state.feedforward, ring, self.grad_w_syn[0], self.grad_d_syn[0])]
        if self.spec.recurrent is not None:
            out.append((1, lp.recurrent, state.recurrent, ls.hist_rec, self.grad_w_syn[1], self.grad_d_syn[1]))
        return out

    def _refresh_taps(self) -> None:
        """Re-tabulate the Gaussian taps if the delays changed since the last time."""
        if self.taps_version != self.net.delay_version:
            for proj, (centre, taps) in zip(self.net.params.layers[self.index], self.taps):
                K.gaussian_taps(proj.delay, self.lag_steps, self.config.sigma_steps, centre, taps)
            self.taps_version = self.net.delay_version

    def _kernel(self, name: str, module=KC):
        """The serial or parallel build of a chunk (or sample) kernel, following the network's thread count."""
        return build(module, name, self.parts() > 1)

    def parts(self) -> int:
        """Threads this layer's chunk and per-spike kernels run on (segments.parallel_parts)."""
        return parallel_parts(self.net, sum(proj.pre.size for proj in self.net.params.layers[self.index]))

    # -- per-step rule --------------------------------------------------------------------------
    def step(self, state: LayerLearnerState, t: int, delta: np.ndarray, w_out_block) -> None:
        """Learn from step ``t`` of this layer; ``w_out_block`` (n_out, N): its readout weights (or None)."""
        net, spec, s = self.net, self.spec, state
        ns = net.state.layers[self.index]
        if self.chunked:
            row = t - int(s.cursor[1])              # buffered from the first pending delay step
            psi, signal = s.psi_buf[row], s.signal_buf[row]
        else:
            slot = t % (self.lag_steps + 1)
            psi, signal, decay = s.psi_lag[slot], s.signal_lag[slot], s.decay_lag[slot]
            decay[...] = ns.decay_eff
        K.learning_signal(delta, w_out_block if self.feedback is None else self.feedback, signal)
        K.pseudo_derivative(ns.v, net.config.surrogate_gamma, spec.threshold, psi)
        if self.chunked:
            if t + 1 - s.cursor[1] >= self.n_buf:       # the buffer is full
                self.advance(s, t + 1, final=False)
            return
        c = net.config
        kernels = net.synapse_kernels
        self.traces_touched = True
        for _, proj, tr, hist, g_w, _ in self._projections(s):
            kernels.weight_traces(hist, t, proj.indptr, proj.pre, proj.delay_steps, psi, signal, decay,
                                  spec.input_gain, c.decay_out, c.readout_gain, tr.eps_w, tr.ebar_w, g_w)
        if t >= self.lag_steps:
            self.delay_step(s, t - self.lag_steps, t)

    def advance(self, s: LayerLearnerState, t_end: int, final: bool, catch_up: bool = False) -> None:
        """Soft reset: sum the traces of pending steps in one pass per projection (kernels/chunk.py).

        Delay traces run K steps behind: steps [cursor[1], t_end - K), or up to ``t_end`` when
        ``final`` (end of sample: the filtered trace runs on K steps with zero input, after the
        recurrent train's last real step t_end).  Weight traces of steps [cursor[0], .) run up to
        ``t_end``, except that with learned synaptic delays they trail the delays, so one pass over
        each synapse updates both (the centre tap of the delay window is the weight's input);
        ``catch_up`` (before an update) brings them to ``t_end``.
        """
        c, spec = self.net.config, self.spec
        w_first, d_first = int(s.cursor[0]), int(s.cursor[1])
        d_end = t_end if final else max(d_first, t_end - self.lag_steps)
        w_end = max(w_first, d_end) if self.fuse and not (final or catch_up) else t_end
        fused = self.fuse and (w_first, w_end) == (d_first, d_end)
        keep = not final                            # after the last chunk the traces are spent
        P, Q = s.factors[0], s.factors[1]
        A, Pa, Qa = s.factors_b[0], s.factors_b[1], s.factors_b[2]
        factors = self._kernel("chunk_factors")
        scale = c.readout_gain * spec.input_gain
        alpha = spec.decay_mem
        x_end = t_end + self.lag_steps if final else t_end
        x_first = int(s.cursor[2])
        projections = self._projections(s)
        by_spike = self._by_spike(s, t_end, final)
        if self.input_trains is not None and not by_spike:
            raise RuntimeError("the input ring was left unwritten for a per-spike flush that did not happen")
        if by_spike:                                # the whole sample per spike: no trace or chunk pass
            self._spike_gradients(s, self._projections(s, by_spike=True), by_spike, t_end)
            s.cursor[:] = t_end, t_end, x_end
            return
        for k, proj, tr, hist, _, _ in projections:
            if proj.weight.size:
                self.traces_touched = True
                # the recurrent train's step t_end is z^(t_end - 1), written by flush (final) or the next step
                t_last = t_end if (k == 1 and final) else t_end - 1
                self._kernel("filter_history")(hist, x_first, x_end, t_last, alpha, tr.xh, tr.xearly)
        n = w_end - w_first
        if n > 0 and not fused:
            factors(s.psi_buf, s.signal_buf, w_first - d_first, n, w_first, c.decay_out, scale, alpha,
                    P, Q, A, Pa, Qa, s.early)
            for k, proj, tr, _, g_w, _ in projections:
                self._weight_chunk(s, k, proj, tr, w_first, n, g_w, keep)
        n = d_end - d_first
        if n > 0 and (fused or any(self._learns_delays(proj) for _, proj, *_ in projections)):
            self._refresh_taps()
            factors(s.psi_buf, s.signal_buf, 0, n, d_first, c.decay_out, scale, alpha, P, Q, A, Pa, Qa, s.early)
            decay_n = c.decay_out ** n
            for k, proj, tr, _, g_w, g_d in projections:
                centre, taps = self.taps[k]
                learns = self._learns_delays(proj)
                if learns and self.modes[k] == "synaptic":
                    ebar_w, grad_w = (tr.ebar_w, g_w) if fused else (self.no_trace, self.no_grad)
                    self._kernel("synaptic_delay_chunk")(tr.xh, tr.xearly, d_first, n, proj.indptr, proj.pre,
                                                         centre, taps, proj.weight, P, Q, s.factors_b, decay_n,
                                                         tr.ebar_d, g_d, ebar_w, grad_w, keep, s.scratch)
                    continue
                if learns:
                    self._kernel("unit_delay_signal")(tr.xh, tr.xearly, d_first, n, proj.pre_of_delay, centre,
                                                      taps, tr.unit_signal, tr.unit_edge)
                    self._kernel("unit_delay_chunk")(tr.unit_signal, tr.unit_edge, n, proj.indptr,
                                                     proj.delay_of_syn, proj.weight, P, Q, A, Pa, Qa, decay_n,
                                                     tr.ebar_d, g_d, keep, s.scratch)
                if fused:
                    self._weight_chunk(s, k, proj, tr, d_first, n, g_w, keep)
        pending = t_end - d_end                     # buffered steps still pending for the delays
        if d_end > d_first and pending > 0:
            for buf in (s.psi_buf, s.signal_buf):
                buf[:pending] = buf[d_end - d_first:t_end - d_first].copy()
        s.cursor[:] = w_end, d_end, max(x_first, x_end)

    def _by_spike(self, s: LayerLearnerState, t_end: int, final: bool) -> tuple:
        """Projections whose gradients are summed spike by spike at this flush: every projection with
        synapses, when the whole sample is one chunk (nothing summed before, every step still in the
        rings, the recurrent train's step t_end included); else none."""
        if not (final and self.chunked and not s.cursor.any() and t_end < self.net.n_slots):
            return ()
        return tuple(k for k, proj, *_ in self._projections(s) if proj.weight.size)

    def _spike_gradients(self, s: LayerLearnerState, projections, by_spike: tuple, t_end: int) -> None:
        """Gradients of the projections in ``by_spike`` over the sample's ``t_end`` steps: the chunk
        factors filtered backward in time, then per presynaptic spike the rows of the weights
        (kernels/sample.py) or the lag windows of the learned delays (kernels/spike_delays.py)."""
        learned = tuple(k for k, proj, *_ in projections if k in by_spike and self._learns_delays(proj))
        if len(learned) < len(by_spike):
            self._spike_weight_gradients(s, projections, tuple(k for k in by_spike if k not in learned), t_end)
        if learned:
            self._spike_delay_gradients(s, projections, learned, t_end)

    def _spike_weight_gradients(self, s: LayerLearnerState, projections, by_spike: tuple, t_end: int) -> None:
        """g_W of the projections in ``by_spike`` over the sample's ``t_end`` steps (kernels/spike_weights.py):
        the chunk factors filtered backward in time, then one row added per presynaptic spike, by unit
        blocks where R fits in cache (UNIT_ORDER_BYTES) and the projection is not dense, else by blocks
        of steps (700 -> 256 dense at batch 1: 1.18-1.21 against 1.43-1.95 ms per sample by units;
        140 -> 256 at density 0.2: 0.89 by units against 1.01-1.07)."""
        c, spec, net = self.net.config, self.spec, self.net
        n_batch, parts = s.psi_buf.shape[2], self.parts()
        cscs = tuple(net.segments.csc_delays(self.index, k) for k in range(len(self.n_pre)))     # fresh, once
        indices = tuple(csc.index for csc in cscs)
        if self.spike_scratch is None or self.spike_scratch[0].shape[1] != n_batch \
                or self.spike_scratch[3][1][1].shape[0] != parts \
                or any(a is not b for a, b in zip(self.spike_scratch[4], indices)):
            fits = self.n_buf * n_batch * spec.n_neurons * net.dtype.itemsize <= UNIT_ORDER_BYTES
            self.spike_scratch = self._spike_scratch(n_batch, parts, tuple(fits and not index.transposed
                                                                           for index in indices), indices)
        R, lam, grad_csc, scratch, _, by_unit = self.spike_scratch
        self._kernel("backward_filter", KS)(s.psi_buf, s.signal_buf, 0, t_end, c.decay_out,
                                           c.readout_gain * spec.input_gain, spec.decay_mem, lam, R, parts)
        for k, proj, _, hist, g_w, _ in projections:
            if k not in by_spike:
                continue
            csc = cscs[k]
            index = csc.index
            if by_unit[k]:
                blocks, offsets, coefs, cursor, acc = scratch[1 + k]
                self._kernel("unit_weight_gradient", KW)(hist, t_end, index.out_indptr, index.out_syn,
                                                         index.out_post, csc.delay_csc, csc.rows, R, blocks,
                                                         offsets, coefs, cursor, acc, g_w, index.transposed)
                continue
            masks, ptr, cursor, lists = scratch[0]
            trains = hist.transpose(0, 2, 1)         # (T, B, n_pre): contiguous along the units for input_trains
            n_spikes = self._kernel("unit_spike_lists", KW)(trains, t_end, masks[k], ptr[k], parts)
            if n_spikes > lists[0].size:
                lists[:] = np.zeros(2 * n_spikes, np.int32), np.zeros(2 * n_spikes, net.dtype)
            g = grad_csc[k]
            g[:] = 0.0
            block = max(1, STEP_BLOCK_BYTES // (n_batch * spec.n_neurons * net.dtype.itemsize))
            self._kernel("spike_weight_gradient", KW)(trains, t_end, index.out_indptr, index.out_post, csc.delay_csc,
                                                      csc.rows, R, masks[k], ptr[k], cursor, lists[0], lists[1],
                                                      block, parts, g)
            add_from_csc(index, g, g_w)

    def _spike_scratch(self, n_batch: int, parts: int, by_unit: tuple, indices: tuple) -> tuple:
        """Buffers of :meth:`_spike_weight_gradients`: R (n_buf, B, N), the filter's (N, B) carry, CSC
        gradients (by steps), the kernels' scratch (the spike lists by steps, then per projection the
        unit blocks and their spike lists and gradient rows, by units), the CSC ``indices`` they were
        made for and ``by_unit`` (per projection: True by unit blocks)."""
        dt, N, lp = self.net.dtype, self.spec.n_neurons, self.net.params.layers[self.index]
        rows = tuple(0 if in_blocks else self.n_buf * n_batch for in_blocks in by_unit)   # kernels/spike_weights.py
        scratch = [(tuple(np.zeros((r, -(-n_pre // 64)), np.uint64) for r, n_pre in zip(rows, self.n_pre)),
                    tuple(np.zeros(n_pre + 1, np.int64) for n_pre in self.n_pre),
                    np.zeros(max(self.n_pre), np.int64), [np.zeros(0, np.int32), np.zeros(0, dt)])]
        for proj, index, in_blocks in zip(lp, indices, by_unit):
            blocks = (unit_blocks(index.out_indptr, UNIT_BLOCK, UNIT_BLOCK_SYNAPSES) if in_blocks
                      else np.zeros(1, np.int32))
            units = int(np.diff(blocks).max(initial=0))
            n_syn = int(np.diff(index.out_indptr[blocks]).max(initial=0))
            n_spikes = units * self.n_buf * n_batch
            scratch.append((blocks, np.zeros((parts, n_spikes), np.int64), np.zeros((parts, n_spikes), dt),
                            np.zeros((parts, units), np.int64), np.zeros((parts, n_syn), dt)))
        grad_csc = tuple(np.zeros(0 if in_blocks else proj.pre.size, dt) for proj, in_blocks in zip(lp, by_unit))
        return (aligned_zeros((self.n_buf, n_batch, N), dt), aligned_zeros((N, n_batch), dt), grad_csc, tuple(scratch),
                indices, by_unit)

    def _spike_delay_gradients(self, s: LayerLearnerState, projections, learned: tuple, t_end: int) -> None:
        """g_d and g_w of the projections in ``learned`` (learned synaptic or axonal delays) over the
        sample's ``t_end`` steps, summed per presynaptic spike (kernels/spike_delays.py)."""
        c, spec, net = self.net.config, self.spec, self.net
        n_batch, width = s.psi_buf.shape[2], 2 * self.lag_steps + 2    # 2K + 1 taps, even (8 for K = 3)
        n_lags = t_end + c.max_delay_steps + width + 1      # steps 0 .. t_end (recurrent), delays, window
        lp = net.params.layers[self.index]
        if self.lag_scratch is None or self.lag_scratch[3].size != n_batch * max(self.n_pre):
            dt = net.dtype
            max_lags = self.n_buf + c.max_delay_steps + width + 1
            self.lag_scratch = (np.zeros(n_batch * spec.n_neurons * max_lags, dt),
                                np.zeros(max(proj.pre.size for proj in lp) * width, dt),
                                tuple(np.zeros(n_batch * n_pre + 1, np.int64) for n_pre in self.n_pre),
                                np.zeros(n_batch * max(self.n_pre), np.int64),
                                [np.zeros(0, np.int32), np.zeros(0, dt)])
        flat_rt, flat_sums, ptrs, cursor, spike_buf = self.lag_scratch
        RT = flat_rt[:n_batch * spec.n_neurons * n_lags].reshape(n_batch, spec.n_neurons, n_lags)
        self._kernel("lag_filter", KD)(s.psi_buf, s.signal_buf, t_end, c.decay_out, c.readout_gain * spec.input_gain,
                                       spec.decay_mem, self.lag_steps, s.factors[0], s.factors_b, RT)
        for k, proj, _, hist, g_w, g_d in projections:
            if k not in learned:
                continue
            csc = self.net.segments.csc_delays(self.index, k)     # the taps' centres are the integer delays
            index = csc.index
            t_last = t_end if k == 1 else t_end - 1    # the recurrent train's step t_end is z^(t_end - 1)
            n_spikes = KD.spike_lists(hist, t_last, ptrs[k], cursor, spike_buf[0], spike_buf[1])
            if n_spikes > spike_buf[0].size:
                spike_buf[:] = np.zeros(2 * n_spikes, np.int32), np.zeros(2 * n_spikes, net.dtype)
                KD.spike_lists(hist, t_last, ptrs[k], cursor, spike_buf[0], spike_buf[1])
            sums = flat_sums[:proj.pre.size * width].reshape(proj.pre.size, width)
            fan_out = max(1, proj.pre.size // max(1, self.n_pre[k]))
            block = max(1, min(LAG_BLOCK_BYTES // (fan_out * width * sums.itemsize),     # blocks for every thread
                               -(-self.n_pre[k] // (4 * self.parts()))))
            tile = max(1, LAG_TILE_BYTES // (n_lags * sums.itemsize))
            self._kernel("spike_lag_sums", KD)(ptrs[k], spike_buf[0], spike_buf[1], index.out_indptr,
                                               index.out_post, csc.delay_csc, RT, block, tile, cursor, sums)
            d_csc, w_csc, gd_csc, gw_csc = self._csc_arrays(index, k, proj, g_w.size > 0)
            self._kernel("lag_gradients", KD)(sums, d_csc, self.lag_steps, self.config.sigma_steps, w_csc, gd_csc,
                                              gw_csc)
            add_from_csc(index, gd_csc, g_d)
            if g_w.size:
                add_from_csc(index, gw_csc, g_w)

    def _csc_arrays(self, index, k: int, proj: Projection, with_w: bool) -> tuple:
        """Projection ``k``'s real delays and weights in the CSC order of ``index``, and two CSC gradient
        buffers (kernels/spike_delays.lag_gradients; the weight gradient's empty unless ``with_w``)."""
        dt = self.net.dtype
        if self.csc_arrays[k] is None:
            n = proj.weight.size
            self.csc_arrays[k] = (np.zeros(n, proj.delay.dtype), np.zeros(n, dt), np.zeros(n, dt), np.zeros(n, dt))
        d_csc, w_csc, gd_csc, gw_csc = self.csc_arrays[k]
        to_csc(index, proj.delay if self.modes[k] == "synaptic" else proj.delay[proj.delay_of_syn], d_csc)
        to_csc(index, proj.weight, w_csc)
        return d_csc, w_csc, gd_csc, gw_csc if with_w else gw_csc[:0]

    def _weight_chunk(self, s, k: int, proj: Projection, tr, first: int, n: int, grad, keep: bool) -> None:
        """Weight traces of projection ``k`` over the ``n`` steps from ``first`` (factors already computed);
        ``keep`` False: last chunk of the sample, the traces are not carried on."""
        c = self.net.config
        P, Q, A = s.factors[0], s.factors[1], s.factors_b[0]
        if not self.dense[k]:
            self._kernel("weight_chunk")(tr.xh, first, n, proj.indptr, proj.pre, proj.delay_steps,
                                         P, Q, A, c.decay_out ** n, tr.ebar_w, grad, keep, s.scratch)
            return
        n_pre = tr.xh.shape[0]
        shift = proj.delay_steps[:n_pre]            # row 0 holds every unit in order: its delays
        with blas_threads(1):                       # see dense.py: BLAS threads fight numba's
            dense_weight_chunk(tr.xh, first, n, shift, P, Q, A, c.decay_out ** n,
                               tr.ebar_w.reshape(-1, proj.indptr.size - 1, n_pre), grad, tr.windows,
                               self.parts() > 1, keep)

    def catch_up(self, s: LayerLearnerState, t: int) -> None:
        """Soft reset, mid-sample: sum every pending weight step (delays stay K behind)."""
        if self.chunked and t > s.cursor[0]:
            self.advance(s, t, final=False, catch_up=True)

    def delay_step(self, s: LayerLearnerState, tau: int, t_last: int, t_last_rec: int | None = None) -> None:
        """Hard reset: delay traces at the lagged step ``tau``; ring entries after ``t_last`` (recurrent:
        ``t_last_rec``) count as zero."""
        c, spec = self.net.config, self.spec
        slot = tau % (self.lag_steps + 1)
        self._refresh_taps()
        kernels = self.net.synapse_kernels
        psi, signal, decay = s.psi_lag[slot], s.signal_lag[slot], s.decay_lag[slot]
        for k, proj, tr, hist, _, g_d in self._projections(s):
            if not self._learns_delays(proj):
                continue
            centre, taps = self.taps[k]
            last = t_last if k == 0 or t_last_rec is None else t_last_rec
            if self.modes[k] == "synaptic":
                kernels.synaptic_delay_traces(hist, tau, last, proj.indptr, proj.pre, centre, taps,
                                              proj.weight, psi, signal, decay, spec.input_gain, c.decay_out,
                                              c.readout_gain, tr.eps_d, tr.ebar_d, g_d)
            else:
                kernels.xi_from_taps(hist, tau, last, proj.pre_of_delay, centre, taps, tr.xi)
                kernels.delay_traces(tr.xi, proj.indptr, proj.delay_of_syn, proj.weight, psi, signal, decay,
                                     spec.input_gain, c.decay_out, c.readout_gain, tr.eps_d, tr.ebar_d, g_d)

    def flush(self, s: LayerLearnerState, t_end: int) -> None:
        """End of sample after ``t_end`` steps: the recurrent train's step t_end (z^(t_end - 1)) goes
        into the ring, then the pending traces and the last ``K`` lagged delay steps are summed."""
        ls = self.net.state.layers[self.index]
        if ls.hist_rec.shape[0] and t_end > 0:
            ls.hist_rec[t_end % ls.hist_rec.shape[0]] = self.net.layer_spikes(self.index)
        if self.chunked:
            if t_end > 0:
                self.advance(s, t_end, final=True)
        else:
            for tau in range(max(0, t_end - self.lag_steps), t_end):
                self.delay_step(s, tau, t_end - 1, t_end)
        self.sync_grads()


def input_trains(x: np.ndarray, dtype) -> np.ndarray:
    """(T, n_in, B) view of a sample's counts x (T, B, n_in), laid out as the input ring; cast to ``dtype``
    unless the kernels multiply its items exactly in ``dtype`` already (one-byte counts, or ``dtype``)."""
    if x.dtype != dtype and x.dtype.itemsize > 1:
        x = x.astype(dtype)
    return x.transpose(0, 2, 1)


class ThreeFactorLearner:
    """Online three-factor learning of weights, delays and readout of a :class:`Network`.

    Parameters
    ----------
    net : Network, the network to train (its rings are enlarged for the Gaussian window)
    config : LearningConfig
    seed : int, seeds the random feedback matrices
    chunk_steps : int, soft reset only: the synapse traces are summed once per this many steps
        (kernels/chunk.py); any value gives the same gradients up to rounding.  Larger chunks
        read and write each trace less often but hold more history (fixed, whatever T).

    Examples
    --------
    >>> learner = ThreeFactorLearner(net, LearningConfig())
    >>> grads = learner.sample_gradients(x, labels)   # accumulate-mode gradients of one batch
    >>> learner.apply(grads)                          # one optimizer step
    """

    def __init__(self, net: Network, config: LearningConfig | None = None, seed: int = 0, chunk_steps: int = 128):
        if not isinstance(net, Network):
            raise TypeError(f"net must be a Network, got {type(net).__name__}")
        config = LearningConfig() if config is None else config
        if not isinstance(config, LearningConfig):
            raise TypeError(f"config must be a LearningConfig, got {type(config).__name__}")
        self.net = net
        self.config = config
        self.seed = int(seed)
        if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
            raise OnlineDelayError(f"chunk_steps={chunk_steps!r} is not allowed; expected an integer >= 1")
        self.chunk_steps = int(chunk_steps)
        self.lag_steps = config.half_width_steps
        max_delay = net.config.max_delay_steps
        net.reserve_history(max(max_delay + 2 * self.lag_steps + 1, self.chunk_steps + self.lag_steps + 1))
        self.n_hist = KC.history_slots(self.chunk_steps, max_delay, self.lag_steps)
        self.n_buf = self.chunk_steps + self.lag_steps
        n_out = net.config.n_outputs
        self.feedback = []                # per layer: a fixed random (n_out, N) matrix, or None (symmetric)
        for l, (spec, offset) in enumerate(zip(net.layer_specs, net.readout_offsets)):
            if config.feedback == "random" or offset is None:
                rng = np.random.default_rng(self.seed if l == 0 else [self.seed, l])
                self.feedback.append(rng.normal(0.0, 1.0 / np.sqrt(spec.n_neurons),
                                                size=(n_out, spec.n_neurons)).astype(net.dtype))
            else:
                self.feedback.append(None)
        self.rules = tuple(_LayerRule(self, l, spec, fb) for l, (spec, fb) in
                           enumerate(zip(net.layer_specs, self.feedback)))
        p = net.params
        self.grads = Gradients(tuple(rule.grads for rule in self.rules), np.zeros_like(p.w_out),
                               np.zeros_like(p.b_out))
        self.optimizer = Optimizer(config, self.grads)
        self.clipped_delays = 0           # delays clipped to [0, max_delay_steps] since the learner was made
        self.state = self._allocate(net.batch_size)
        self.segment_records = None       # run_sample's per-segment records (segments.py)
        self.loss_sum = 0.0               # weighted cross-entropy accumulated since reset

    # -- state --------------------------------------------------------------------------------
    def _allocate(self, batch: int) -> LearnerState:
        dt, c = self.net.dtype, self.net.config
        return LearnerState(
            probs=aligned_zeros((c.n_outputs, batch), dt), delta=aligned_zeros((c.n_outputs, batch), dt),
            zbar=aligned_zeros((c.n_readout_inputs, batch), dt), zbar_t=aligned_zeros((batch, c.n_readout_inputs), dt),
            bbar=aligned_zeros(batch, dt),
            layers=tuple(rule.allocate(batch) for rule in self.rules),
            t=aligned_zeros(1, np.int64), flushed=aligned_zeros(1, np.int64))

    def reset(self) -> None:
        """Zero the per-sample learning state (call with ``net.reset()``); gradients are kept."""
        if self.state.zbar.shape[1] != self.net.batch_size:
            self.state = self._allocate(self.net.batch_size)
        else:
            for name, value in zip(self.state._fields, self.state):
                if name != "layers":
                    fill_tuple((value,), 0)
            for rule, ls in zip(self.rules, self.state.layers):
                rule.reset(ls)
        self.loss_sum = 0.0

    def zero_grad(self) -> None:
        """Zero the accumulated gradients (pending chunk steps are summed first, then zeroed too)."""
        self._catch_up()
        fill_tuple(self.grads, 0)
        for rule in self.rules:
            rule.zero_grad()

    # -- per-step rule --------------------------------------------------------------------------
    def step(self, labels, loss_weight: float | None = None) -> None:
        """Learn from the step the network has just taken.

        labels : int or (B,) ints in [0, n_outputs), or -1 for "no target at this step"
        loss_weight : weight w^t of this step's cross-entropy (default 1 / B)
        """
        net, s = self.net, self.state
        if int(s.t[0]) != net.t - 1:
            raise RuntimeError(f"learner is at step {int(s.t[0])} but the network has taken {net.t} steps; "
                               "call learner.step() exactly once after every net.step() and reset both together")
        lab = self._check_labels(labels)
        w = 1.0 / net.batch_size if loss_weight is None else float(loss_weight)
        self._step(lab, w)

    def _step(self, labels: np.ndarray, loss_weight: float) -> None:
        net, c, s = self.net, self.net.config, self.state
        p = net.params
        t = int(s.t[0])
        self.loss_sum += K.readout_error(net.state.y, labels, loss_weight, s.probs, s.delta)
        for rule, ls, offset in zip(self.rules, s.layers, net.readout_offsets):
            block = None if offset is None else p.w_out[:, offset:offset + rule.spec.n_neurons]
            rule.step(ls, t, s.delta, block)
        K.readout_traces(net.readout_spikes(), s.delta, c.decay_out, c.readout_gain, s.zbar, s.bbar,
                         self.grads.w_out, self.grads.b_out, s.zbar_t)
        s.t[0] = t + 1

    def _catch_up(self) -> None:
        """Soft reset, mid-sample: sum every pending weight step (delays stay K behind), so the
        gradients are those of the steps taken, as the per-step rule has them."""
        s = self.state
        if not s.flushed[0]:
            for rule, ls in zip(self.rules, s.layers):
                rule.catch_up(ls, int(s.t[0]))

    def flush(self) -> None:
        """End of sample: finish the pending traces and the last ``K`` lagged delay steps (idempotent).

        The gradients are then complete; the traces themselves are spent (the last chunk does not
        update them), so ``reset()`` comes before the next sample, as always.
        """
        s = self.state
        if s.flushed[0]:
            return
        for rule, ls in zip(self.rules, s.layers):
            rule.flush(ls, int(s.t[0]))
        s.flushed[0] = 1

    # -- whole samples --------------------------------------------------------------------------
    def _loss_weights(self, n_steps: int, batch: int) -> np.ndarray:
        start = self.config.loss_start_step
        if start >= n_steps:
            raise OnlineDelayError(f"loss_start_step={start} leaves no step of a {n_steps}-step sample "
                                   "in the loss window")
        w = np.zeros(n_steps)
        w[start:] = 1.0 / ((n_steps - start) * batch)
        return w

    def run_sample(self, inputs, labels, update: bool = False) -> dict:
        """Reset, run a whole sample (or batch) with learning, flush; optionally update.

        inputs : (T, n_inputs) or (T, B, n_inputs) spike counts; labels : int or (B,) ints.
        With ``update=True``, parameters change as the config says: every n steps
        (``online``) or once at the end (``accumulate``).  Without it, gradients are only
        accumulated in ``self.grads``.

        Returns {"loss": mean CE, "correct": (B,) bool by the prediction rule (softmax summed over
        the steps from ``loss_start_step``, :mod:`onlinedelay.evaluate`), "spikes": hidden spike
        count (all layers)}.
        """
        net = self.net
        x = net.check_sequence(inputs)
        n_steps, batch = x.shape[0], x.shape[1]
        net.reset(batch)
        self.reset()
        lab = self._check_labels(labels)
        weights = self._loss_weights(n_steps, batch)
        start = self.config.loss_start_step
        online = update and self.config.update == "online"
        every = self.config.update_every_steps
        votes = np.zeros((net.config.n_outputs, batch))
        spikes = 0.0
        if self._by_segments(online):
            try:
                with blas_threads(1):               # once per sample: the products' own limits nest at no cost
                    spikes = self._run_segments(x, lab, weights, online, votes)
                    self.flush()
            finally:                                # the flush has read the sample's input, or failed
                self.rules[0].input_trains = None
        else:
            for t in range(n_steps):
                net.advance(x[t].T)
                self._step(lab, weights[t])
                if t >= start:
                    votes += self.state.probs           # softmax(y) of this step, from readout_error
                spikes += float(net.state.z.sum())
                if online and (t + 1) % every == 0:
                    self.apply()
        self.flush()
        if update:
            self.apply()
        return {"loss": self.loss_sum, "correct": vote(votes) == lab, "spikes": spikes}

    def _by_segments(self, online: bool) -> bool:
        """Whether :meth:`run_sample` advances segment by segment (segments.py): one layer without
        recurrence, soft reset, and online updates at most every MIN_SEGMENT_STEPS steps."""
        return (supports_segments(self.net) and self.rules[0].chunked
                and (not online or self.config.update_every_steps >= MIN_SEGMENT_STEPS))

    def _run_segments(self, x, labels, loss_weights, online: bool, votes) -> float:
        """The steps of :meth:`run_sample` a segment at a time: the network records each segment,
        then one kernel call does the learner's per-step work (kernels/sample.learn_segment).
        Segments end where the per-step rule would sum a chunk or apply an update.  Returns the spike count."""
        net, rule, s, lc = self.net, self.rules[0], self.state, self.config
        ls, c, spec = s.layers[0], net.config, rule.spec
        every, n_steps = lc.update_every_steps, x.shape[0]
        spikes, t = 0.0, 0
        # one chunk (rule._by_spike): the flush reads x itself, the ring needs only the steps read after it
        whole = not online and n_steps < min(net.n_slots, self.n_buf)
        ring_first = n_steps - ring_tail(net, 2 * self.lag_steps) if whole else 0
        rule.input_trains = input_trains(x, net.dtype) if whole else None
        while t < n_steps:
            end = min(n_steps, int(ls.cursor[1]) + self.n_buf, t + SEGMENT_STEPS)
            if online:
                end = min(end, (t // every + 1) * every)
            n, row = end - t, t - int(ls.cursor[1])
            d_rec, zbar0, bbar0, carry, prod, sums = self._segment_buffers(n)
            zbar0[...], bbar0[...] = s.zbar, s.bbar          # the readout traces before the segment
            rec = net.segments.advance(x, n, pseudo=(c.surrogate_gamma, ls.psi_buf[row:row + n], s.zbar),
                                       ring_first=ring_first)
            loss = build(KS, "learn_segment", sums.shape[0] > 1)(
                t, n, rec.y, labels, loss_weights, lc.loss_start_step, c.decay_out, s.probs, s.delta, s.bbar, d_rec,
                votes, sums)
            # the readout gradients and the learning signal L = B^T delta: matrix products per segment
            feedback = net.params.w_out if rule.feedback is None else rule.feedback
            with blas_threads(1):                   # see dense.py: BLAS threads fight numba's (2 BLAS threads: no faster)
                KR.readout_gradients(d_rec, rec.z, zbar0 if t > 0 else zbar0[:0], bbar0, c.decay_out,   # 0 at t = 0
                                     c.readout_gain, carry, prod, self.grads.w_out, self.grads.b_out)
                np.matmul(feedback.T, d_rec, out=ls.signal_buf[row:row + n])
            self.loss_sum += loss
            spikes += rec.spikes
            s.t[0] = end
            if end - int(ls.cursor[1]) >= self.n_buf:    # the chunk buffer is full
                rule.advance(ls, end, final=False)
            if online and end % every == 0:
                self.apply()
            t = end
        return spikes

    def _segment_buffers(self, n: int):
        """Reused buffers of an ``n``-step segment: delta records (n, n_out, B), the readout traces before it
        (zbar (N, B), bbar (B,)), the scratch of kernels/readout.readout_gradients (carries (n, B, n_out),
        products (n, N, n_out)) and learn_segment's (P,) sums (one per part of the batch)."""
        c, batch, dt = self.net.config, self.net.batch_size, self.net.dtype
        parts = min(self.rules[0].parts(), batch)
        if self.segment_records is None or self.segment_records[0].shape[2] != batch \
                or self.segment_records[5].shape[0] != parts:
            self.segment_records = (aligned_zeros((SEGMENT_STEPS, c.n_outputs, batch), dt),
                                    aligned_zeros((c.n_readout_inputs, batch), dt), aligned_zeros(batch, dt),
                                    aligned_zeros((SEGMENT_STEPS, batch, c.n_outputs), dt),
                                    aligned_zeros((SEGMENT_STEPS if batch > 1 else 0, c.n_readout_inputs,
                                                   c.n_outputs), dt), np.zeros(parts))
        d_rec, zbar0, bbar0, carry, prod, sums = self.segment_records
        return d_rec[:n], zbar0, bbar0, carry[:n], prod[:n], sums

    def sample_gradients(self, inputs, labels) -> Gradients:
        """Accumulate-mode gradients of one sample/batch (parameters unchanged); returns a copy."""
        self.zero_grad()
        self.run_sample(inputs, labels, update=False)
        return copy_tuple(self.grads)

    # -- updates ----------------------------------------------------------------------------------
    def apply(self, grads: Gradients | None = None) -> int:
        """One optimizer step with ``grads`` (default: the accumulated ones), then zero them.

        The delay penalty ``2 delay_l2 d`` is added to the delay gradients first.  Afterwards conv
        taps are copied into their synapses, quantized projections re-derive their effective
        weights and delays from the shadow arrays (quantize.py); delays are clipped to
        [0, max_delay_steps] and re-rounded.  Returns the number of delays clipped by this step
        (``clipped_delays`` keeps the running total).
        """
        self._catch_up()
        if grads is not None and grads is not self.grads:
            assign_tuple(self.grads, grads)       # final as given: no per-synapse sums to add
        else:
            for rule in self.rules:
                rule.sync_grads()
        p, lc = self.net.params, self.config
        for (_, _, proj, spec), g in zip(self.net.projection_specs(), (g for layer in self.grads.layers for g in layer)):
            Q.add_delay_l2(proj, spec, g)
        self.optimizer.step(p, self.grads)
        clipped = self.net.requantize()
        moved_delays = lc.learn_delays and lc.lr_delays > 0
        clipped += self.net.parameters_changed(delays=moved_delays)   # spikes in flight are re-read
        self.clipped_delays += clipped
        self.zero_grad()
        return clipped

    # -- snapshots ----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of traces, accumulated gradients and optimizer state (pair with ``net.snapshot()``)."""
        return {"state": copy_tuple(self.state), "grads": copy_tuple(self.grads),
                "grad_syn": [g.copy() for rule in self.rules for g in rule.grad_w_syn + rule.grad_d_syn],
                "loss_sum": self.loss_sum, "clipped_delays": self.clipped_delays,
                "optimizer": self.optimizer.state_dict(),
                "feedback": [None if f is None else f.copy() for f in self.feedback]}

    def restore(self, snap: dict) -> None:
        """Restore a :meth:`snapshot` in place (same network shapes and learning config)."""
        if snap["state"].zbar.shape[1] != self.state.zbar.shape[1]:
            self.state = self._allocate(snap["state"].zbar.shape[1])
        assign_tuple(self.state, snap["state"])
        for rule in self.rules:
            rule.traces_touched = True
        assign_tuple(self.grads, snap["grads"])
        for g, a in zip((g for rule in self.rules for g in rule.grad_w_syn + rule.grad_d_syn), snap["grad_syn"]):
            g[...] = a
        self.loss_sum = snap["loss_sum"]
        self.clipped_delays = snap["clipped_delays"]
        self.optimizer.load_state_dict(snap["optimizer"])
        for f, a in zip(self.feedback, snap["feedback"]):
            if f is not None and a is not None:
                f[...] = a
        for rule in self.rules:
            rule.taps_version = -1        # taps are derived from the (restored) delays

    # -- validation -------------------------------------------------------------------------------
    def _check_labels(self, labels) -> np.ndarray:
        n_out, batch = self.net.config.n_outputs, self.net.batch_size
        arr = np.asarray(labels)
        if arr.ndim == 0:
            arr = np.full(batch, arr)
        if arr.shape != (batch,) or arr.dtype.kind not in "iu":
            raise OnlineDelayError(f"labels {labels!r} must be an int or {batch} ints in [0, {n_out}) (or -1)")
        if ((arr < -1) | (arr >= n_out)).any():
            bad = arr[(arr < -1) | (arr >= n_out)][0]
            raise OnlineDelayError(f"label {int(bad)} is outside [0, {n_out}) (use -1 for no target)")
        return arr.astype(np.int64)


class Optimizer:
    """SGD or Adam with separate learning rates for weights, delays and readout.

    The learned arrays are taken in the order of :meth:`Parameters.learned`; Adam keeps one pair of
    moments per array (``m[i]``, ``v[i]``)."""

    def __init__(self, config: LearningConfig, like: Gradients):
        self.config = config
        self.steps = 0
        self.m = tuple(np.zeros(g.size, g.dtype) for _, g in like.learned()) if config.optimizer == "adam" else ()
        self.v = tuple(np.zeros(g.size, g.dtype) for _, g in like.learned()) if config.optimizer == "adam" else ()

    def rates(self) -> dict:
        lc = self.config
        return {"weights": lc.lr_weights if lc.learn_weights else 0.0,
                "delays": lc.lr_delays if lc.learn_delays else 0.0,
                "readout": lc.lr_readout if lc.learn_readout else 0.0}

    def step(self, params, grads) -> None:
        self.steps += 1
        lc, rates = self.config, self.rates()
        for i, ((_, param, group), (_, grad)) in enumerate(zip(params.learned(), grads.learned())):
            rate = rates[group]
            if rate == 0.0 or param.size == 0:
                continue
            flat, g = param.reshape(-1), grad.reshape(-1)
            if lc.optimizer == "adam":
                K.adam_step(flat, g, self.m[i], self.v[i], rate, lc.adam_beta1, lc.adam_beta2,
                            lc.adam_eps, self.steps)
            else:
                K.sgd_step(flat, g, rate)

    def state_dict(self) -> dict:
        """Copies of the step count and the Adam moments."""
        return {"steps": self.steps, "m": [a.copy() for a in self.m], "v": [a.copy() for a in self.v]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (moment shapes must match)."""
        if len(state["m"]) != len(self.m) or len(state["v"]) != len(self.v):
            raise OnlineDelayError(f"optimizer state holds {len(state['m'])} moment arrays; "
                                   f"this model needs {len(self.m)}")
        for dst, src in zip(self.m + self.v, list(state["m"]) + list(state["v"])):
            if dst.shape != np.shape(src):
                raise OnlineDelayError(f"optimizer moment of shape {np.shape(src)} does not fit {dst.shape}")
            dst[...] = src
        self.steps = int(state["steps"])
