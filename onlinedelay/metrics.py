"""NeuroBench-style metrics of a network on a split: footprint, parameters, sparsity, operations, delay costs.

The definitions follow NeuroBench's code (NeuroBench/neurobench, ``neurobench/metrics/``), applied
to our connection layers: every projection (``layer<l>.feedforward`` / ``layer<l>.recurrent``, as
the dense (n_post, n_pre) weight matrix a PyTorch ``Linear`` would hold, or a conv projection's k
kernel taps as a ``Conv1d`` holds them) and the ``readout`` (n_out, n_readout_inputs).

Static (the model):

* **footprint** (``static/footprint.py``: bytes of every parameter and buffer, numel x element size).
  ``bytes``/``bits``: the learned parameters at their stored precision (:func:`quantize.footprint_bits`:
  float32 weights 32 bit, k-bit / ternary weights their bits plus scales, float delays 32 bit,
  quantized delays their grid bits plus the offset, the float32 readout and bias), one weight and
  one delay per stored synapse (CSR), no zeros stored.  ``inference_bits``: the same with float
  delays counted as the integer steps the forward pass reads, ceil(log2(max_delay_steps + 1))
  bits each.  ``index_bytes``: the int32 CSR structure the model file stores (indptr, pre, delay
  and tap indices).  ``dense_bytes``: what NeuroBench's Footprint gives for a PyTorch twin of the
  network: dense float32 weight matrices (zeros included; conv: the taps), float32 delay tensors
  ((n_post, n_pre) synaptic, (n_pre,) axonal), readout weights and bias, and the neuron constants
  a PyTorch model registers as buffers (decay, threshold, input scale per layer; decay and input
  scale of the readout).
* **parameter_count** (``static/parameter_count.py``: numel of every parameter): learnable weights
  and delays of every projection, readout weights and bias (:func:`projections.parameter_counts`).
* **connection_sparsity** (``static/connection_sparsity.py``): zero entries / all entries of the
  dense weight tensors of the connection layers (neuron layers count nothing, biases are not
  counted), rounded to 4 decimals; a missing synapse is a zero of the dense matrix.

Workload (from the real spikes of a run, :func:`measure`; NeuroBench divides by the samples):

* **activation_sparsity** (``workload/activation_sparsity.py``): (all activations - nonzero ones) /
  all activations over every hidden LIF layer's spikes, every step, every sample (the readout is
  a leaky integrator, not a spiking layer).
* **synaptic operations** (``workload/synaptic_operations.py``, ``utils/layers/macs.py``): per
  connection layer and step, inputs and weights are binarised (nonzero -> 1), bias ignored; the
  operations are the (nonzero input, nonzero weight) pairs.  An input that holds only values in
  {-1, 0, 1} is spiking and its operations are ACs, else MACs: the hidden spikes are always ACs;
  the input counts of a step are MACs for a sample whose counts exceed 1 at that step (pooled
  channels), ACs otherwise (NeuroBench decides per forward call of the batch; we decide per
  sample, as NeuroBench does at batch size 1, so the numbers do not depend on the batch).
  ``dense``: inputs and weights all set to one, every entry of every dense matrix (a conv: every
  in-range tap) every step.  Per sample: ``effective_acs``, ``effective_macs``, ``dense``.  A spike
  is counted at the step it is sent (our push pass does its work then), with its nonzero fan-out,
  whatever its delay; recurrent spikes are sent one step later, so a sample's last-step spikes
  cost no recurrent operations (an RLeaky's recurrent Linear reads z^(t-1) the same way).
* **membrane_updates** (``workload/membrane_updates.py``): per hidden layer, every neuron at the
  first step of a sample plus, at each later step, the neurons whose membrane potential changed
  (count_nonzero(v^t - v^(t-1)) on the real trace of ``LayerState.v``), per sample.  With a nonzero
  leak this is about neurons x steps: only a neuron resting at exactly 0 is not updated.

What delays cost (ours, not NeuroBench's):

* **rings**: the forward history ring of every projection (``n_slots`` steps of its presynaptic
  population) and the future-current ring of every layer (``n_slots`` steps of its neurons), in
  values and bytes per sample (the network holds ``max_delay_steps + 1`` slots whatever the
  delays); ``needed_slots``: the largest integer delay of the projection + 1.
* **latency**: the integer delays (steps x ``dt_ms``) over the synapses of the projections with
  delays: mean and max, per projection and over all; ``max_path_ms``: the sum over layers of the
  largest feedforward delay (the most the delays can hold a spike on its way to the readout).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .evaluate import infer
from .projections import parameter_counts
from .quantize import FLOAT_BITS, footprint_bits

_F32_BYTES = 4


class Connection(NamedTuple):
    """One connection layer as NeuroBench sees it."""

    name: str                 # "layer<l>.feedforward", "layer<l>.recurrent" or "readout"
    source: int               # -1: the input; l >= 0: hidden layer l's spikes
    recurrent: bool           # reads the spikes of the step before
    entries: int              # entries of the dense weight tensor ((n_post, n_pre), or a conv's k taps)
    zeros: int                # zero entries of it (missing synapses included)
    dense_ops: int            # operations per step with inputs and weights all ones
    fan_out: np.ndarray       # (n_pre,) int64: nonzero-weight synapses leaving each presynaptic unit


def connections(net) -> list:
    """The connection layers of ``net`` (projections with synapses, then the readout)."""
    out, c = [], net.config
    for l, kind, proj, spec in net.projection_specs():
        if proj.pre.size == 0:
            continue
        n_post = proj.indptr.size - 1
        n_pre = net.layer_specs[l].n_pre if kind == "feedforward" else net.layer_specs[l].n_neurons
        nonzero = proj.weight != 0
        fan = np.bincount(proj.pre, weights=nonzero, minlength=n_pre).astype(np.int64)
        if spec.connectivity == "conv":       # a Conv1d: its taps, applied at every in-range position
            entries, zeros, dense = proj.shared_weight.size, int(np.count_nonzero(proj.shared_weight == 0)), proj.pre.size
        else:
            entries, dense = n_post * n_pre, n_post * n_pre
            zeros = entries - int(np.count_nonzero(nonzero))
        out.append(Connection(f"layer{l + 1}.{kind}", l - 1 if kind == "feedforward" else l, kind == "recurrent",
                              entries, zeros, dense, fan))
    w = net.params.w_out
    offsets = net.readout_offsets
    for l, offset in enumerate(offsets):
        if offset is None:
            continue
        n = net.layer_specs[l].n_neurons
        block = w[:, offset:offset + n]
        out.append(Connection("readout" if c.readout != "all" else f"readout.layer{l + 1}", l, False, block.size,
                              int(np.count_nonzero(block == 0)), block.size,
                              np.count_nonzero(block, axis=0).astype(np.int64)))
    return out


# -- static --------------------------------------------------------------------------------------
def static_metrics(net) -> dict:
    """Footprint, parameter count and connection sparsity of ``net`` (definitions: module docstring)."""
    c = net.config
    fp = footprint_bits(net)
    int_delay_bits = max(1, math.ceil(math.log2(c.max_delay_steps + 1)))
    inference = fp["total_bits"]
    index_bytes = dense_bytes = 0
    for l, kind, proj in net.params.projections():
        if proj.delay.size and not proj.delay_offset.size:     # float delays: integer steps at inference
            inference += (int_delay_bits - FLOAT_BITS) * proj.delay.size
        if proj.pre.size == 0:
            continue
        index_bytes += sum(a.nbytes for a in (proj.indptr, proj.pre, proj.delay_of_syn, proj.pre_of_delay,
                                              proj.weight_of_syn))
        spec = net.layer_specs[l]
        n_post, n_pre = spec.n_neurons, spec.n_pre if kind == "feedforward" else spec.n_neurons
        weights = proj.shared_weight.size if proj.weight_of_syn.size else n_post * n_pre
        mode = getattr(spec, kind).delays
        delays = n_post * n_pre if mode == "synaptic" else (n_pre if mode == "axonal" else 0)
        dense_bytes += _F32_BYTES * (weights + delays)
    buffers = 3 * len(net.layer_specs) + 2
    dense_bytes += _F32_BYTES * (net.params.w_out.size + net.params.b_out.size + buffers)
    conns = connections(net)
    entries = sum(k.entries for k in conns)
    return {"footprint": {"bits": fp["total_bits"], "bytes": fp["total_bits"] / 8, "inference_bits": inference,
                          "inference_bytes": inference / 8, "float32_bits": fp["float_total_bits"],
                          "index_bytes": int(index_bytes), "dense_bytes": int(dense_bytes),
                          "integer_delay_bits": int_delay_bits},
            "parameter_count": int(sum(parameter_counts(net.params).values())),
            "connection_sparsity": round(sum(k.zeros for k in conns) / entries, 4) if entries else 0.0,
            "connection_sparsity_by_layer": {k.name: round(k.zeros / k.entries, 4) for k in conns}}


def delay_costs(net) -> dict:
    """Ring slots, values and bytes per sample, and the delay latency in ms (definitions: module docstring)."""
    dt_ms, itemsize, slots = net.config.dt_ms, net.dtype.itemsize, int(net.n_slots)
    rings, latency, all_delays, path_ms = {}, {}, [], 0.0
    for l, kind, proj in net.params.projections():
        spec = net.layer_specs[l]
        n_pre = spec.n_pre if kind == "feedforward" else spec.n_neurons
        name = f"layer{l + 1}.{kind}"
        if kind == "feedforward" or spec.recurrent is not None:
            needed = int(proj.delay_steps.max()) + 1 if proj.delay_steps.size else 1
            rings[name] = {"slots": slots, "needed_slots": needed, "values": slots * n_pre,
                           "bytes": slots * n_pre * itemsize}
        if proj.delay.size and proj.pre.size:
            ms = proj.delay_steps.astype(np.float64) * dt_ms
            latency[name] = {"mean_ms": float(ms.mean()), "max_ms": float(ms.max()), "synapses": int(ms.size)}
            all_delays.append(ms)
            if kind == "feedforward":
                path_ms += float(ms.max())
    for l, spec in enumerate(net.layer_specs):       # a layer's future currents: as far ahead as its longest delay
        needed = max(r["needed_slots"] for k, r in rings.items() if k.startswith(f"layer{l + 1}."))
        rings[f"layer{l + 1}.future"] = {"slots": slots, "needed_slots": needed, "values": slots * spec.n_neurons,
                                         "bytes": slots * spec.n_neurons * itemsize}
    ms = np.concatenate(all_delays) if all_delays else np.zeros(0)
    return {"rings": rings, "ring_values": sum(r["values"] for r in rings.values()),
            "ring_bytes": sum(r["bytes"] for r in rings.values()),
            "latency": {"mean_ms": float(ms.mean()) if ms.size else 0.0, "max_ms": float(ms.max()) if ms.size else 0.0,
                        "max_path_ms": path_ms, "synapses": int(ms.size), "by_projection": latency}}


# -- workload ------------------------------------------------------------------------------------
class Recorder:
    """Accumulates what the workload metrics need while a split is stepped (:func:`evaluate.infer`'s
    ``observe``): called after every step with (t, x_t (B, n_inputs) counts of that step).

    Per step it costs a few passes over (B, n_inputs) and (sum N, B): binarised input counts (split
    into spiking and graded samples), hidden spike totals and membrane changes.
    """

    def __init__(self, net, n_steps: int):
        self.net, self.n_steps = net, int(n_steps)
        n_in, n_hidden = net.config.n_inputs, net.state.z.shape[0]
        self.input_ac = np.zeros(n_in)          # (n_inputs,) spiking-sample steps with a nonzero count
        self.input_mac = np.zeros(n_in)         # (n_inputs,) the same for graded (count > 1) sample steps
        self.spikes = np.zeros(n_hidden)        # (sum N,) spikes over all steps and samples
        self.last_spikes = np.zeros(n_hidden)   # (sum N,) spikes at the last step of a sample
        self.updates = np.zeros(len(net.layer_specs), np.int64)
        self.n_samples = 0
        self._previous_v = None

    def __call__(self, t: int, x_t) -> None:
        s = self.net.state
        x_t = np.asarray(x_t)
        graded = (x_t > 1).any(axis=1)
        nonzero = x_t > 0
        self.input_ac += nonzero[~graded].sum(axis=0)
        self.input_mac += nonzero[graded].sum(axis=0)
        totals = s.z.sum(axis=1, dtype=np.float64)
        self.spikes += totals
        if t == self.n_steps - 1:
            self.last_spikes += totals
        if t == 0:
            self.n_samples += s.z.shape[1]
            self._previous_v = [ls.v.copy() for ls in s.layers]
            self.updates += [ls.v.size for ls in s.layers]
            return
        for l, (ls, previous) in enumerate(zip(s.layers, self._previous_v)):
            self.updates[l] += np.count_nonzero(ls.v != previous)
            previous[...] = ls.v

    def workload(self) -> dict:
        """Per-sample synaptic operations (total and per connection), activation sparsity, membrane updates."""
        n = max(self.n_samples, 1)
        offsets = np.concatenate([[0], np.cumsum(self.net.config.layer_sizes)]).astype(int)
        by_layer, acs, macs, dense = {}, 0.0, 0.0, 0.0
        for k in connections(self.net):
            if k.source < 0:
                ac, mac = float(self.input_ac @ k.fan_out), float(self.input_mac @ k.fan_out)
            else:
                z = self.spikes[offsets[k.source]:offsets[k.source + 1]]
                if k.recurrent:
                    z = z - self.last_spikes[offsets[k.source]:offsets[k.source + 1]]
                ac, mac = float(z @ k.fan_out), 0.0
            d = float(k.dense_ops) * self.n_steps * self.n_samples
            by_layer[k.name] = {"effective_acs": ac / n, "effective_macs": mac / n, "dense": d / n}
            acs, macs, dense = acs + ac, macs + mac, dense + d
        activations = self.spikes.size * self.n_steps * self.n_samples
        sizes = np.diff(offsets) * self.n_steps * self.n_samples
        return {"n_samples": self.n_samples, "n_steps": self.n_steps,
                "activation_sparsity": 1.0 - float(self.spikes.sum()) / activations if activations else 0.0,
                "activation_sparsity_by_layer": {f"layer{l + 1}": 1.0 - float(self.spikes[a:b].sum()) / size
                                                 for l, (a, b, size) in enumerate(zip(offsets, offsets[1:], sizes))},
                "synaptic_operations": {"effective_acs": acs / n, "effective_macs": macs / n, "dense": dense / n,
                                        "by_layer": by_layer},
                "membrane_updates": float(self.updates.sum()) / n,
                "membrane_updates_by_layer": {f"layer{l + 1}": float(u) / n for l, u in enumerate(self.updates)}}

    def metrics(self) -> dict:
        """Static metrics, the workload and the delay costs in one dict (``eval --json``'s ``metrics``)."""
        return {**static_metrics(self.net), **self.workload(), "delays": delay_costs(self.net)}


def measure(net, x, loss_start_step: int = 0, batch_size: int = 64) -> dict:
    """Step ``net`` over ``x`` ((T, N, n_inputs) counts, an array or a BinnedSplit), ``batch_size``
    samples at a time, and return :meth:`Recorder.metrics` plus ``predictions`` ((N,) int64, the
    prediction rule of :func:`evaluate.predict`)."""
    recorder = Recorder(net, x.shape[0])
    predictions = infer(net, x, loss_start_step, batch_size, observe=recorder)[0]
    return {**recorder.metrics(), "predictions": predictions}


def metrics_summary(m: dict) -> dict:
    """The key metrics of :meth:`Recorder.metrics` as flat numbers (an ablation run's ``result.json``)."""
    ops = m["synaptic_operations"]
    return {"footprint_bits": m["footprint"]["bits"], "inference_footprint_bits": m["footprint"]["inference_bits"],
            "parameter_count": m["parameter_count"], "connection_sparsity": m["connection_sparsity"],
            "activation_sparsity": m["activation_sparsity"], "effective_acs": ops["effective_acs"],
            "effective_macs": ops["effective_macs"], "effective_synops": ops["effective_acs"] + ops["effective_macs"],
            "dense_synops": ops["dense"], "membrane_updates": m["membrane_updates"],
            "ring_bytes": m["delays"]["ring_bytes"], "mean_delay_ms": m["delays"]["latency"]["mean_ms"],
            "max_delay_ms": m["delays"]["latency"]["max_ms"]}


# -- text ----------------------------------------------------------------------------------------
def format_metrics(m: dict) -> str:
    """The metrics table of ``eval``: one line per metric."""
    fp, ops, d = m["footprint"], m["synaptic_operations"], m["delays"]
    lat = d["latency"]
    rows = [
        ("footprint", f"{fp['bytes']:,.0f} bytes ({fp['bits']:,.0f} bits) as stored; {fp['inference_bytes']:,.0f} "
                      f"bytes with {fp['integer_delay_bits']}-bit integer delays; +{fp['index_bytes']:,} bytes of "
                      f"CSR indices; dense float32 twin {fp['dense_bytes']:,} bytes"),
        ("parameters", f"{m['parameter_count']:,}"),
        ("connection sparsity", f"{m['connection_sparsity']:.4f} ("
                                + ", ".join(f"{k} {v:.4f}" for k, v in m["connection_sparsity_by_layer"].items()) + ")"),
        ("activation sparsity", f"{m['activation_sparsity']:.4f}"),
        ("synaptic ops / sample", f"effective ACs {ops['effective_acs']:,.0f}, effective MACs "
                                  f"{ops['effective_macs']:,.0f}, dense {ops['dense']:,.0f}"),
        ("membrane updates / sample", f"{m['membrane_updates']:,.0f}"),
        ("delay rings / sample", f"{d['ring_values']:,} values = {d['ring_bytes']:,} bytes ("
                                 + ", ".join(f"{k} {r['slots']} slots, {r['needed_slots']} needed"
                                             for k, r in d["rings"].items() if not k.endswith(".future")) + ")"),
        ("delay latency", f"mean {lat['mean_ms']:.1f} ms, max {lat['max_ms']:.1f} ms over {lat['synapses']:,} "
                          f"synapses; longest path {lat['max_path_ms']:.1f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    head = (f"metrics (NeuroBench definitions, per sample over {m['n_samples']} samples x {m['n_steps']} steps; "
            "see onlinedelay/metrics.py):")
    return "\n".join([head] + [f"  {name:<{width}}  {value}" for name, value in rows])
