"""NIR import: a network from a NIR graph of the supported subset.

Accepted: ``Input -> [Delay] -> Linear/Affine -> [Delay] -> LIF`` projections (several summed at a
LIF, delays as Delay nodes of shape (n_pre,) before the Linear -- axonal -- or (N,) after it, or a
``delay_steps`` matrix in the Linear's metadata -- synaptic), LIF layers in a chain, each optionally
recurrent (a projection from the layer back onto itself, read one step behind), and a readout
``LIF layer(s) -> Linear/Affine -> LI -> Output`` reading the last layer or every layer.  Our own
exports (graph metadata ``format = "onlinedelay-nir"``) are rebuilt exactly from the configuration
and learned arrays in their metadata, checked against the graph; other graphs (snnTorch, Norse ...)
become a network with dense projections, Euler decay ``alpha = 1 - dt/tau``, input gain
``zeta = dt/tau * r`` (folded into the incoming weights unless 1), threshold ``v_threshold`` and
NIR's hard reset (unless the node or graph metadata says ``reset = "soft"``).  ``dt`` comes from the
graph metadata (seconds) or ``dt_ms``.  Anything else is refused with one line naming the node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..config import LayerConfig, NetworkConfig
from ..errors import OnlineDelayError
from ..network import Network
from ..projections import init_parameters, refresh_delay_steps
from .. import quantize as Q
from ..state import LayerParameters, Parameters
from .nir_export import FORMAT, graph_summary, require_nir

SUPPORTED = ("Input", "Output", "Linear", "Affine", "LIF", "LI", "Delay")
LEARNED_FIELDS = ("delay", "shared_weight", "weight_shadow", "weight_scale", "delay_shadow", "delay_offset")
_RTOL = 1e-9


class Chain(NamedTuple):
    """One path population -> [Delay] -> Linear/Affine -> [Delay] -> target."""

    linear: str               # name of the Linear / Affine node
    weight: np.ndarray        # (n_post, n_pre)
    bias: np.ndarray | None   # (n_post,) of an Affine
    delays: np.ndarray        # (n_post, n_pre) int64 steps
    delayed: bool             # any Delay node or delay matrix on the path
    axonal: np.ndarray | None  # (n_pre,) steps when the only delay is a Delay before the Linear


def _kind(node) -> str:
    return type(node).__name__


def _array(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


class _Reader:
    """The graph's nodes and edges with the checks and one-line errors of the import."""

    def __init__(self, graph, where: str, dt_s: float):
        self.nodes, self.where, self.dt_s = graph.nodes, where, dt_s
        self.inputs = {name: [] for name in self.nodes}
        for src, dst in graph.edges:
            for end in (src, dst):
                if end not in self.nodes:
                    self.fail(f"edge ({src!r}, {dst!r}) names node {end!r}, which the graph does not have")
            self.inputs[dst].append(src)

    def fail(self, message: str):
        raise OnlineDelayError(f"{self.where}: {message}")

    def node_fail(self, name: str, message: str):
        self.fail(f"node '{name}' ({_kind(self.nodes[name])}) {message}")

    def single_input(self, name: str) -> str:
        sources = self.inputs[name]
        if len(sources) != 1:
            self.node_fail(name, f"has {len(sources)} inputs; expected one")
        return sources[0]

    def size(self, name: str) -> int:
        """Neurons of a population node (Input, LIF, LI): a 1-D shape."""
        node = self.nodes[name]
        shape = np.asarray(node.input_type["input"]).reshape(-1) if _kind(node) == "Input" else \
            np.asarray(_array(node.r).shape)
        if shape.size != 1:
            self.node_fail(name, f"has shape {tuple(int(s) for s in shape)}; onlinedelay populations are 1-D")
        return int(shape[0])

    def delay_steps(self, name: str) -> np.ndarray:
        """Integer steps of a Delay node (its delay in s over dt); a value off the step grid is refused."""
        delay = _array(self.nodes[name].delay).reshape(-1)
        steps = delay / self.dt_s
        k = np.rint(steps)
        bad = ~np.isfinite(steps) | (np.abs(steps - k) > 1e-6 * np.maximum(1.0, np.abs(steps))) | (k < 0)
        if bad.any():
            i = int(np.argmax(bad))
            self.node_fail(name, f"delay [{i}] = {float(delay[i])!r} s is not a whole number of steps of "
                                 f"dt = {self.dt_s!r} s")
        return k.astype(np.int64)

    def chain(self, start: str, target: str, n_post: int) -> tuple[str, Chain]:
        """(source population, Chain) of the path that ends with the edge ``start -> target``."""
        name, post = start, None
        if _kind(self.nodes[name]) == "Delay":
            post, name = self.delay_steps(name), self.single_input(name)
        if _kind(self.nodes[name]) not in ("Linear", "Affine"):
            self.node_fail(name, f"feeds '{target}'; expected a Linear or Affine projection (a Delay before "
                                 "or after it)")
        linear = name
        name, pre = self.single_input(linear), None
        if _kind(self.nodes[name]) == "Delay":
            pre, name = self.delay_steps(name), self.single_input(name)
        if _kind(self.nodes[name]) not in ("Input", "LIF"):
            self.node_fail(name, f"feeds '{linear}'; a projection must start at the Input or a LIF layer")
        node = self.nodes[linear]
        weight = _array(node.weight)
        n_pre = self.size(name)
        if weight.shape != (n_post, n_pre):
            self.node_fail(linear, f"has weights of shape {weight.shape}; expected ({n_post}, {n_pre}) from "
                                   f"'{name}' to '{target}'")
        matrix = (node.metadata or {}).get("delay_steps")
        delays = np.zeros((n_post, n_pre), np.int64)
        if matrix is not None and np.ndim(matrix) == 2:
            matrix = np.asarray(matrix)
            if matrix.shape != weight.shape or (matrix < 0).any() or not np.array_equal(matrix, np.rint(matrix)):
                self.node_fail(linear, "metadata 'delay_steps' must be a matrix of whole steps >= 0 shaped like "
                                       "the weights")
            delays += matrix.astype(np.int64)
        else:
            matrix = None
        for steps, axis, n in ((pre, 0, n_pre), (post, 1, n_post)):
            if steps is not None:
                if steps.size != n:
                    self.node_fail(start if axis else self.single_input(linear),
                                   f"has {steps.size} delays; expected {n}")
                delays += steps[None, :] if axis == 0 else steps[:, None]
        bias = _array(node.bias).reshape(-1) if _kind(node) == "Affine" else None
        axonal = pre if (pre is not None and post is None and matrix is None) else None
        return name, Chain(linear, weight, bias, delays, pre is not None or post is not None or matrix is not None,
                           axonal)

    def projections(self, target: str) -> dict:
        """{source population: [Chain, ...]} of every path into ``target``."""
        out = {}
        n_post = self.size(target)
        for start in self.inputs[target]:
            source, chain = self.chain(start, target, n_post)
            out.setdefault(source, []).append(chain)
        return out

    def uniform(self, name: str, field: str) -> float:
        values = _array(getattr(self.nodes[name], field)).reshape(-1)
        if values.size == 0 or not np.all(values == values[0]) or not np.isfinite(values[0]):
            self.node_fail(name, f"has per-neuron or non-finite '{field}' values; onlinedelay shares one per layer")
        return float(values[0])


class _Combined(NamedTuple):
    weight: np.ndarray        # (n_post, n_pre) float64, the chains summed
    delays: np.ndarray        # (n_post, n_pre) int64 steps of each synapse (where a chain has a weight)
    nonzero: np.ndarray       # (n_post, n_pre) bool
    mode: str                 # "none", "axonal" or "synaptic" (as the graph shows it)
    axonal: np.ndarray | None
    names: str                # the Linear nodes, for messages


def _combine(reader: _Reader, chains: list, allow_bias: bool) -> _Combined:
    """Sum the paths of one projection; a synapse given two different delays is refused."""
    weight = np.zeros_like(chains[0].weight)
    delays = np.zeros(weight.shape, np.int64)
    nonzero = np.zeros(weight.shape, bool)
    for chain in chains:
        if chain.bias is not None and not allow_bias and np.any(chain.bias != 0):
            reader.node_fail(chain.linear, "has a nonzero bias; onlinedelay hidden layers have none")
        nz = chain.weight != 0
        clash = nz & nonzero & (delays != chain.delays)
        if clash.any():
            j, i = (int(v) for v in np.argwhere(clash)[0])
            reader.node_fail(chain.linear, f"gives synapse ({j}, {i}) a second delay; a synapse has one delay")
        weight += chain.weight
        delays = np.where(nz, chain.delays, delays)
        nonzero |= nz
    if not any(chain.delayed for chain in chains):
        mode, axonal = "none", None
    elif len(chains) == 1 and chains[0].axonal is not None:
        mode, axonal = "axonal", chains[0].axonal
    else:
        mode, axonal = "synaptic", None
    return _Combined(weight, delays, nonzero, mode, axonal, ", ".join(f"'{c.linear}'" for c in chains))


class _Layer(NamedTuple):
    name: str
    size: int
    feedforward: _Combined
    recurrent: _Combined | None
    decay: float
    gain: float
    threshold: float
    reset: str


def _parse(reader: _Reader, graph_meta: dict):
    """The layers in order and the readout: (layers, readout chains {layer name: Combined}, LI name, n_inputs)."""
    nodes = reader.nodes
    for name, node in nodes.items():
        if _kind(node) not in SUPPORTED:
            reader.fail(f"node '{name}' ({_kind(node)}) is not supported by onlinedelay import")
    inputs = [n for n, node in nodes.items() if _kind(node) == "Input"]
    outputs = [n for n, node in nodes.items() if _kind(node) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        reader.fail(f"expected one Input and one Output node, found {len(inputs)} and {len(outputs)}")
    readout = reader.single_input(outputs[0])
    if _kind(nodes[readout]) != "LI":
        reader.node_fail(readout, "feeds the Output; onlinedelay's readout is a leaky integrator (LI)")
    lifs = {n: reader.projections(n) for n, node in nodes.items() if _kind(node) == "LIF"}
    layers, source, seen = [], inputs[0], set()
    while True:
        fed = [n for n, proj in lifs.items() if source in proj and n != source]
        if len(fed) > 1:
            reader.fail(f"'{source}' feeds several LIF layers ({', '.join(fed)}); onlinedelay layers form a chain")
        if not fed:
            break
        name = fed[0]
        proj = lifs[name]
        others = [s for s in proj if s not in (source, name)]
        if others:
            reader.node_fail(name, f"also receives from '{others[0]}'; a layer reads the layer below and itself")
        layers.append(_layer(reader, name, proj[source], proj.get(name), graph_meta))
        seen.add(name)
        source = name
    for name in lifs:
        if name not in seen:
            reader.node_fail(name, "is not in the chain Input -> LIF -> ... -> LI readout")
    if not layers:
        reader.fail("no LIF layer is fed by the Input")
    reads = reader.projections(readout)
    names = [layer.name for layer in layers]
    if set(reads) not in ({names[-1]}, set(names)):
        reader.node_fail(readout, f"reads {', '.join(sorted(reads))}; onlinedelay's readout reads the last layer "
                                  "or every layer")
    combined = {}
    for src, chains in reads.items():
        combined[src] = _combine(reader, chains, allow_bias=True)
        if combined[src].mode != "none":
            reader.node_fail(readout, "has delays on its input; onlinedelay's readout has none")
    return layers, combined, readout, reader.size(inputs[0])


def _layer(reader: _Reader, name: str, ff: list, rec: list | None, graph_meta: dict) -> _Layer:
    node = reader.nodes[name]
    for field in ("v_leak", "v_reset"):
        if reader.uniform(name, field) != 0.0:
            reader.node_fail(name, f"has {field} = {reader.uniform(name, field)!r}; onlinedelay neurons have 0")
    tau, r, theta = (reader.uniform(name, f) for f in ("tau", "r", "v_threshold"))
    if not tau >= reader.dt_s:
        reader.node_fail(name, f"has tau = {tau!r} s < dt = {reader.dt_s!r} s (the Euler step would not decay)")
    if not theta > 0:
        reader.node_fail(name, f"has v_threshold = {theta!r}; expected > 0")
    reset = (node.metadata or {}).get("reset", graph_meta.get("reset", "hard"))
    reset = reset if reset in ("soft", "hard") else "hard"
    return _Layer(name, reader.size(name), _combine(reader, ff, False),
                  _combine(reader, rec, False) if rec else None,
                  1.0 - reader.dt_s / tau, reader.dt_s / tau * r, theta, reset)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _RTOL * max(1.0, abs(a), abs(b))


def _plain_config(reader: _Reader, layers, readout: str, reads: dict, n_inputs: int) -> NetworkConfig:
    """The configuration of a graph written by another framework (Euler, dense projections)."""
    tau_out = reader.uniform(readout, "tau")
    if not tau_out >= reader.dt_s:
        reader.node_fail(readout, f"has tau = {tau_out!r} s < dt = {reader.dt_s!r} s")
    max_delay = max([int(c.delays[c.nonzero].max(initial=0)) for layer in layers
                     for c in (layer.feedforward, layer.recurrent) if c is not None] + [0])
    configs = []
    for layer in layers:
        if layer.recurrent is not None and np.diag(layer.recurrent.nonzero).any():
            reader.node_fail(layer.name, "has a recurrent weight onto itself (the matrix diagonal); onlinedelay "
                                         "recurrences exclude the autapse")
        configs.append(LayerConfig(n_hidden=layer.size, tau_mem_ms=reader.dt_s * 1000 / (1 - layer.decay),
                                   threshold=layer.threshold, reset=layer.reset, delays=layer.feedforward.mode,
                                   density=1.0, recurrent="none" if layer.recurrent is None else "dense",
                                   recurrent_delays="none" if layer.recurrent is None else layer.recurrent.mode))
    return NetworkConfig(n_inputs=n_inputs, n_outputs=reader.size(readout), dt_ms=reader.dt_s * 1000,
                         tau_out_ms=tau_out * 1000, discretisation="euler", input_scale="one",
                         readout_input_scale="one", max_delay_steps=max_delay, delay_init="zero",
                         readout="last" if len(reads) == 1 else "all", layers=tuple(configs))


def _check_own(reader: _Reader, config: NetworkConfig, layers, readout: str) -> None:
    """Our own export: the graph's neurons must be those of the configuration in its metadata."""
    specs = config.layer_specs
    if len(specs) != len(layers):
        reader.fail(f"the graph has {len(layers)} LIF layers; its onlinedelay configuration {len(specs)}")
    for spec, layer in zip(specs, layers):
        if (layer.size != spec.n_neurons or not _close(layer.decay, spec.decay_mem)
                or not _close(layer.gain, spec.input_gain) or not _close(layer.threshold, spec.threshold)
                or layer.reset != spec.reset):
            reader.node_fail(layer.name, "does not match the onlinedelay configuration in the graph metadata "
                                         "(size, tau, r, v_threshold or reset changed)")
    tau, r = reader.uniform(readout, "tau"), reader.uniform(readout, "r")
    if not _close(1 - reader.dt_s / tau, config.decay_out) or not _close(reader.dt_s / tau * r, config.readout_gain):
        reader.node_fail(readout, "does not match the onlinedelay configuration in the graph metadata")


def _fill(reader, proj, spec, comb: _Combined, gain: float, learned: dict, kind: str, layer, max_delay: int):
    """Write the graph's weights and delays into the skeleton projection ``proj`` (in place)."""
    n_post = proj.indptr.size - 1
    rows, cols = np.repeat(np.arange(n_post), np.diff(proj.indptr)), proj.pre
    if f"{kind}_pre" in learned and not (np.array_equal(learned[f"{kind}_pre"], proj.pre)
                                         and np.array_equal(learned[f"{kind}_indptr"], proj.indptr)):
        reader.node_fail(layer.name, f"metadata '{kind}_pre' does not match the connectivity of its seed")
    outside = comb.nonzero.copy()
    outside[rows, cols] = False
    if outside.any():
        j, i = (int(v) for v in np.argwhere(outside)[0])
        reader.fail(f"node(s) {comb.names} have a weight on synapse ({j}, {i}), which the {kind} projection of "
                    f"'{layer.name}' does not have")
    weight = (comb.weight[rows, cols] * gain).astype(proj.weight.dtype)
    proj.weight[:] = weight
    if proj.weight_of_syn.size:                           # conv: the taps, then every synapse must be its tap
        proj.shared_weight[proj.weight_of_syn] = weight
        proj.expand_shared()
        if not np.array_equal(proj.weight, weight):
            reader.fail(f"node(s) {comb.names}: the weights are not one kernel along the neuron axis (conv)")
    mode = "none" if spec is None else spec.delays
    if mode == "none" and comb.mode != "none":
        reader.fail(f"node(s) {comb.names} have delays, which the {kind} projection of '{layer.name}' has not")
    if mode == "axonal":
        if comb.mode not in ("axonal", "none"):
            reader.fail(f"node(s) {comb.names}: expected one axonal Delay node before the Linear")
        steps = comb.axonal if comb.axonal is not None else np.zeros(proj.delay.size, np.int64)
        if steps.size != proj.delay.size:
            reader.fail(f"node(s) {comb.names}: {steps.size} axonal delays; expected {proj.delay.size}")
    elif mode == "synaptic":
        steps, used = comb.delays[rows, cols], comb.nonzero[rows, cols]
    for field in LEARNED_FIELDS:
        if f"{kind}_{field}" in learned:
            value = np.asarray(learned[f"{kind}_{field}"])
            target = getattr(proj, field)
            if value.shape != target.shape:
                reader.node_fail(layer.name, f"metadata '{kind}_{field}' has shape {value.shape}; expected "
                                             f"{target.shape}")
            target[:] = value
    if mode != "none":
        if f"{kind}_delay" not in learned:
            proj.delay[:] = steps
        if (steps > max_delay).any():
            reader.fail(f"node(s) {comb.names}: delay of {int(steps.max())} steps over max_delay_steps={max_delay}")
        rounded = np.floor(proj.delay.astype(np.float64) + 0.5).astype(np.int64)
        mask = np.ones(steps.shape, bool) if mode == "axonal" else used
        if not np.array_equal(rounded[mask], steps[mask]):
            reader.node_fail(layer.name, f"metadata '{kind}_delay' does not round to the graph's delays "
                                         f"(nodes {comb.names}; was the graph edited?)")
    if proj.weight_scale.size or proj.delay_offset.size:
        before = {f: getattr(proj, f).copy() for f in ("weight", "shared_weight", "delay")}
        Q.quantize_projection(proj, spec, max_delay)
        for field, value in before.items():
            if not np.array_equal(value, getattr(proj, field)):
                reader.node_fail(layer.name, f"the quantizer arrays in its metadata do not give the graph's "
                                             f"{kind} {field} (nodes {comb.names}; was the graph edited?)")
    refresh_delay_steps(proj, max_delay)


def from_nir(graph, dt_ms: float | None = None, where: str = "graph"):
    """(Network, class names, summary dict) of a ``nir.NIRGraph`` (see the module docstring)."""
    meta = dict(graph.metadata or {})
    own = meta.get("format") == FORMAT
    if "dt" in meta:
        dt_s = float(meta["dt"])
        if dt_ms is not None and not _close(dt_ms / 1000.0, dt_s):
            raise OnlineDelayError(f"{where}: --dt-ms {dt_ms} differs from the graph's dt = {dt_s} s")
    elif dt_ms is not None:
        dt_s = float(dt_ms) / 1000.0
    else:
        raise OnlineDelayError(f"{where}: the graph has no 'dt' in its metadata; give the step it was written "
                               "for with --dt-ms")
    if not (np.isfinite(dt_s) and dt_s > 0):
        raise OnlineDelayError(f"{where}: dt = {dt_s!r} s is not allowed; expected a number > 0")
    reader = _Reader(graph, where, dt_s)
    layers, reads, readout, n_inputs = _parse(reader, meta)
    if own:
        try:
            config = NetworkConfig.from_dict(json.loads(meta["config"]))
            seed, dtype = int(meta["seed"]), str(meta["dtype"])
            names = json.loads(meta["class_names"])
        except (KeyError, TypeError, ValueError) as err:
            raise OnlineDelayError(f"{where}: graph metadata 'config', 'seed', 'dtype' or 'class_names' is not "
                                   f"usable ({err})") from None
        _check_own(reader, config, layers, readout)
        gains = [1.0] * len(layers)
    else:
        config = _plain_config(reader, layers, readout, reads, n_inputs)
        seed, dtype, names = 0, "float32", [str(k) for k in range(config.n_outputs)]
        gains = [1.0 if _close(layer.gain, 1.0) else layer.gain for layer in layers]
    if dtype not in ("float32", "float64"):
        reader.fail(f"graph metadata dtype = {dtype!r}; expected float32 or float64")
    params = init_parameters(config, seed, dtype)
    for spec, layer, lp, gain in zip(config.layer_specs, layers, params.layers, gains):
        learned = dict(reader.nodes[layer.name].metadata or {}) if own else {}
        _fill(reader, lp.feedforward, spec.feedforward, layer.feedforward, gain, learned, "feedforward", layer,
              config.max_delay_steps)
        if (spec.recurrent is None) != (layer.recurrent is None):
            reader.node_fail(layer.name, "recurrence does not match the onlinedelay configuration")
        if layer.recurrent is not None:
            _fill(reader, lp.recurrent, spec.recurrent, layer.recurrent, gain, learned, "recurrent", layer,
                  config.max_delay_steps)
    w_out, b_out = _readout_arrays(reader, config, layers, reads, readout, params, own)
    params = Parameters(tuple(LayerParameters(*lp) for lp in params.layers), w_out, b_out)
    net = Network.from_parameters(config, params, seed=seed, dtype=dtype)
    summary = dict(graph_summary(graph), layers=len(layers), own_export=own)
    return net, list(names), summary


def _readout_arrays(reader, config, layers, reads: dict, readout: str, params, own: bool):
    """(w_out, b_out) from the readout's projections and its LI node."""
    dtype = params.w_out.dtype
    tau, r = reader.uniform(readout, "tau"), reader.uniform(readout, "r")
    zeta_o = reader.dt_s / tau * r
    scale = 1.0 if own or _close(zeta_o, 1.0) else zeta_o
    offsets = np.concatenate([[0], np.cumsum([layer.size for layer in layers])])
    w_out = np.zeros(params.w_out.shape, np.float64)
    bias = np.zeros(config.n_outputs, np.float64)
    for l, layer in enumerate(layers):
        if layer.name not in reads:
            continue
        comb = reads[layer.name]
        column = int(offsets[l]) if config.readout == "all" else 0
        w_out[:, column:column + layer.size] = comb.weight * scale
    for chains in reader.projections(readout).values():
        for chain in chains:
            if chain.bias is not None:
                bias += chain.bias
    v_leak = reader.uniform(readout, "v_leak")
    b_out = bias * (config.readout_gain if own else zeta_o) + reader.dt_s / tau * v_leak
    return w_out.astype(dtype), b_out.astype(dtype)


def read_nir(path, dt_ms: float | None = None):
    """(LoadedModel, summary dict: nodes, edges, branches, layers, own_export) of a NIR file."""
    from ..io import LoadedModel

    nir = require_nir()
    path = Path(path)
    if not path.is_file():
        raise OnlineDelayError(f"{path}: NIR file does not exist")
    try:
        graph = nir.read(path, type_check=False)
    except Exception as err:  # noqa: BLE001 - h5py and nir raise assorted types on foreign files
        message = " ".join(str(err).split()) or type(err).__name__
        raise OnlineDelayError(f"{path}: not a readable NIR graph ({type(err).__name__}: {message})") from None
    net, names, summary = from_nir(graph, dt_ms, where=str(path))
    return LoadedModel(net, names, None, None, None, path), summary


def load_nir(path, dt_ms: float | None = None):
    """A :class:`~onlinedelay.io.LoadedModel` from a NIR file (``dt_ms`` when the graph has no ``dt``)."""
    return read_nir(path, dt_ms)[0]
