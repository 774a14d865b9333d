"""Peers: the same network trained offline by PyTorch BPTT, timed on our benchmark's own batches.

``onlinedelay bench --peers`` times, for every row whose network a peer can express (one hidden
layer, no recurrence, density 1), the peer on the very batch our learner was timed on
(:func:`~onlinedelay.bench.workload.training_batch`) at the same thread count, and reports the
ratio ours / peer of training and inference samples per second:

=====================  ==============  =====================================================
peer                   our networks    what it is
=====================  ==============  =====================================================
``PyTorch BPTT``       no delays       surrogate-gradient LIF, eager CPU, BPTT + Adam; the
                                       input current of all steps in one matrix product
``PyTorch + DCLS``     synaptic        the same with a learnable delay per synapse the DCLS
                                       way (``Dcls1d``, Gaussian kernel over the max delay)
=====================  ==============  =====================================================

torch and dcls are an optional extra (``pip install 'onlinedelay[peers]'``), never needed by the
tests; this module imports neither: :mod:`.torch_peers` is imported only when a peer is built, and
the torch peers are built and timed in a fresh child process (:func:`peer_child_main`): torch's
OpenMP threads stay awake after its runs, and in our process they slowed every later row of ours
(2 threads against 1 at batch 1 measured 0.66x with torch in the process).
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .child import run_child
from .configs import BenchConfig
from .workload import TIMED_S, repeats_for, training_batch

INSTALL_HINT = "pip install 'onlinedelay[peers]' (torch and dcls)"


@dataclass(frozen=True)
class Peer:
    """A peer implementation of our network.

    Attributes
    ----------
    name : str, shown in the table
    input_delays : str, the ``input_delays`` of the networks it matches
    modules : tuple of str, modules it needs importable
    build : callable (network: NetworkConfig, batch_size, threads, seed) -> model, where the model
        has ``load(x, labels)`` (x (T, B, n_inputs) uint8, labels (B,) int: converted once, untimed),
        ``train()`` (one training step on the loaded batch), ``infer()`` (a forward pass) and
        optionally ``close()`` (called when its timing is done)
    isolated : bool, timed in a fresh child process (:func:`peer_child_main`; the peer is looked up
        there by name in :data:`PEERS`)
    """

    name: str
    input_delays: str
    modules: tuple
    build: Callable
    isolated: bool = False

    def matches(self, config: BenchConfig) -> bool:
        """True when the peer builds the same network: one dense hidden layer, no recurrence."""
        layers = config.network_config().layer_specs
        if len(layers) != 1 or layers[0].recurrent is not None:
            return False
        feedforward = layers[0].feedforward
        return feedforward.connectivity == "dense" and feedforward.delays == self.input_delays


def _torch_build(delays: bool) -> Callable:
    def build(network, batch_size, threads, seed):
        # torch is an optional extra: imported only when a peer is built, so the package and its
        # tests never need it (make_plan checks it is there before a --peers run starts)
        from .torch_peers import TorchLIF

        return TorchLIF(network, delays, batch_size, threads, seed)
    return build


PEERS = (Peer("PyTorch BPTT", "none", ("torch",), _torch_build(delays=False), isolated=True),
         Peer("PyTorch + DCLS", "synaptic", ("torch", "DCLS"), _torch_build(delays=True), isolated=True))


def missing_modules(modules) -> list:
    """The names in ``modules`` that cannot be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def missing_message() -> str | None:
    """One line saying torch is not installed and how to install the peers; None when it is."""
    if missing_modules(["torch"]):
        return f"--peers needs torch, which is not installed; {INSTALL_HINT}"
    return None


def time_peer(peer: Peer, config: BenchConfig, x: np.ndarray, labels: np.ndarray, threads: int,
              repeats: int, seed: int = 0, budget_s: float = 0.0) -> dict:
    """Median training and inference speed of ``peer`` on the batch (x, labels) at ``threads``, over
    at least ``repeats`` timed calls each and enough to fill ``budget_s`` (:func:`.workload.repeats_for`).

    Returns
    -------
    {"peer": name, "training": {samples_per_s, batch_ms}, "inference": {samples_per_s, batch_ms}},
    or {"peer": name, "missing": "module, ..."} when a module it needs is not installed.
    """
    missing = missing_modules(peer.modules)
    if missing:
        return {"peer": peer.name, "missing": ", ".join(missing)}
    batch_size = x.shape[1]
    model = peer.build(config.network_config(), batch_size, threads, seed)
    try:
        model.load(x, labels)
        model.train()                                    # warm-up: allocation, first touch
        model.infer()
        start = time.perf_counter_ns()
        model.train()
        model.infer()
        n = repeats_for(time.perf_counter_ns() - start, repeats, budget_s)
        train_ns, infer_ns = [], []
        for _ in range(n):
            start = time.perf_counter_ns()
            model.train()
            train_ns.append(time.perf_counter_ns() - start)
            start = time.perf_counter_ns()
            model.infer()
            infer_ns.append(time.perf_counter_ns() - start)
    finally:
        close = getattr(model, "close", None)            # a torch model restores the thread count
        if close is not None:
            close()
    return {"peer": peer.name, "training": _speed(train_ns, batch_size), "inference": _speed(infer_ns, batch_size)}


def _speed(times_ns, batch_size: int) -> dict:
    ms = np.asarray(times_ns, np.float64) / 1e6
    return {"samples_per_s": 1e3 * batch_size / float(np.median(ms)),
            "batch_ms": {"median": float(np.median(ms)), "min": float(ms.min()), "max": float(ms.max())}}


def with_ratios(ours: dict, peer_result: dict) -> dict:
    """``peer_result`` plus ``training_ratio`` and ``inference_ratio``: our samples/s over the peer's."""
    out = dict(peer_result)
    for kind in ("training", "inference"):
        if kind in peer_result:
            out[f"{kind}_ratio"] = ours[kind]["samples_per_s"] / peer_result[kind]["samples_per_s"]
    return out


def measure_peers(config: BenchConfig, batch_size: int, threads: int, plan, ours: dict, peers=None) -> list:
    """Every peer matching ``config`` (of ``peers``, default :data:`PEERS`), timed on the batch
    ``ours`` (a :func:`measure_row` result) was timed on, at the same thread count; each result
    carries the ratios ours / peer."""
    peers = PEERS if peers is None else peers
    results = []
    for peer in (p for p in peers if p.matches(config)):
        spec = {"peer": peer.name, "config": config.to_dict(), "batch_size": batch_size, "threads": threads,
                "steps": plan.steps, "repeats": plan.repeats, "seed": plan.seed,
                "budget_s": 0.0 if plan.quick else TIMED_S}
        missing = missing_modules(peer.modules)
        if missing:
            result = {"peer": peer.name, "missing": ", ".join(missing)}
        elif peer.isolated:
            result = run_child("onlinedelay.bench.peers:peer_child_main", spec,
                               f"peer {peer.name} on {config.name} (B={batch_size}, {threads} threads)")
        else:
            result = _time_spec(peer, spec)
        results.append(with_ratios(ours, result))
    return results


def _time_spec(peer: Peer, spec: dict) -> dict:
    """:func:`time_peer` on the batch ``spec`` names (our own batch: the same seed gives the same arrays)."""
    config = BenchConfig.from_dict(spec["config"])
    x, labels = training_batch(config.name, config.n_inputs, config.n_outputs, spec["steps"], spec["batch_size"],
                               spec["seed"])
    return time_peer(peer, config, x, labels, spec["threads"], spec["repeats"], spec["seed"],
                     spec.get("budget_s", 0.0))


def peer_child_main(spec_json: str, result_path: str) -> None:
    """Entry point of a peer's child process: time the peer of :data:`PEERS` named in the spec; write
    the :func:`time_peer` result as JSON."""
    spec = json.loads(spec_json)
    [peer] = [p for p in PEERS if p.name == spec["peer"]]
    result = _time_spec(peer, spec)
    with open(result_path, "w") as fh:
        json.dump(result, fh)
