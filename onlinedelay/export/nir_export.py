"""NIR export: a trained model as a graph of the Neuromorphic Intermediate Representation.

The graph (``nir`` >= 1.0.8, the optional extra ``onlinedelay[nir]``), one node per population and
projection (layer ``l`` counts from 1)::

    input (Input, n_inputs)
    layer<l> (LIF, N_l)                 hidden layer l
    layer<l>_ff, layer<l>_rec (Linear)   its feedforward / recurrent projection, (N_l, n_pre) dense
    readout_layer<l> (Affine / Linear)  the readout's columns of layer l (the first one holds the bias)
    readout (LI, n_out) -> output (Output)

Neurons (Euler at ``dt``, ``v_leak = 0``, ``v_reset = 0``): ``v[t] = v[t-1] + dt/tau (v_leak - v[t-1]
+ r I[t])`` gives our ``v[t] = alpha v[t-1] + zeta I[t]`` with ``tau = dt / (1 - alpha)`` and
``r = zeta / (1 - alpha)``; a spike when ``v >= v_threshold`` (= theta).  Reset: "hard" is NIR's
own (v to v_reset = 0 after a spike); "soft" subtracts theta at the next step, after the decay:
``v[t] = alpha v[t-1] + zeta I[t] - theta z[t-1]`` (graph and node metadata ``reset``).  The readout
LI the same with kappa and zeta_o; the bias b enters as the Affine bias ``b / zeta_o``.

Delays (``Delay.delay`` in seconds = integer steps x dt):

* axonal: a ``Delay`` node of shape (n_pre,) on the presynaptic population's output, feeding the
  projection's Linear (``<proj>_delay``); our model learns one delay vector per projection, so
  each axonally delayed projection has its own Delay node;
* synaptic, ``delays_as="branches"``: one branch per integer delay value k present,
  ``Linear(W * [D == k]) -> Delay(k dt)`` (``<proj>_d<k>``, ``<proj>_d<k>_delay``; no Delay for k = 0),
  summed at the target;
* synaptic, ``delays_as="metadata"``: one Linear with the (N, n_pre) int32 matrix of delay steps in
  its metadata ``delay_steps`` (a branch's Linear has the scalar ``branch_delay_steps``: informative only,
  its Delay node applies it).

A recurrent projection closes a cycle layer -> ... -> layer: its input is the layer's spikes of
the previous step (our step order: feedforward inputs of the same step, recurrent ones one step
behind).  The weights are the effective ones the forward pass uses (quantized for a low-bit
model; a conv projection as its dense equivalent with the taps in metadata).  The LIF nodes'
metadata keep what the graph cannot hold, so that our import rebuilds the model exactly: the real
delays (steps), sparse presynaptic indices, conv taps and the quantizers' shadow arrays.
"""

from __future__ import annotations

import json

import numpy as np

from .._version import __version__
from ..atomic import atomic_path
from ..errors import OnlineDelayError, check_choice
from ..projections import dense_mask, dense_weights

FORMAT = "onlinedelay-nir"
FORMAT_VERSION = 1
DELAYS_AS = ("branches", "metadata")
MISSING = "NIR export needs the optional extra: pip install 'onlinedelay[nir]'"
SPIKE_RULE = "z[t] = 1 if v[t] >= v_threshold"
NEURON_RULE = "v[t] = v[t-1] + dt/tau * (v_leak - v[t-1] + r * I[t]) (Euler at dt)"
SOFT_RULE = "soft: v[t] = alpha v[t-1] + zeta I[t] - v_threshold z[t-1]; hard: v is set to v_reset after a spike"


def require_nir():
    """The ``nir`` module, or a one-line :class:`OnlineDelayError` naming the extra to install."""
    try:
        import nir
    except ImportError:
        raise OnlineDelayError(MISSING) from None
    return nir


def neuron_constants(decay: float, gain: float, dt_s: float) -> tuple[float, float]:
    """(tau in s, r) of the NIR node whose Euler step at ``dt_s`` has decay ``decay`` and input gain ``gain``."""
    leak = 1.0 - float(decay)
    return dt_s / leak, float(gain) / leak


def _delay_steps_of_pre(proj, n_pre: int) -> np.ndarray:
    """(n_pre,) int64 steps floor(d + 0.5) of an axonal projection's delays (as the kernels round them)."""
    return np.floor(proj.delay.astype(np.float64) + 0.5).astype(np.int64)[:n_pre]


def _synapse_matrix(proj, n_pre: int) -> np.ndarray:
    """(n_post, n_pre) int32 integer delay of every synapse (0 where there is none)."""
    n_post = proj.indptr.size - 1
    out = np.zeros((n_post, n_pre), np.int32)
    out[np.repeat(np.arange(n_post), np.diff(proj.indptr)), proj.pre] = proj.delay_steps
    return out


def _learned_metadata(kind: str, proj, spec) -> dict:
    """The arrays of ``proj`` the graph cannot hold (non-empty ones only; HDF5 refuses empty chunks)."""
    out = {}
    if spec.connectivity == "sparse":
        out[f"{kind}_pre"] = proj.pre.astype(np.int32)
        out[f"{kind}_indptr"] = proj.indptr.astype(np.int32)
    for field in ("delay", "shared_weight", "weight_shadow", "weight_scale", "delay_shadow", "delay_offset"):
        arr = getattr(proj, field)
        if arr.size:
            out[f"{kind}_{field}"] = np.array(arr)
    return out


class _Builder:
    """Collects nodes and edges; counts the synaptic-delay branches."""

    def __init__(self, nir, dt_s: float, delays_as: str, max_delay_steps: int):
        self.nir, self.dt_s, self.delays_as = nir, dt_s, delays_as
        self.max_delay_steps = max_delay_steps
        self.nodes, self.edges, self.branches = {}, [], 0

    def add(self, name, node, *sources):
        self.nodes[name] = node
        self.edges.extend((src, name) for src in sources)
        return name

    def delay(self, name, steps, source):
        return self.add(name, self.nir.Delay(np.asarray(steps, np.float64) * self.dt_s), source)

    def projection(self, name, source, target, proj, spec, n_pre, layer, kind):
        """The nodes of one projection from ``source`` onto ``target``."""
        nir = self.nir
        weight = dense_weights(proj, n_pre)
        meta = {"projection": f"layer{layer}.{kind}", "connectivity": spec.connectivity, "delays": spec.delays}
        if spec.connectivity == "conv":
            meta.update(kernel_size=int(spec.kernel_size), kernel_taps=np.array(proj.shared_weight))
        if spec.delays == "none":
            self.add(name, nir.Linear(weight, metadata=meta), source)
            self.edges.append((name, target))
        elif spec.delays == "axonal":
            delayed = self.delay(f"{name}_delay", _delay_steps_of_pre(proj, n_pre), source)
            self.add(name, nir.Linear(weight, metadata=meta), delayed)
            self.edges.append((name, target))
        elif self.delays_as == "metadata":
            meta["delay_steps"] = _synapse_matrix(proj, n_pre)
            self.add(name, nir.Linear(weight, metadata=meta), source)
            self.edges.append((name, target))
        else:
            steps, mask = _synapse_matrix(proj, n_pre), dense_mask(proj, n_pre)
            for k in np.unique(steps[mask]):
                branch = f"{name}_d{int(k)}"
                part = np.where(mask & (steps == k), weight, weight.dtype.type(0))
                self.add(branch, nir.Linear(part, metadata=dict(meta, branch_delay_steps=int(k))), source)
                end = branch if k == 0 else self.delay(f"{branch}_delay", np.full(weight.shape[0], int(k)), branch)
                self.edges.append((end, target))
                self.branches += 1


def _unwrap(model):
    """(Network, class names or None) of a Network or a LoadedModel."""
    net = getattr(model, "net", model)
    if not hasattr(net, "layer_specs") or not hasattr(net, "params"):
        raise OnlineDelayError(f"cannot export a {type(model).__name__}; give a Network or a loaded model")
    return net, getattr(model, "class_names", None)


def to_nir(model, delays_as: str = "branches"):
    """A ``nir.NIRGraph`` of ``model`` (a Network or :class:`~onlinedelay.io.LoadedModel`).

    ``delays_as``: "branches" (synaptic delays as Linear -> Delay branches, one per delay value) or
    "metadata" (one Linear per projection, delay matrix in its metadata).  The graph metadata holds
    the discretisation (``dt`` in s), reset, delay unit, the configuration and ``n_delay_branches``.
    """
    nir = require_nir()
    check_choice("delays_as", delays_as, DELAYS_AS)
    net, names = _unwrap(model)
    c = net.config
    dt_s = c.dt_ms / 1000.0
    b = _Builder(nir, dt_s, delays_as, c.max_delay_steps)
    b.add("input", nir.Input(np.array([c.n_inputs])))
    source = "input"
    for spec, lp in zip(net.layer_specs, net.params.layers):
        layer = f"layer{spec.index + 1}"
        tau, r = neuron_constants(spec.decay_mem, spec.input_gain, dt_s)
        n = spec.n_neurons
        meta = {"layer": spec.index + 1, "reset": spec.reset, "alpha": float(spec.decay_mem),
                "zeta": float(spec.input_gain), "tau_mem_ms": float(spec.tau_mem_ms)}
        meta.update(_learned_metadata("feedforward", lp.feedforward, spec.feedforward))
        if spec.recurrent is not None:
            meta.update(_learned_metadata("recurrent", lp.recurrent, spec.recurrent))
        b.add(layer, nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.zeros(n),
                             v_threshold=np.full(n, float(spec.threshold)), v_reset=np.zeros(n), metadata=meta))
        b.projection(f"{layer}_ff", source, layer, lp.feedforward, spec.feedforward, spec.n_pre, spec.index + 1,
                     "feedforward")
        if spec.recurrent is not None:
            b.projection(f"{layer}_rec", layer, layer, lp.recurrent, spec.recurrent, n, spec.index + 1, "recurrent")
        source = layer
    _readout(b, net, dt_s)
    metadata = _graph_metadata(net, names, delays_as, b.branches)
    return nir.NIRGraph(b.nodes, b.edges, metadata=metadata)


def _readout(b: _Builder, net, dt_s: float) -> None:
    """readout_layer<l> (Affine for the first, with the bias; Linear for the others) -> readout (LI) -> output."""
    nir, c, p = b.nir, net.config, net.params
    kappa, zeta_o = float(c.decay_out), float(c.readout_gain)
    tau, r = neuron_constants(kappa, zeta_o, dt_s)
    n_out = c.n_outputs
    b.add("readout", nir.LI(tau=np.full(n_out, tau), r=np.full(n_out, r), v_leak=np.zeros(n_out),
                            metadata={"kappa": kappa, "zeta": zeta_o, "tau_out_ms": float(c.tau_out_ms)}))
    first = True
    for l, offset in enumerate(net.readout_offsets):
        if offset is None:
            continue
        n = net.layer_specs[l].n_neurons
        weight = np.array(p.w_out[:, offset:offset + n])
        name = f"readout_layer{l + 1}"
        if first:
            bias = p.b_out.astype(np.float64) / zeta_o        # zeta_o (b / zeta_o) rounds back to b exactly
            b.add(name, nir.Affine(weight, bias, metadata={"columns": offset}), f"layer{l + 1}")
        else:
            b.add(name, nir.Linear(weight, metadata={"columns": offset}), f"layer{l + 1}")
        b.edges.append((name, "readout"))
        first = False
    b.add("output", nir.Output(np.array([n_out])), "readout")


def _graph_metadata(net, names, delays_as: str, branches: int) -> dict:
    c = net.config
    resets = sorted({spec.reset for spec in net.layer_specs})
    quantizer = {f"layer{spec.index + 1}": {k: getattr(spec.feedforward, k) for k in
                                           ("weight_bits", "ternary_scales", "delay_step", "delay_offset_mode")}
                 for spec in net.layer_specs if spec.feedforward.quantized_weights or spec.feedforward.quantized_delays}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "onlinedelay_version": __version__,
            "dt": c.dt_ms / 1000.0, "dt_unit": "s", "delay_unit": "s (integer steps x dt)",
            "discretisation": NEURON_RULE, "spike": SPIKE_RULE, "reset_rule": SOFT_RULE,
            "reset": resets[0] if len(resets) == 1 else "per-layer (LIF metadata 'reset')",
            "zeta": float(net.layer_specs[0].input_gain), "zeta_out": float(c.readout_gain),
            "recurrence": "an edge closing a cycle carries the previous step's value",
            "delays_as": delays_as, "n_delay_branches": int(branches),
            "config": json.dumps(c.to_dict()), "seed": int(net.seed), "dtype": net.dtype.name,
            "class_names": json.dumps(list(names) if names is not None else [str(k) for k in range(c.n_outputs)]),
            "quantizer": json.dumps(quantizer)}


def graph_summary(graph) -> dict:
    """{"nodes", "edges", "branches"} of a graph (branches: its synaptic-delay Linear -> Delay branches)."""
    meta = graph.metadata or {}
    branches = int(meta["n_delay_branches"]) if "n_delay_branches" in meta else sum(
        1 for name, node in graph.nodes.items() if type(node).__name__ == "Delay" and "_d" in name)
    return {"nodes": len(graph.nodes), "edges": len(graph.edges), "branches": branches}


def save_nir(path, model, delays_as: str = "branches") -> dict:
    """Write ``model`` as a NIR file (atomically: a temporary beside ``path``, then renamed).

    Returns :func:`graph_summary` with ``file``.  The file is read back with ``nir.read`` (type
    check on) before it replaces ``path``.
    """
    nir = require_nir()
    graph = to_nir(model, delays_as)
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
        try:
            nir.read(tmp)
        except Exception as err:  # noqa: BLE001 - nir raises assorted types; a graph it cannot read is a bug here
            raise RuntimeError(f"{path}: the written NIR graph does not read back ({type(err).__name__}: {err})") from None
    return dict(graph_summary(graph), file=str(path))
