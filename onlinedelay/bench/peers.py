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

The rows' medians are timed a minute apart, on a VM whose speed drifts by up to 2x within minutes;
:func:`measure_paired_peer` also times the ratio in alternated pairs: each round one training
call of ours and one of the peer's (the peer in a server process answering one call per request,
:func:`peer_server_main`), the order alternating, so both calls of a round see the same machine.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .child import CHILD_TIMEOUT_S, run_child
from .configs import BenchConfig
from .measure import elapsed_ns
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
    with _warmed(peer, config, x, labels, threads, seed) as timed:
        n = repeats_for(timed("train") + timed("infer"), repeats, budget_s)
        train_ns, infer_ns = [], []
        for _ in range(n):
            train_ns.append(timed("train"))
            infer_ns.append(timed("infer"))
    return {"peer": peer.name, "training": _speed(train_ns, batch_size), "inference": _speed(infer_ns, batch_size)}


@contextlib.contextmanager
def _warmed(peer: Peer, config: BenchConfig, x: np.ndarray, labels: np.ndarray, threads: int, seed: int):
    """The peer built on the batch (x, labels) and warmed up in this process; yields ``timed(command)``,
    the nanoseconds one "train" or "infer" call takes."""
    model = peer.build(config.network_config(), x.shape[1], threads, seed)
    calls = {"train": model.train, "infer": model.infer}

    def timed(command: str) -> int:
        start = time.perf_counter_ns()
        calls[command]()
        return time.perf_counter_ns() - start

    try:
        model.load(x, labels)
        model.train()                                    # warm-up: allocation, first touch
        model.infer()
        yield timed
    finally:
        close = getattr(model, "close", None)            # a torch model restores the thread count
        if close is not None:
            close()


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


def measure_peers(config: BenchConfig, batch_size: int, threads: int, plan, ours: dict, peers=None,
                  our_calls: Callable[[], dict] | None = None) -> list:
    """Every peer matching ``config`` (of ``peers``, default :data:`PEERS`), timed on the batch
    ``ours`` (a :func:`measure_row` result) was timed on, at the same thread count; each result
    carries the ratios ours / peer.  With ``our_calls`` (a callable returning our "train" and
    "infer" callables on that batch), each also gets ``paired``: the ratios timed in alternated pairs
    (:func:`measure_paired_peer`)."""
    peers = PEERS if peers is None else peers
    results = []
    for peer in (p for p in peers if p.matches(config)):
        spec = {"peer": peer.name, "config": config.to_dict(), "batch_size": batch_size, "threads": threads,
                "steps": plan.steps, "repeats": plan.repeats, "seed": plan.seed,
                "budget_s": 0.0 if plan.quick else TIMED_S}
        missing = missing_modules(peer.modules)
        if missing:
            results.append({"peer": peer.name, "missing": ", ".join(missing)})
            continue
        if peer.isolated:
            result = run_child("onlinedelay.bench.peers:peer_child_main", spec,
                               f"peer {peer.name} on {config.name} (B={batch_size}, {threads} threads)")
        else:
            result = _time_spec(peer, spec)
        result = with_ratios(ours, result)
        if our_calls is not None:
            result["paired"] = measure_paired_peer(peer, config, batch_size, threads, plan, our_calls())
        results.append(result)
    return results


def _time_spec(peer: Peer, spec: dict) -> dict:
    """:func:`time_peer` on the batch ``spec`` names (:func:`_spec_batch`)."""
    config, x, labels = _spec_batch(spec)
    return time_peer(peer, config, x, labels, spec["threads"], spec["repeats"], spec["seed"],
                     spec.get("budget_s", 0.0))


def _spec_batch(spec: dict) -> tuple:
    """(config, x, labels): the batch ``spec`` names, our own (the same seed gives the same arrays)."""
    config = BenchConfig.from_dict(spec["config"])
    x, labels = training_batch(config.name, config.n_inputs, config.n_outputs, spec["steps"], spec["batch_size"],
                               spec["seed"])
    return config, x, labels


def peer_child_main(spec_json: str, result_path: str) -> None:
    """Entry point of a peer's child process: time the peer of :data:`PEERS` named in the spec; write
    the :func:`time_peer` result as JSON."""
    spec = json.loads(spec_json)
    [peer] = [p for p in PEERS if p.name == spec["peer"]]
    result = _time_spec(peer, spec)
    with open(result_path, "w") as fh:
        json.dump(result, fh)


SETTLE_S = 0.01     # pause between the halves of a round: the other side's OpenMP threads stop spinning
PAIRED_S = 3.0      # the alternated rounds against a peer fill at least this long outside --quick (one
                    # round's ratio scattered 1.3-2.5x on the shared 2-core VM; medians of 15 by ~0.1x)
_PROTOCOL = "onlinedelay-peer "     # the server's answers start with this (anything else it prints is skipped)


def peer_server_main(spec_json: str) -> None:
    """Entry point of a peer's server process (:func:`measure_paired_peer`): build the peer of
    :data:`PEERS` named in the spec on the batch it names (our own), warm it up, answer "ready", then
    answer each line "train" or "infer" of stdin with the nanoseconds that call took; stop at "quit"
    or at the end of stdin."""
    spec = json.loads(spec_json)
    [peer] = [p for p in PEERS if p.name == spec["peer"]]
    with _local_model(peer, spec) as timed:
        _answer("ready")
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            _answer(str(timed(command)))


def _answer(text: str) -> None:
    sys.stdout.write(_PROTOCOL + text + "\n")
    sys.stdout.flush()


def _local_model(peer: Peer, spec: dict):
    """:func:`_warmed` on the batch the spec names (:func:`_spec_batch`)."""
    config, x, labels = _spec_batch(spec)
    return _warmed(peer, config, x, labels, spec["threads"], spec["seed"])


SERVER_CODE = "import sys; from onlinedelay.bench.peers import peer_server_main; peer_server_main(sys.argv[1])"


@contextlib.contextmanager
def _served_model(spec: dict, timeout_s: float = CHILD_TIMEOUT_S, code: str = SERVER_CODE):
    """:func:`_local_model` in a server process running ``code`` (:func:`peer_server_main`, given the spec
    as its argument); yields ``timed(command)``.  Raises RuntimeError if the server exits or stays silent
    for ``timeout_s``."""
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    pending = b""

    def answer() -> str:
        nonlocal pending
        deadline = time.monotonic() + timeout_s
        while True:
            line, sep, rest = pending.partition(b"\n")
            if sep:
                pending = rest
                text = line.decode(errors="replace")
                if text.startswith(_PROTOCOL):
                    return text[len(_PROTOCOL):]
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                raise RuntimeError(f"peer {spec['peer']} gave no answer within {timeout_s:.0f} s")
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
            if not chunk:
                raise RuntimeError(f"peer {spec['peer']} exited with {proc.wait()} before answering")
            pending += chunk

    def timed(command: str) -> int:
        proc.stdin.write(command.encode() + b"\n")
        return int(answer())

    try:
        if answer() != "ready":
            raise RuntimeError(f"peer {spec['peer']} did not start")
        yield timed
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_paired_peer(peer: Peer, config: BenchConfig, batch_size: int, threads: int, plan, ours: dict) -> dict:
    """The ratios ours / ``peer`` of training and inference speed, timed in alternated pairs.

    ``ours`` holds the callables "train" and "infer" of our learner and network on the batch the
    peer is built on (:func:`~onlinedelay.bench.workload.training_batch`).  Each round times, for
    training then inference, one call of ours and one of the peer's (the order alternating between
    rounds, :data:`SETTLE_S` between them), each after an untimed call of its own: the other side's
    call evicts the caches, and a training loop repeats its own (at batch 1 the cold call of ours
    measured ~2x slower against the peer's).  A round's ratio is the peer's time over ours (above
    1: we are faster).  At least ``plan.repeats`` rounds, more until they fill :data:`PAIRED_S`.
    Returns {"training": {rounds, median, min, max}, "inference": {...}}.
    """
    spec = {"peer": peer.name, "config": config.to_dict(), "batch_size": batch_size, "threads": threads,
            "steps": plan.steps, "seed": plan.seed}
    budget_s = 0.0 if plan.quick else PAIRED_S
    serve = _served_model(spec) if peer.isolated else _local_model(peer, spec)
    with serve as peer_ns:
        kinds = ("train", "infer")
        timed = {"ours": lambda kind: elapsed_ns(ours[kind]), "peer": peer_ns}
        round_ns = 2 * sum(timed[side](k) for side in timed for k in kinds)    # warm; sizes the rounds
        ratios = {k: [] for k in kinds}
        for r in range(repeats_for(round_ns, plan.repeats, budget_s)):
            for kind in kinds:
                ns = {}
                for side in (("ours", "peer") if r % 2 == 0 else ("peer", "ours")):
                    timed[side](kind)                    # untimed: this side's caches
                    ns[side] = timed[side](kind)
                    time.sleep(SETTLE_S)
                ratios[kind].append(ns["peer"] / ns["ours"])
    return {name: _stats(ratios[kind]) for name, kind in (("training", "train"), ("inference", "infer"))}


def _stats(values) -> dict:
    arr = np.asarray(values, np.float64)
    return {"rounds": int(arr.size), "median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}
