"""The three-factor rule: eligibility traces x a top-down learning signal, and the optimizer.

A :class:`ThreeFactorLearner` attaches to a :class:`~onlinedelay.network.Network` and, after
every ``net.step``, runs (spec section 8)::

    delta^t = w^t (softmax(y^t) - onehot(label))           readout error (per-step CE)
    L^t     = B^T delta^t                                  B = Wo (symmetric) or fixed random
    psi^t   = pseudo-derivative of v^t
    weight traces at t:   g_W += L^t ebar_W^t              readout: g_Wo += delta^t zbar^t, g_b += delta^t bbar^t
    delay traces at tau = t - K (lagged, the Gaussian kernel is non-causal): g_D += L^tau ebar_D^tau

``flush()`` runs the last K lagged delay steps at the end of a sample (inputs after the end
count as zero).  With the soft reset the synapse traces are not touched every step: the
per-neuron factors (psi, L) are buffered and each synapse's traces are summed in closed form
once per chunk of steps (kernels/chunk.py); gradients are complete after ``flush()`` and are
brought up to date before every update.  Updates: ``accumulate`` sums gradients over a sample/batch and applies them
once; ``online`` applies them every ``update_every_steps`` steps.  With symmetric feedback,
the reset and recurrent spikes treated as constants, the accumulated gradients equal BPTT of
the Gaussian-relaxed model exactly (tests/test_gradients.py).

Gradient units: E is the per-step cross-entropy averaged over the loss window and the batch.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import kernels as K
from .kernels import chunk as KC
from .config import LearningConfig
from .dense import blas_threads, dense_weight_chunk, is_dense
from .network import Network, refresh_delay_steps
from .state import (Gradients, LearnerState, Projection, ProjectionTraces, assign_tuple, copy_tuple,
                    fill_tuple)


class ThreeFactorLearner:
    """Online three-factor learning of weights, delays and readout of a :class:`Network`.

    Parameters
    ----------
    net : Network, the network to train (its rings are enlarged for the Gaussian window)
    config : LearningConfig
    seed : int, seeds the random feedback matrix
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
            raise ValueError(f"chunk_steps={chunk_steps!r} is not allowed; expected an integer >= 1")
        self.chunk_steps = int(chunk_steps)
        self.lag_steps = config.half_width_steps
        # soft reset: traces are summed per chunk from the presynaptic filtered trace (kernels/chunk.py)
        self._chunked = net.config.reset == "soft"
        net.reserve_history(max(net.config.max_delay_steps + 2 * self.lag_steps + 1,
                                self.chunk_steps + self.lag_steps + 1))
        self._n_hist = KC.history_slots(self.chunk_steps, net.config.max_delay_steps, self.lag_steps)
        self._n_buf = self.chunk_steps + self.lag_steps
        self._delay_modes = (net.config.input_delays, net.config.recurrent_delays)
        projections = (net.params.input, net.params.recurrent)
        # weight traces trail the delay pipeline where a synaptic-delay pass can update them too
        self._fuse = self._chunked and config.learn_delays and any(
            mode == "synaptic" and proj.delay.size for proj, mode in zip(projections, self._delay_modes))
        self._no_trace, self._no_grad = np.zeros((0, 1), net.dtype), np.zeros(0, net.dtype)
        # dense projections whose delays depend on the presynaptic unit only: weight traces by BLAS
        self._dense = tuple(self._chunked and mode != "synaptic" and is_dense(proj, n_pre) for proj, mode, n_pre in
                            zip(projections, self._delay_modes, (net.config.n_inputs, net.config.n_hidden)))
        n_h, n_out = net.config.n_hidden, net.config.n_outputs
        if config.feedback == "random":
            rng = np.random.default_rng(self.seed)
            self.feedback = rng.normal(0.0, 1.0 / np.sqrt(n_h), size=(n_out, n_h)).astype(net.dtype)
        else:
            self.feedback = None          # symmetric: the current readout weights
        p = net.params
        self.grads = Gradients(
            w_in=np.zeros_like(p.input.weight), d_in=np.zeros_like(p.input.delay),
            w_rec=np.zeros_like(p.recurrent.weight), d_rec=np.zeros_like(p.recurrent.delay),
            w_out=np.zeros_like(p.w_out), b_out=np.zeros_like(p.b_out))
        self.optimizer = Optimizer(config, self.grads)
        # delay gradients accumulate per synapse (race-free over rows); axonal ones are summed by unit
        self._grad_d_syn = []
        for proj, g_d, mode in zip((p.input, p.recurrent), (self.grads.d_in, self.grads.d_rec), self._delay_modes):
            if not self._learns_delays(proj):
                self._grad_d_syn.append(np.zeros(0, net.dtype))
            elif mode == "synaptic":
                self._grad_d_syn.append(g_d)                       # one delay per synapse: the same array
            else:
                self._grad_d_syn.append(np.zeros(proj.weight.size, net.dtype))
        n_taps = 2 * self.lag_steps + 1          # Gaussian taps of each delay, refreshed when delays change
        self._taps = [(np.zeros(proj.delay.size, np.int32), np.zeros((proj.delay.size, n_taps), net.dtype))
                      for proj in (p.input, p.recurrent)]
        self._taps_version = -1
        self.state = self._allocate(net.batch_size)
        self.loss_sum = 0.0               # weighted cross-entropy accumulated since reset

    # -- state --------------------------------------------------------------------------------
    def _learns_delays(self, proj: Projection) -> bool:
        return self.config.learn_delays and proj.delay.size > 0

    def _traces(self, proj: Projection, mode: str, batch: int) -> ProjectionTraces:
        """Trace arrays of one projection (see :class:`~onlinedelay.state.ProjectionTraces`)."""
        dt = self.net.dtype
        n_syn = proj.weight.size
        n_d = n_syn if self._learns_delays(proj) else 0
        chunked = self._chunked and n_syn > 0
        dense = self._dense[0 if proj is self.net.params.input else 1]
        hard = 0 if self._chunked else 1
        n_pre = self._n_pre(proj) if chunked else 0
        n_units = proj.delay.size if n_d and mode == "axonal" else 0
        return ProjectionTraces(
            eps_w=np.zeros((n_syn * hard, batch), dt),
            ebar_w=np.zeros((batch, n_syn) if dense else (n_syn, batch), dt),
            eps_d=np.zeros((n_d * hard, batch), dt), ebar_d=np.zeros((n_d, batch), dt),
            xi=np.zeros((n_units * hard, batch), dt),
            xh=np.zeros((n_pre, 2 * self._n_hist, batch), dt),
            xearly=np.zeros((n_pre, self.lag_steps, batch), dt),
            unit_signal=np.zeros((n_units * (1 - hard), self._n_buf, batch), dt),
            unit_edge=np.zeros((n_units * (1 - hard), batch), dt),
            windows=np.zeros(n_pre * self._n_buf * batch if dense else 0, dt))

    def _n_pre(self, proj: Projection) -> int:
        """Presynaptic population size of a projection (input or hidden)."""
        return self.net.config.n_inputs if proj is self.net.params.input else self.net.config.n_hidden

    def _allocate(self, batch: int) -> LearnerState:
        dt, c = self.net.dtype, self.net.config
        n_lag = 0 if self._chunked else self.lag_steps + 1
        n_buf = self._n_buf if self._chunked else 0
        p = self.net.params
        return LearnerState(
            psi_lag=np.zeros((n_lag, c.n_hidden, batch), dt),
            signal_lag=np.zeros((n_lag, c.n_hidden, batch), dt),
            decay_lag=np.zeros((n_lag, c.n_hidden, batch), dt),
            psi_buf=np.zeros((n_buf, c.n_hidden, batch), dt),
            signal_buf=np.zeros((n_buf, c.n_hidden, batch), dt),
            factors=np.zeros((2, c.n_hidden, n_buf, batch), dt),
            factors_b=np.zeros((3, c.n_hidden, batch), dt),
            probs=np.zeros((c.n_outputs, batch), dt), delta=np.zeros((c.n_outputs, batch), dt),
            zbar=np.zeros((c.n_hidden, batch), dt), bbar=np.zeros(batch, dt),
            input=self._traces(p.input, c.input_delays, batch),
            recurrent=self._traces(p.recurrent, c.recurrent_delays, batch),
            t=np.zeros(1, np.int64), flushed=np.zeros(1, np.int64), cursor=np.zeros(3, np.int64))

    def reset(self) -> None:
        """Zero the per-sample learning state (call with ``net.reset()``); gradients are kept."""
        if self.state.zbar.shape[1] != self.net.batch_size:
            self.state = self._allocate(self.net.batch_size)
        else:
            fill_tuple(self.state, 0)
        self.loss_sum = 0.0

    def zero_grad(self) -> None:
        """Zero the accumulated gradients (pending chunk steps are summed first, then zeroed too)."""
        self._catch_up()
        fill_tuple(self.grads, 0)
        for g in self._grad_d_syn:
            g[...] = 0

    def _sync_delay_grads(self) -> None:
        """Sum per-synapse delay gradients into per-unit ones (axonal delays)."""
        for proj, g_syn, g_d in zip((self.net.params.input, self.net.params.recurrent), self._grad_d_syn,
                                    (self.grads.d_in, self.grads.d_rec)):
            if g_syn.size and g_syn is not g_d:
                g_d[:] = np.bincount(proj.delay_of_syn, weights=g_syn, minlength=g_d.size)

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
        p, ns = net.params, net.state
        t = int(s.t[0])
        if self._chunked:
            row = t - int(s.cursor[1])              # buffered from the first pending delay step
            psi, signal = s.psi_buf[row], s.signal_buf[row]
        else:
            slot = t % (self.lag_steps + 1)
            psi, signal, decay = s.psi_lag[slot], s.signal_lag[slot], s.decay_lag[slot]
            decay[...] = ns.decay_eff

        self.loss_sum += K.readout_error(ns.y, labels, loss_weight, s.probs, s.delta)
        K.learning_signal(s.delta, p.w_out if self.feedback is None else self.feedback, signal)
        K.pseudo_derivative(ns.v, c.surrogate_gamma, c.threshold, psi)
        K.readout_traces(ns.z, s.delta, c.decay_out, c.readout_gain, s.zbar, s.bbar,
                         self.grads.w_out, self.grads.b_out)
        s.t[0] = t + 1
        if self._chunked:
            if t + 1 - s.cursor[1] >= self._n_buf:       # the buffer is full
                self._advance(t + 1, final=False)
            return
        kernels = net.synapse_kernels
        for proj, tr, hist, g_w, _ in self._projections():
            kernels.weight_traces(hist, t, proj.indptr, proj.pre, proj.delay_steps, psi, signal, decay,
                                  c.input_gain, c.decay_out, c.readout_gain, tr.eps_w, tr.ebar_w, g_w)
        if t >= self.lag_steps:
            self._delay_step(t - self.lag_steps, t)

    def _projections(self):
        """(projection, traces, ring, weight gradient, per-synapse delay gradient) of each active projection."""
        p, ns, s, g = self.net.params, self.net.state, self.state, self.grads
        out = [(p.input, s.input, ns.hist_in, g.w_in, self._grad_d_syn[0])]
        if self.net.config.recurrent:
            out.append((p.recurrent, s.recurrent, ns.hist_rec, g.w_rec, self._grad_d_syn[1]))
        return out

    def _refresh_taps(self) -> None:
        """Re-tabulate the Gaussian taps if the delays changed since the last time."""
        if self._taps_version != self.net.delay_version:
            for proj, (centre, taps) in zip((self.net.params.input, self.net.params.recurrent), self._taps):
                K.gaussian_taps(proj.delay, self.lag_steps, self.config.sigma_steps, centre, taps)
            self._taps_version = self.net.delay_version

    def _kernel(self, name: str):
        """The serial or parallel build of a chunk kernel, following the network's thread count."""
        return getattr(KC, name + "_parallel" if self.net.threads > 1 else name)

    def _advance(self, t_end: int, final: bool, catch_up: bool = False) -> None:
        """Soft reset: sum the traces of pending steps in one pass per projection (kernels/chunk.py).

        Delay traces run K steps behind: steps [cursor[1], t_end - K), or up to ``t_end`` when
        ``final`` (end of sample: the filtered trace runs on K steps with zero input).  Weight traces
        of steps [cursor[0], .) run up to ``t_end``, except that with learned synaptic delays they
        trail the delays, so one pass over each synapse updates both (the centre tap of the delay
        window is the weight's input); ``catch_up`` (before an update) brings them to ``t_end``.
        """
        c, s = self.net.config, self.state
        w_first, d_first = int(s.cursor[0]), int(s.cursor[1])
        d_end = t_end if final else max(d_first, t_end - self.lag_steps)
        w_end = max(w_first, d_end) if self._fuse and not (final or catch_up) else t_end
        fused = self._fuse and (w_first, w_end) == (d_first, d_end)
        keep = not final                            # after the last chunk the traces are spent
        P, Q = s.factors[0], s.factors[1]
        A, Pa, Qa = s.factors_b[0], s.factors_b[1], s.factors_b[2]
        factors = self._kernel("chunk_factors")
        scale = c.readout_gain * c.input_gain
        x_end = t_end + self.lag_steps if final else t_end
        x_first = int(s.cursor[2])
        for proj, tr, hist, _, _ in self._projections():
            if proj.weight.size:
                self._kernel("filter_history")(hist, x_first, x_end, t_end - 1, c.decay_mem, tr.xh, tr.xearly)
        n = w_end - w_first
        if n > 0 and not fused:
            factors(s.psi_buf, s.signal_buf, w_first - d_first, n, w_first, c.decay_out, scale, c.decay_mem,
                    P, Q, A, Pa, Qa)
            for k, (proj, tr, _, g_w, _) in enumerate(self._projections()):
                self._weight_chunk(k, proj, tr, w_first, n, g_w, keep)
        n = d_end - d_first
        if n > 0 and (fused or any(self._learns_delays(proj) for proj, *_ in self._projections())):
            self._refresh_taps()
            factors(s.psi_buf, s.signal_buf, 0, n, d_first, c.decay_out, scale, c.decay_mem, P, Q, A, Pa, Qa)
            decay_n = c.decay_out ** n
            for k, ((proj, tr, _, g_w, g_d), (centre, taps), mode) in enumerate(
                    zip(self._projections(), self._taps, self._delay_modes)):
                learns = self._learns_delays(proj)
                if learns and mode == "synaptic":
                    ebar_w, grad_w = (tr.ebar_w, g_w) if fused else (self._no_trace, self._no_grad)
                    self._kernel("synaptic_delay_chunk")(tr.xh, tr.xearly, d_first, n, proj.indptr, proj.pre,
                                                         centre, taps, proj.weight, P, Q, s.factors_b, decay_n,
                                                         tr.ebar_d, g_d, ebar_w, grad_w, keep)
                    continue
                if learns:
                    self._kernel("unit_delay_signal")(tr.xh, tr.xearly, d_first, n, proj.pre_of_delay, centre,
                                                      taps, tr.unit_signal, tr.unit_edge)
                    self._kernel("unit_delay_chunk")(tr.unit_signal, tr.unit_edge, n, proj.indptr,
                                                     proj.delay_of_syn, proj.weight, P, Q, A, Pa, Qa, decay_n,
                                                     tr.ebar_d, g_d, keep)
                if fused:
                    self._weight_chunk(k, proj, tr, d_first, n, g_w, keep)
        pending = t_end - d_end                     # buffered steps still pending for the delays
        if d_end > d_first and pending > 0:
            for buf in (s.psi_buf, s.signal_buf):
                buf[:pending] = buf[d_end - d_first:t_end - d_first].copy()
        s.cursor[:] = w_end, d_end, max(x_first, x_end)

    def _weight_chunk(self, k: int, proj: Projection, tr, first: int, n: int, grad, keep: bool) -> None:
        """Weight traces of projection ``k`` over the ``n`` steps from ``first`` (factors already computed);
        ``keep`` False: last chunk of the sample, the traces are not carried on."""
        s, c = self.state, self.net.config
        P, Q, A = s.factors[0], s.factors[1], s.factors_b[0]
        if not self._dense[k]:
            self._kernel("weight_chunk")(tr.xh, first, n, proj.indptr, proj.pre, proj.delay_steps,
                                         P, Q, A, c.decay_out ** n, tr.ebar_w, grad, keep)
            return
        n_pre = tr.xh.shape[0]
        shift = proj.delay_steps[:n_pre]            # row 0 holds every unit in order: its delays
        with blas_threads(1):                       # see dense.py: BLAS threads fight numba's
            dense_weight_chunk(tr.xh, first, n, shift, P, Q, A, c.decay_out ** n,
                               tr.ebar_w.reshape(-1, proj.indptr.size - 1, n_pre), grad, tr.windows,
                               self.net.threads > 1, keep)

    def _catch_up(self) -> None:
        """Soft reset, mid-sample: sum every pending weight step (delays stay K behind), so the
        gradients are those of the steps taken, as the per-step rule has them."""
        s = self.state
        if self._chunked and not s.flushed[0] and int(s.t[0]) > s.cursor[0]:
            self._advance(int(s.t[0]), final=False, catch_up=True)

    def _delay_step(self, tau: int, t_last: int) -> None:
        """Hard reset: delay traces at the lagged step ``tau``; ring entries after ``t_last`` count as zero."""
        c, s = self.net.config, self.state
        slot = tau % (self.lag_steps + 1)
        self._refresh_taps()
        kernels = self.net.synapse_kernels
        psi, signal, decay = s.psi_lag[slot], s.signal_lag[slot], s.decay_lag[slot]
        for (proj, tr, hist, _, g_d), (centre, taps), mode in zip(self._projections(), self._taps,
                                                                   self._delay_modes):
            if not self._learns_delays(proj):
                continue
            if mode == "synaptic":
                kernels.synaptic_delay_traces(hist, tau, t_last, proj.indptr, proj.pre, centre, taps,
                                              proj.weight, psi, signal, decay, c.input_gain, c.decay_out,
                                              c.readout_gain, tr.eps_d, tr.ebar_d, g_d)
            else:
                kernels.xi_from_taps(hist, tau, t_last, proj.pre_of_delay, centre, taps, tr.xi)
                kernels.delay_traces(tr.xi, proj.indptr, proj.delay_of_syn, proj.weight, psi, signal, decay,
                                     c.input_gain, c.decay_out, c.readout_gain, tr.eps_d, tr.ebar_d, g_d)

    def flush(self) -> None:
        """End of sample: finish the pending traces and the last ``K`` lagged delay steps (idempotent).

        The gradients are then complete; the traces themselves are spent (the last chunk does not
        update them), so ``reset()`` comes before the next sample, as always.
        """
        s = self.state
        if s.flushed[0]:
            return
        t_end = int(s.t[0])
        if self._chunked:
            if t_end > 0:
                self._advance(t_end, final=True)
        else:
            for tau in range(max(0, t_end - self.lag_steps), t_end):
                self._delay_step(tau, t_end - 1)
        s.flushed[0] = 1
        self._sync_delay_grads()

    # -- whole samples --------------------------------------------------------------------------
    def _loss_weights(self, n_steps: int, batch: int) -> np.ndarray:
        start = self.config.loss_start_step
        if start >= n_steps:
            raise ValueError(f"loss_start_step={start} leaves no step of a {n_steps}-step sample in the loss window")
        w = np.zeros(n_steps)
        w[start:] = 1.0 / ((n_steps - start) * batch)
        return w

    def run_sample(self, inputs, labels, update: bool = False) -> dict:
        """Reset, run a whole sample (or batch) with learning, flush; optionally update.

        inputs : (T, n_inputs) or (T, B, n_inputs) spike counts; labels : int or (B,) ints.
        With ``update=True``, parameters change as the config says: every n steps
        (``online``) or once at the end (``accumulate``).  Without it, gradients are only
        accumulated in ``self.grads``.

        Returns {"loss": mean CE, "correct": (B,) bool by argmax of summed softmax, "spikes": hidden spike count}.
        """
        net = self.net
        x = net.check_sequence(inputs)
        n_steps, batch = x.shape[0], x.shape[1]
        net.reset(batch)
        self.reset()
        lab = self._check_labels(labels)
        weights = self._loss_weights(n_steps, batch)
        online = update and self.config.update == "online"
        every = self.config.update_every_steps
        votes = np.zeros((net.config.n_outputs, batch))
        spikes = 0.0
        for t in range(n_steps):
            net._step(x[t].T)
            self._step(lab, weights[t])
            votes += self.state.probs
            spikes += float(net.state.z.sum())
            if online and (t + 1) % every == 0:
                self.apply()
        self.flush()
        if update:
            self.apply()
        return {"loss": self.loss_sum, "correct": votes.argmax(axis=0) == lab, "spikes": spikes}

    def sample_gradients(self, inputs, labels) -> Gradients:
        """Accumulate-mode gradients of one sample/batch (parameters unchanged); returns a copy."""
        self.zero_grad()
        self.run_sample(inputs, labels, update=False)
        return copy_tuple(self.grads)

    # -- updates ----------------------------------------------------------------------------------
    def apply(self, grads: Gradients | None = None) -> None:
        """One optimizer step with ``grads`` (default: the accumulated ones), then zero them.

        Delays are clipped to [0, max_delay_steps] and re-rounded after the step.
        """
        self._catch_up()
        if grads is not None and grads is not self.grads:
            assign_tuple(self.grads, grads)       # final as given: no per-synapse sums to add
        else:
            self._sync_delay_grads()
        p, lc = self.net.params, self.config
        self.optimizer.step(p, self.grads)
        self.net.parameters_changed()       # weights (and delays) changed: spikes in flight are re-read
        clipped = 0
        if lc.learn_delays and lc.lr_delays > 0:
            for proj in (p.input, p.recurrent):
                clipped += refresh_delay_steps(proj, self.net.config.max_delay_steps)
            self.net.delay_version += 1
        if clipped and not self.optimizer.warned_clip:
            self.optimizer.warned_clip = True
            warnings.warn(f"{clipped} delays were clipped to [0, {self.net.config.max_delay_steps}] steps "
                          "(warned once)", RuntimeWarning, stacklevel=2)
        self.zero_grad()

    # -- snapshots ----------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Deep copy of traces, accumulated gradients and optimizer state (pair with ``net.snapshot()``)."""
        opt = self.optimizer
        return {"state": copy_tuple(self.state), "grads": copy_tuple(self.grads),
                "grad_d_syn": [g.copy() for g in self._grad_d_syn], "loss_sum": self.loss_sum,
                "opt_steps": opt.steps, "warned_clip": opt.warned_clip,
                "m": [a.copy() for a in getattr(opt, "m", ())], "v": [a.copy() for a in getattr(opt, "v", ())],
                "feedback": None if self.feedback is None else self.feedback.copy()}

    def restore(self, snap: dict) -> None:
        """Restore a :meth:`snapshot` in place (same network shapes and learning config)."""
        if snap["state"].zbar.shape[1] != self.state.zbar.shape[1]:
            self.state = self._allocate(snap["state"].zbar.shape[1])
        assign_tuple(self.state, snap["state"])
        assign_tuple(self.grads, snap["grads"])
        for g, a in zip(self._grad_d_syn, snap["grad_d_syn"]):
            g[...] = a
        self.loss_sum = snap["loss_sum"]
        opt = self.optimizer
        opt.steps, opt.warned_clip = snap["opt_steps"], snap["warned_clip"]
        for key in ("m", "v"):
            for a, b in zip(getattr(opt, key, ()), snap[key]):
                a[...] = b
        if self.feedback is not None and snap["feedback"] is not None:
            self.feedback[...] = snap["feedback"]
        self._taps_version = -1           # taps are derived from the (restored) delays

    # -- validation -------------------------------------------------------------------------------
    def _check_labels(self, labels) -> np.ndarray:
        n_out, batch = self.net.config.n_outputs, self.net.batch_size
        arr = np.asarray(labels)
        if arr.ndim == 0:
            arr = np.full(batch, arr)
        if arr.shape != (batch,) or arr.dtype.kind not in "iu":
            raise ValueError(f"labels {labels!r} must be an int or {batch} ints in [0, {n_out}) (or -1)")
        if ((arr < -1) | (arr >= n_out)).any():
            bad = arr[(arr < -1) | (arr >= n_out)][0]
            raise ValueError(f"label {int(bad)} is outside [0, {n_out}) (use -1 for no target)")
        return arr.astype(np.int64)


class Optimizer:
    """SGD or Adam with separate learning rates for weights, delays and readout."""

    def __init__(self, config: LearningConfig, like: Gradients):
        self.config = config
        self.steps = 0
        self.warned_clip = False
        if config.optimizer == "adam":
            self.m = tuple(np.zeros(g.size, g.dtype) for g in like)
            self.v = tuple(np.zeros(g.size, g.dtype) for g in like)

    def _groups(self, params, grads):
        lc = self.config
        rate_w = lc.lr_weights if lc.learn_weights else 0.0
        rate_d = lc.lr_delays if lc.learn_delays else 0.0
        rate_o = lc.lr_readout if lc.learn_readout else 0.0
        return [(params.input.weight, grads.w_in, rate_w), (params.input.delay, grads.d_in, rate_d),
                (params.recurrent.weight, grads.w_rec, rate_w), (params.recurrent.delay, grads.d_rec, rate_d),
                (params.w_out, grads.w_out, rate_o), (params.b_out, grads.b_out, rate_o)]

    def step(self, params, grads) -> None:
        self.steps += 1
        lc = self.config
        for i, (param, grad, rate) in enumerate(self._groups(params, grads)):
            if rate == 0.0 or param.size == 0:
                continue
            flat, g = param.reshape(-1), grad.reshape(-1)
            if lc.optimizer == "adam":
                K.adam_step(flat, g, self.m[i], self.v[i], rate, lc.adam_beta1, lc.adam_beta2,
                            lc.adam_eps, self.steps)
            else:
                K.sgd_step(flat, g, rate)
