"""Whole segments of a known input sequence: the forward current per input spike, not per step.

``Network.run`` and ``ThreeFactorLearner.run_sample`` know a sample's input in advance.  For a
network of one layer without recurrence they advance it a segment of steps at a time
(kernels/sample.py): the feedforward current of every step of the segment is summed spike by
spike into a ``(n, B, N)`` buffer (each spike adds its unit's weight row at its delay), then one
kernel call runs the LIF layer over the segment.  Inference sums the readout in that kernel as
stepping sums it, so ``Network.run`` equals stepping one step at a time (tests/test_segments.py;
the input current's sums and their order are the push model's).  A learner's segment records its
spikes and the pseudo-derivative of each step (``(n, N, B)``), and its readout is one matrix
product of the spikes (BLAS's order of the sum over the hidden units: equal to stepping up to
rounding, ~10x faster at batch 32).  Segments are at most :data:`SEGMENT_STEPS` long, so memory
does not grow with T.

After a segment the network is where stepping would have left it (the spikes still in flight
are pulled by later steps), so stepping can go on from there.  A caller that reads the sample's
older steps from ``x`` itself (the learner's per-spike flush) may ask for the ring to be written
only from ``ring_first`` on; then the ring holds the last steps only.  While nothing but segments
advanced the network since its reset, the runner knows which ring slots were written, and
:meth:`SegmentRunner.reset_state` zeroes only those (a learner enlarges the rings of 700 -> 256 at
batch 32 to 16 MB; writing and zeroing them were a large share of a training batch).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import csc as KCSC
from .kernels import readout as KR
from .kernels import sample as KS
from .kernels._jit import build
from .dense import blas_threads
from .state import aligned_zeros, fill_tuple

SEGMENT_STEPS = 128       # the longest segment: buffers of SEGMENT_STEPS x B x N per array
PARALLEL_WORK = 1 << 20   # synapses x batch below which the per-spike and chunk kernels run serially


def parallel_parts(net, n_synapses: int) -> int:
    """Parts (threads) a kernel over ``n_synapses`` synapses of ``net`` runs in: 1 below PARALLEL_WORK
    synapse-samples, where waking the threads costs more than they save (docs/benchmarks.md)."""
    return net.threads if net.threads > 1 and n_synapses * net.batch_size >= PARALLEL_WORK else 1


class SegmentRecord(NamedTuple):
    """What a segment of ``n`` steps leaves for the learner: views of reused buffers."""

    y: np.ndarray             # (n, n_out, B) readout after each step
    z: np.ndarray             # (n, N, B) spikes of each step
    spikes: float             # their number


def supports_segments(net) -> bool:
    """True when ``net`` can advance whole segments: one hidden layer without recurrence."""
    return len(net.layer_specs) == 1 and net.layer_specs[0].recurrent is None


def ring_tail(net, extra_steps: int = 0) -> int:
    """The steps at the end of a sample that a segment writes into the input ring: those a step taken
    after it can read (spikes still in flight: the input projection's largest delay, none without
    delays; plus ``extra_steps``, a learner's window).  Writing the ring, and zeroing it at the next
    reset, was ~1 ms of an inference batch (700 inputs, B = 32, 100 steps, all written)."""
    delayed = net.params.layers[0].feedforward.delay.size > 0
    return (net.config.max_delay_steps if delayed else 0) + 1 + extra_steps


class CscDelays:
    """The integer delays of a projection in the CSC order of ``index`` and its unit-row flags
    (kernels/sample.py), re-derived only when the projection's integer delays change."""

    def __init__(self, index):
        self.index = index
        self.seen = self.delay_csc = self.rows = self.offsets = None   # seen: the delays in CSR order

    def refresh(self, proj) -> "CscDelays":
        if self.delay_csc is None:
            self.delay_csc = np.full(self.index.out_syn.size, -1, np.int32)     # no delay is -1: all change
            self.seen = np.full(self.index.out_syn.size, -1, proj.delay_steps.dtype)
        if self.rows is not None and proj.delay.size == 0:
            return self                           # without real delays the integer delays stay 0
        if not KCSC.copy_changes(proj.delay_steps, self.seen) and self.rows is not None:
            return self
        if KCSC.csc_delays(proj.delay_steps, self.index.out_syn, self.delay_csc) or self.rows is None:
            self.rows = KCSC.unit_rows(self.index.out_indptr, self.index.out_post, self.delay_csc)
            self.offsets = KCSC.synapse_offsets(self.index.out_post, self.delay_csc, proj.indptr.size - 1)
        return self


class SegmentRunner:
    """Advances a :class:`~onlinedelay.network.Network` (one layer, no recurrence) segment by segment.

    Buffers are allocated for the network's batch size on first use and reused; the CSC delays and
    unit-row flags of the input projection are re-derived whenever its integer delays change.
    """

    def __init__(self, net):
        self.net = net
        self.buffers = None
        self.csc = {}               # (layer, kind) -> CscDelays (csc_delays)
        self.clean = None           # the network state as its last reset left it (all zero), if unchanged since
        self.written = None         # (state, first step written, t after the last segment) since that reset

    def csc_delays(self, layer: int, kind: int) -> CscDelays:
        """The :class:`CscDelays` of projection ``kind`` (0 feedforward, 1 recurrent) of ``layer`` of the
        network, over its push's CSC view, fresh: shared by the segments and the learners, so that new
        integer delays are re-derived once per change."""
        index = self.net.event_index(layer, kind)
        csc = self.csc.get((layer, kind))
        if csc is None or csc.index is not index:
            csc = self.csc[(layer, kind)] = CscDelays(index)
        return csc.refresh(self.net.params.layers[layer][kind])

    def forget(self) -> None:
        """The state was assigned or replaced: the next reset zeroes every ring."""
        self.clean = self.written = None

    def reset_state(self) -> None:
        """Zero the network's state (``Network.reset``).  If only segments advanced it since the last
        reset, only the ring slots they wrote are zeroed (the future rings stay zero: nothing is pushed)."""
        net = self.net
        record, self.written, self.clean = self.written, None, net.state
        if record is None or record[0] is not net.state or record[2] != net.t:
            fill_tuple(net.state, 0)
            return
        s, (lo, hi) = net.state, record[1:]
        ls = s.layers[0]
        for name, value in zip(ls._fields, ls):
            if name not in ("hist_ff", "future"):
                value[...] = 0
        if hi - lo >= ls.hist_ff.shape[0]:
            ls.hist_ff[...] = 0.0
        else:
            for t in range(lo, hi):
                ls.hist_ff[t % ls.hist_ff.shape[0]] = 0.0
        for value in (s.z, s.y, s.t):
            value[...] = 0

    def _allocate(self, n_batch: int, learner: bool) -> None:
        net = self.net
        spec, dt = net.layer_specs[0], net.dtype
        n_post, n_rec = spec.n_neurons, SEGMENT_STEPS if learner else 0
        parts = parallel_parts(net, net.params.layers[0].feedforward.pre.size)
        self.buffers = {
            "batch": n_batch, "learner": learner,
            "cur": aligned_zeros((SEGMENT_STEPS, n_batch, n_post), dt),
            "parts": parts,
            "units": aligned_zeros((parts, net.config.n_inputs), np.int32), "counts": aligned_zeros((parts, 8), dt),
            "padded": aligned_zeros((parts, (SEGMENT_STEPS + 2 * net.config.max_delay_steps) * n_post), dt),
            "y": aligned_zeros((SEGMENT_STEPS, net.config.n_outputs, n_batch), dt),
            "z": aligned_zeros((n_rec, n_post, n_batch), dt)}     # a learner's spikes

    def _index(self):
        """The input projection's CSC index and its :class:`CscDelays` (fresh)."""
        index = self.net.segment_index()
        return index, self.csc_delays(0, 0)

    def advance(self, x: np.ndarray, n: int, pseudo: tuple | None = None, ring_first: int = 0) -> SegmentRecord:
        """Advance ``n`` steps (1 <= n <= SEGMENT_STEPS) from the network's step ``t``.

        x : (T, B, n_in) validated counts of the whole sample since the last reset (steps before
        ``t`` must be those already taken: spikes still in flight are summed again from them);
        pseudo : (gamma, psi, zbar) for a learner: record the spikes and the pseudo-derivative of each
        step's membrane potential (kernels/surrogate.py, with ``gamma``) into psi (n, N, B), advance the
        learner's readout trace zbar (N, B) in place, and sum the readout as one matrix product of the
        spikes (kernels/readout.readout_segment); None: the readout summed in the segment kernel as
        stepping sums it;
        ring_first : the first step written into the input ring (steps before it are left out).
        """
        net = self.net
        first = net.t
        if not 1 <= n <= SEGMENT_STEPS or first + n > x.shape[0]:
            raise ValueError(f"segment of {n} steps from step {first} does not fit a sequence of {x.shape[0]}")
        n_batch = x.shape[1]
        learner = pseudo is not None
        if (self.buffers is None or self.buffers["batch"] != n_batch or learner > self.buffers["learner"]
                or self.buffers["parts"] != parallel_parts(net, net.params.layers[0].feedforward.pre.size)):
            self._allocate(n_batch, learner)
        buf = self.buffers
        index, delays = self._index()
        c, spec = net.config, net.layer_specs[0]
        ls, p = net.state.layers[0], net.params
        cur = buf["cur"][:n]
        parts = buf["parts"]
        build(KS, "spike_current", parts > 1)(x, first, n, c.max_delay_steps, index.out_indptr, delays.offsets,
                                              index.weight_csc, delays.rows, buf["units"], buf["counts"],
                                              buf["padded"], cur)
        gamma, psi_rec, zbar = pseudo if learner else (0.0, buf["z"][:0], net.state.z)
        z_rec = buf["z"][:n if learner else 0]      # inference: the readout in the kernel
        y_rec, decay_out, gain_out = buf["y"][:n], float(c.decay_out), float(c.readout_gain)
        spikes = build(KS, "forward_segment", parts > 1)(
            x, first, n, ring_first, cur, ls.hist_ff, float(spec.decay_mem), float(spec.input_gain), float(spec.threshold),
            spec.reset == "hard", ls.current, ls.v, net.state.z, ls.decay_eff, float(gamma), psi_rec, z_rec, zbar,
            p.w_out, p.b_out, decay_out, gain_out, net.state.y, y_rec, min(parts, n_batch))
        if learner:
            with blas_threads(1):                # see dense.py: BLAS threads fight numba's
                KR.readout_segment(p.w_out, p.b_out, decay_out, gain_out, z_rec, net.state.y, y_rec)
        end = first + n                          # this segment wrote the ring for steps [w0, end)
        w0 = min(end, max(first, ring_first, end - ls.hist_ff.shape[0]))
        prior = (self.clean, w0, 0) if first == 0 else self.written
        known = prior is not None and prior[0] is net.state and (first == 0 or prior[2] == first)
        self.written = (net.state, min(prior[1], w0), end) if known else None
        net.segment_done(first + n)
        return SegmentRecord(y_rec, z_rec, spikes)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        """Advance the whole (reset) sample ``x`` (T, B, n_in); readouts into ``out`` (T, B, n_out)."""
        t, n_steps = self.net.t, x.shape[0]
        ring_first = n_steps - ring_tail(self.net)
        while t < n_steps:
            n = min(SEGMENT_STEPS, n_steps - t)
            rec = self.advance(x, n, ring_first=ring_first)
            out[t:t + n] = rec.y.transpose(0, 2, 1)
            t += n
