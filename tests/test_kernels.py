"""Every numba kernel == an independent float64 NumPy reference (tests/reference.py).

Each kernel runs twice on the same data: in float64 (tolerance F64_*) and with every float array
cast to float32 (tolerance F32_*), both compared with the float64 reference.  All random float
inputs are drawn as float32-representable numbers, so the two runs see exactly the same values
and the float32 tolerance measures only the kernel's float32 arithmetic and storage.

Layouts: the references work batch-first -- per-neuron arrays (B, n), per-synapse traces
(B, n_syn), histories x (T, B, n_pre) -- while the kernels take the batch as the innermost axis:
(n, B), (n_syn, B) and rings ``hist[slot, i, b]``.  The tests draw their data in the reference
layout and transpose at the kernel boundary (:func:`batch_last` in, ``.T`` out).

The per-synapse kernels also have a ``*_parallel`` build (the same Python function compiled with
numba ``parallel=True``, rows over threads).  Both builds are compared with the reference, and the
parallel build must equal the serial build bit for bit (:func:`run_kernel`): a row's arithmetic
order does not depend on the thread that runs it.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onlinedelay import kernels as K
import pull_kernels as PK
from reference import (csr_rows, gauss_deriv, ref_adam, ref_delay_traces, ref_delayed_current,
                       ref_learning_signal, ref_lif, ref_psi, ref_pulled_current, ref_push_events,
                       ref_readout_error, ref_readout_step,
                       ref_readout_traces, ref_round_delays, ref_sgd, ref_synaptic_delay_traces,
                       ref_weight_traces, ref_xi_history, ring_from_history, smoothed_train, xi_train)

F64_RTOL = 1e-12
F64_ATOL = 1e-12
# float32: ~170 ulps relative; the absolute tolerance is multiplied by the magnitude of the
# quantity (the same reference evaluated on |inputs|, i.e. the sum of |terms|), so sums with
# cancellation are judged against the size of what was summed.
F32_RTOL = 1e-5
F32_ATOL = 1e-6
# lif_step in float32: reference membranes must stay this far from the threshold.
LIF_MARGIN = 1e-4

DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]
SEEDS = [0, 1, 2]

SERIAL, PARALLEL = "", "_parallel"
BUILDS = [pytest.param(SERIAL, id="serial"), pytest.param(PARALLEL, id="parallel")]
# kernels with a *_parallel build (outer prange over CSR rows / delay parameters)
PARALLEL_KERNELS = ("pulled_current", "weight_traces", "xi_from_taps", "delay_traces",
                    "synaptic_delay_traces")
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def f32(a):
    """Round to the nearest float32 but keep float64: exactly representable in both dtypes."""
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)


def sf(value):
    """A float32-representable Python float scalar."""
    return float(np.float32(value))


def cast(a, dtype):
    """A fresh C-contiguous copy (never an alias of the reference's arrays)."""
    return np.array(a, dtype=dtype, order="C", copy=True)


def batch_last(a, dtype):
    """Kernel layout of a batch-first reference array, (B, n) -> fresh C-contiguous (n, B)."""
    a = np.asarray(a)
    assert a.ndim == 2
    return cast(a.T, dtype)


def assert_close(got, ref, dtype, scale=1.0, what=""):
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, what
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=F64_RTOL, atol=F64_ATOL, err_msg=what)
    else:
        atol = F32_ATOL * max(1.0, float(np.max(np.abs(scale), initial=0.0)))
        np.testing.assert_allclose(got, ref, rtol=F32_RTOL, atol=atol, err_msg=what)


def assert_bitwise_equal(got, want, what=""):
    """Same dtype, shape and bytes (stricter than ==: -0.0 != 0.0, NaN payloads count)."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if got.tobytes() != want.tobytes():
        np.testing.assert_array_equal(got, want, err_msg=what)
        raise AssertionError(f"{what}: equal values, different bits (signed zeros or NaN payloads)")


def run_kernel(name, build, *args, module=K):
    """Call kernel ``name`` of ``module`` in ``build`` (SERIAL or PARALLEL) with ``args``.

    For the parallel build the serial build first runs on copies of the same arguments, and every
    array argument (inputs and outputs) and the return value must then be bit-for-bit identical.
    """
    kernel = getattr(module, name + build)
    if build == SERIAL:
        return kernel(*args)
    twin = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
    expected = getattr(module, name)(*twin)
    result = kernel(*args)
    assert result == expected
    for k, (got, want) in enumerate(zip(args, twin)):
        if isinstance(got, np.ndarray):
            assert_bitwise_equal(got, want, f"{name}: argument {k}, parallel build != serial build")
    return result


def dense_csr(n_pre, n_post):
    """(indptr, pre) of a dense projection: row j holds every presynaptic unit in order."""
    return (np.arange(n_post + 1) * n_pre).astype(np.int32), np.tile(np.arange(n_pre, dtype=np.int32), n_post)


def make_csr(rng, n_pre, n_post, min_fan=0, max_fan=None):
    """Random CSR projection: random fan-in per row in [min_fan, max_fan], sorted pre per row."""
    max_fan = n_pre if max_fan is None else max_fan
    fans = rng.integers(min_fan, max_fan + 1, size=n_post)
    rows = [np.sort(rng.choice(n_pre, size=f, replace=False)) for f in fans]
    indptr = np.concatenate([[0], np.cumsum(fans)]).astype(np.int32)
    pre = (np.concatenate(rows) if fans.sum() else np.zeros(0)).astype(np.int32)
    assert all(np.all(np.diff(r) > 0) for r in rows)
    return indptr, pre


def random_delays(rng, n_syn, n_slots):
    """Integer delays in [0, n_slots); 0 and n_slots - 1 both present when n_syn >= 2."""
    d = rng.integers(0, n_slots, size=n_syn)
    if n_syn >= 2:
        d[rng.choice(n_syn, size=2, replace=False)] = [0, n_slots - 1]
    return d.astype(np.int32)


def spikes(rng, shape, rate):
    """Spike counts: rate 'ones' -> all 1, 0 -> none, else Poisson(rate)."""
    if rate == "ones":
        return np.ones(shape)
    return rng.poisson(rate, size=shape).astype(float)


TESTED_KERNELS = {
    "write_counts", "push_events", "take_current", "forward_step", "pulled_current", "lif_step", "readout_step", "readout_error", "readout_traces",
    "pseudo_derivative", "learning_signal", "weight_traces", "gaussian_taps", "xi_from_taps",
    "delay_traces", "synaptic_delay_traces", "adam_step", "sgd_step", "round_delays",
} | {name + PARALLEL for name in PARALLEL_KERNELS}


def test_every_exported_kernel_is_tested():
    assert len(set(K.__all__)) == len(K.__all__)
    assert set(K.__all__) == TESTED_KERNELS
    assert all(hasattr(K, name) for name in TESTED_KERNELS)
    # every kernel with a parallel build is parametrized over BUILDS below; no other has one
    assert {n for n in K.__all__ if n.endswith(PARALLEL)} == {n + PARALLEL for n in PARALLEL_KERNELS}


@pytest.mark.parametrize("name", PARALLEL_KERNELS)
def test_parallel_build_is_the_same_code(name):
    serial, parallel = getattr(K, name), getattr(K, name + PARALLEL)
    assert serial is not parallel
    # the same Python function (or a copy of its code object, e.g. renamed for the disk cache)
    code, parallel_code = serial.py_func.__code__, parallel.py_func.__code__
    assert parallel_code.co_code == code.co_code and parallel_code.co_consts == code.co_consts
    assert (parallel_code.co_filename, parallel_code.co_firstlineno) == (code.co_filename, code.co_firstlineno)
    assert parallel.targetoptions.get("parallel") is True
    assert not serial.targetoptions.get("parallel", False)


# Runs in a fresh interpreter with an empty numba disk cache: the serial build of pulled_current,
# then its parallel build (float64).  Prints which threading layer had started after each, and
# how many compilations were loaded from the (initially empty) disk cache.  One kernel is enough
# to catch the build wiring of _jit.py (every build comes from jit / jit_parallel, see
# test_parallel_build_is_the_same_code) and keeps the probe cheap.
_PARALLEL_PROBE = r"""
import json, numba, numpy as np
from onlinedelay import kernels as K

def layer():
    try:
        return numba.threading_layer()
    except ValueError:          # "Threading layer is not initialized": nothing ran on threads
        return None

i32 = np.int32
args = (np.ones((4, 2, 2)), 3, np.ones(4, np.uint8), np.array([0, 1, 2], i32), np.array([0, 1], i32),
        np.array([0, 1], i32), np.ones(2), np.zeros((2, 2)))
K.pulled_current(*args)
after_serial = layer()
K.pulled_current_parallel(*args)
after_parallel = layer()
hits = {name: sum(getattr(K, name).stats.cache_hits.values())
        for name in ("pulled_current", "pulled_current_parallel")}
print(json.dumps({"after_serial": after_serial, "after_parallel": after_parallel, "hits": hits}))
"""


def test_parallel_builds_run_on_threads_with_disk_cache(tmp_path):
    """Serial and parallel builds of one kernel must not share numba's disk-cache entry (#6845)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), ONLINEDELAY_NUMBA_CACHE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _PARALLEL_PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed:\n{proc.stderr}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["after_serial"] is None, "the serial build started the threading layer"
    assert not any(report["hits"].values()), f"builds loaded each other's disk-cache entry: {report['hits']}"
    assert report["after_parallel"] is not None, "the *_parallel build did not run on threads"


# ------------------------------------------------------------------------------------------------
# delayed_current
# ------------------------------------------------------------------------------------------------
# (batch, n_pre, n_post, n_slots, t, rate, min_fan)
CURRENT_CASES = {
    "basic": (3, 7, 5, 6, 20, 0.7, 0),
    "t0": (2, 4, 3, 5, 0, 0.9, 1),
    "early": (2, 6, 4, 8, 3, 0.9, 1),
    "wrap": (2, 5, 4, 7, 1003, 0.8, 1),
    "single": (1, 1, 1, 4, 9, 1.0, 1),
    "silent": (3, 5, 4, 6, 30, 0, 1),
    "all_spiking": (2, 6, 5, 6, 40, "ones", 6),
    "counts": (2, 6, 5, 9, 517, 2.5, 2),
}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(CURRENT_CASES))
def test_delayed_current(case, seed, dtype, build):
    B, n_pre, n_post, n_slots, t, rate, min_fan = CURRENT_CASES[case]
    rng = np.random.default_rng(seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan)
    n_syn = pre.size
    delay = random_delays(rng, n_syn, n_slots)
    weight = f32(rng.normal(0.0, 1.0, n_syn))
    x = spikes(rng, (t + 1, B, n_pre), rate)
    hist = ring_from_history(x, t, n_slots)
    current0 = f32(rng.normal(0.0, 1.0, (B, n_post)))
    post = csr_rows(indptr)

    syn = [(post[s], pre[s], weight[s], delay[s]) for s in range(n_syn)]
    ref = current0 + ref_delayed_current(x.transpose(1, 0, 2), t, syn, n_post)
    syn_abs = [(j, i, abs(w), d) for j, i, w, d in syn]
    scale = np.abs(current0) + ref_delayed_current(x.transpose(1, 0, 2), t, syn_abs, n_post)

    if case == "silent":
        np.testing.assert_array_equal(ref, current0)
    else:
        assert np.abs(ref - current0).max() > 0.1, "case reads no input"
    if case == "counts":
        assert x.max() > 1
    if n_syn >= 2:
        assert delay.min() == 0 and delay.max() == n_slots - 1

    current = batch_last(current0, dtype)
    run_kernel("delayed_current", build, cast(hist, dtype), t, indptr, pre, delay, cast(weight, dtype), current,
               module=PK)
    assert current.dtype == dtype
    assert_close(current.T, ref, dtype, scale, "delayed_current")


@pytest.mark.parametrize("build", BUILDS)
def test_delayed_current_new_delay_rereads_ring(build):
    """A changed delay re-reads an earlier slot of the same ring at once (pull model)."""
    hist = np.zeros((5, 1, 1))
    x = np.arange(1.0, 13.0)                     # x^s = s + 1, steps 0..11
    for s in range(12):
        hist[s % 5, 0, 0] = x[s]
    indptr = np.array([0, 1], np.int32)
    pre = np.array([0], np.int32)
    for d in range(5):
        cur = np.zeros((1, 1))
        run_kernel("delayed_current", build, hist, 11, indptr, pre, np.array([d], np.int32), np.array([2.0]), cur,
                   module=PK)
        assert cur[0, 0] == 2.0 * x[11 - d]


# ------------------------------------------------------------------------------------------------
# push_events, take_current, pulled_current (event-driven forward current)
# ------------------------------------------------------------------------------------------------
def csc_of(indptr, pre, n_pre):
    """The CSC view the network builds (onlinedelay.projections.event_index), rebuilt here by hand."""
    post = csr_rows(indptr)
    out_syn = [s for i in range(n_pre) for s in range(pre.size) if pre[s] == i]
    counts = np.bincount(pre, minlength=n_pre) if pre.size else np.zeros(n_pre, int)
    out_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    out_syn = np.array(out_syn, np.int32)
    return out_indptr, out_syn, post[out_syn].astype(np.int32) if out_syn.size else np.zeros(0, np.int32)


# (batch, n_pre, n_post, n_slots, slot, rate, min_fan): "sparse_batch" pushes single batch elements,
# "dense_batch" whole rows, "mixed" both; n_pre > n_post leaves some units without synapses.
PUSH_CASES = {
    "basic": (3, 7, 5, 6, 2, 0.7, 0),
    "b1": (1, 9, 6, 7, 5, 0.5, 1),
    "single": (1, 1, 1, 4, 3, "ones", 1),
    "sparse_batch": (16, 8, 5, 6, 4, 0.04, 1),
    "dense_batch": (16, 6, 5, 6, 0, 2.0, 2),
    "mixed": (24, 12, 7, 9, 8, 0.12, 2),
    "silent": (3, 5, 4, 6, 1, 0, 1),
    "counts": (2, 6, 5, 9, 7, 2.5, 2),
    "no_synapses": (2, 4, 3, 5, 1, 1.0, 0),
}


TARGET_DTYPES = [pytest.param(np.int32, id="i32"), pytest.param(np.uint16, id="u16")]   # (the network picks)


@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(PUSH_CASES))
def test_push_events(case, seed, dtype, target_dtype):
    B, n_pre, n_post, n_slots, slot, rate, min_fan = PUSH_CASES[case]
    rng = np.random.default_rng(seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan, max_fan=0 if case == "no_synapses" else None)
    n_syn = pre.size
    delay = random_delays(rng, n_syn, n_slots)
    weight = f32(rng.normal(0.0, 1.0, n_syn))
    x_t = spikes(rng, (B, n_pre), rate)
    if case == "sparse_batch":                        # at most 2 active batch elements per unit
        x_t[np.cumsum(x_t != 0, axis=0) > 2] = 0
    future0 = f32(rng.normal(0.0, 1.0, (n_slots, B, n_post)))
    syn = [(j, i, w, d) for j, i, w, d in zip(csr_rows(indptr), pre, weight, delay)]
    ref = future0 + ref_push_events(x_t, slot, syn, n_slots, n_post)
    scale = np.abs(future0) + ref_push_events(x_t, slot, [(j, i, abs(w), d) for j, i, w, d in syn], n_slots, n_post)
    if case in ("silent", "no_synapses"):
        np.testing.assert_array_equal(ref, future0)
    else:
        assert np.abs(ref - future0).max() > 0.1, "case pushes nothing"
    active = (x_t != 0).sum(axis=0)[np.bincount(pre, minlength=n_pre) > 0]
    row = 4.0 + 0.2 * B                               # events.py cost model: whole row vs one at a time
    if case == "sparse_batch":
        assert 0 < active.max() and (3.0 * active <= row).all()
    if case == "dense_batch":
        assert (3.0 * active > row).all()
    if case == "mixed":
        assert (3.0 * active > row).any() and ((active > 0) & (3.0 * active <= row)).any()

    hist = np.zeros((n_slots, n_pre, B))
    hist[slot] = x_t.T
    hist[(slot + 1) % n_slots] = spikes(rng, (n_pre, B), 1.0)     # other steps must not be pushed
    future = cast(future0.transpose(0, 2, 1), dtype)
    pulled = np.full(n_slots, 7, np.uint8)
    out_indptr, out_syn, out_post = csc_of(indptr, pre, n_pre)
    target = (delay[out_syn] * n_post + out_post).astype(target_dtype)     # the network's CSC copies
    pushed = K.push_events(cast(hist, dtype), slot, out_indptr, target, cast(weight, dtype)[out_syn],
                           future, np.inf, pulled)
    assert pushed == 1 and pulled[slot] == 0
    assert (np.delete(pulled, slot) == 7).all()
    assert future.dtype == dtype
    assert_close(future.transpose(0, 2, 1), ref, dtype, scale, "push_events")


@pytest.mark.parametrize("dtype", DTYPES)
def test_push_events_declines_over_budget(dtype):
    """Over budget: nothing is written, the slot is flagged for the pull; under it: the same push as inf."""
    rng = np.random.default_rng(5)
    B, n_pre, n_post, n_slots, slot = 8, 6, 5, 7, 3
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=2)
    delay = random_delays(rng, pre.size, n_slots)
    weight = cast(f32(rng.normal(0.0, 1.0, pre.size)), dtype)
    hist = cast(spikes(rng, (n_slots, n_pre, B), 1.5), dtype)
    future0 = cast(f32(rng.normal(0.0, 1.0, (n_slots, n_post, B))), dtype)
    out_indptr, out_syn, out_post = csc_of(indptr, pre, n_pre)
    csc = (out_indptr, (delay[out_syn] * n_post + out_post).astype(np.int32))   # the CSC copies the network keeps
    weight = weight[out_syn]
    results = {}
    for budget in (np.inf, 1e12, 1.0, 0.0):
        future, pulled = future0.copy(), np.zeros(n_slots, np.uint8)
        results[budget] = K.push_events(hist, slot, *csc, weight, future, budget, pulled), future, pulled
    for budget in (1.0, 0.0):
        pushed, future, pulled = results[budget]
        assert pushed == 0 and pulled[slot] == 1 and pulled.sum() == 1
        assert_bitwise_equal(future, future0, "a declined push wrote")
    pushed, future, pulled = results[1e12]
    assert pushed == 1 and not pulled.any()
    assert_bitwise_equal(future, results[np.inf][1], "finite budget != inf")
    assert not np.array_equal(future, future0)
    silent = np.zeros_like(hist)
    pulled = np.zeros(n_slots, np.uint8)
    assert K.push_events(silent, slot, *csc, weight, future0.copy(), 0.0, pulled) == 1   # costs nothing
    assert K.push_events(silent, slot, *csc, weight, future0.copy(), -1.0, pulled) == 0  # never
    assert pulled[slot] == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [3, 1])
def test_take_current(dtype, batch):
    rng = np.random.default_rng(0)
    future = cast(f32(rng.normal(0.0, 1.0, (5, 4, batch))), dtype)
    before = future.copy()
    current = cast(np.full((4, batch), np.nan), dtype)
    K.take_current(future, 2, current)
    assert_bitwise_equal(current, before[2], "take_current")
    assert_bitwise_equal(future[2], np.zeros((4, batch), dtype), "slot not zeroed")
    assert_bitwise_equal(np.delete(future, 2, axis=0), np.delete(before, 2, axis=0), "other slots changed")


# (batch, n_in, n_hidden, n_out, n_slots, t, recurrent, hard reset)
FORWARD_CASES = {
    "b1": (1, 9, 6, 3, 5, 13, False, False),
    "b1_rec_hard": (1, 7, 6, 3, 5, 4, True, True),
    "b1_first_step": (1, 5, 4, 2, 4, 0, True, False),
    "b3_rec": (3, 5, 4, 2, 6, 11, True, False),
}


def _forward_case(case, seed, dtype, target_dtype):
    """Random inputs of a forward_step case: the float64 reference's arrays and the kernel's arguments."""
    B, n_in, n_h, n_out, n_slots, t, recurrent, hard = FORWARD_CASES[case]
    rng = np.random.default_rng(seed)
    projections = []
    for n_pre in (n_in, n_h if recurrent else 0):
        if n_pre:
            indptr, pre = make_csr(rng, n_pre, n_h, min_fan=1)
        else:
            indptr, pre = np.zeros(n_h + 1, np.int32), np.zeros(0, np.int32)
        delay = random_delays(rng, pre.size, n_slots)
        weight = f32(rng.normal(0.0, 1.0, pre.size))
        out_indptr, out_syn, out_post = csc_of(indptr, pre, n_pre)
        syn = [(j, i, w, d) for j, i, w, d in zip(csr_rows(indptr), pre, weight, delay)]
        target = (delay[out_syn] * n_h + out_post).astype(target_dtype)
        projections.append((syn, (out_indptr, target, cast(weight[out_syn], dtype))))
    ref = dict(
        x=rng.poisson(1.2, (B, n_in)).astype(np.uint8),                       # counts > 1 included
        hist_in=spikes(rng, (n_slots, n_in, B), 1.0),
        hist_rec=spikes(rng, (n_slots if recurrent else 0, n_h, B), 1.0),
        future=f32(rng.normal(0.0, 1.0, (n_slots, n_h, B))),
        v=f32(rng.normal(0.5, 0.8, (n_h, B))), z=(rng.random((n_h, B)) < 0.4).astype(float),
        decay_eff=f32(rng.normal(0.0, 1.0, (n_h, B))),
        w_out=f32(rng.normal(0.0, 1.0, (n_out, n_h))), b_out=f32(rng.normal(0.0, 1.0, n_out)),
        y=f32(rng.normal(0.0, 1.0, (n_out, B))))
    state = {k: cast(ref[k], dtype) for k in ("hist_in", "hist_rec", "future", "v", "z", "decay_eff", "y")}
    state.update(t=np.array([t], np.int64), pull_until=np.array([t, t], np.int64), current=cast(np.full((n_h, B), np.nan), dtype),
                 pulled_in=np.full(n_slots, 7, np.uint8), pulled_rec=np.full(n_slots if recurrent else 0, 7, np.uint8))
    return ref, projections, state, (n_slots, t, hard)


def _forward_args(x, state, projections, hard, w_out, b_out):
    (_, inp), (_, rec) = projections
    st = state
    return (x, st["t"], st["pull_until"], st["hist_in"], *inp, st["pulled_in"], st["hist_rec"], *rec, st["pulled_rec"],
            st["future"], st["current"], LIF_DECAY, LIF_GAIN, sf(1.0), hard, st["v"], st["z"], st["decay_eff"],
            w_out, b_out, READOUT_DECAY, READOUT_GAIN, st["y"])


@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_step(case, seed, dtype, target_dtype):
    """One whole step in one call == the float64 reference (push, take, LIF, readout), and bit for bit
    the step-by-step kernels; a due pull or invalid counts leave everything untouched."""
    ref, projections, state, (n_slots, t, hard) = _forward_case(case, seed, dtype, target_dtype)
    slot = t % n_slots
    theta = sf(1.0)
    # float64 reference: push x^t and z^(t-1) (batch-first layouts), take the slot, LIF, readout
    future = ref["future"].transpose(0, 2, 1) + ref_push_events(ref["x"].astype(float), t, projections[0][0], n_slots,
                                                                 ref["v"].shape[0])
    scale = np.abs(future)
    if ref["hist_rec"].shape[0]:
        future = future + ref_push_events(ref["z"].T, t, projections[1][0], n_slots, ref["v"].shape[0])
        scale = scale + ref_push_events(ref["z"].T, t, [(j, i, abs(w), d) for j, i, w, d in projections[1][0]],
                                        n_slots, ref["v"].shape[0])
    current = future[slot].copy()
    future[slot] = 0.0
    v_ref, z_ref, a_ref = ref_lif(current, ref["v"].T, ref["z"].T, LIF_DECAY, LIF_GAIN, theta, hard)
    assert np.abs(v_ref - theta).min() > 1e-3, "spike decision too close to the threshold for float32"
    y_ref = ref_readout_step(z_ref, ref["w_out"], ref["b_out"], READOUT_DECAY, READOUT_GAIN, ref["y"].T)
    hist_in = ref["hist_in"].copy()
    hist_in[slot] = ref["x"].T
    hist_rec = ref["hist_rec"].copy()
    if hist_rec.shape[0]:
        hist_rec[slot] = ref["z"]

    w_out, b_out = cast(ref["w_out"], dtype), cast(ref["b_out"], dtype)
    untouched = {k: a.copy() for k, a in state.items()}
    bad = ref["x"].astype(np.float64)
    bad[-1, -1] = 0.5                                # not a whole number: refused, nothing written
    for pull_until, x in (([t + 1, 0], ref["x"]), ([0, t + 1], ref["x"]), ([t, t], bad)):
        if pull_until[1] and not ref["hist_rec"].shape[0]:
            continue                                 # (pull_until[1] is checked with or without recurrence)
        state["pull_until"][:] = pull_until
        assert K.forward_step(x, *_forward_args(x, state, projections, hard, w_out, b_out)[1:]) == (
            1 if x.dtype.kind == "f" else 2)
        for k, a in state.items():
            assert_bitwise_equal(a, untouched[k] if k != "pull_until" else np.array(pull_until, np.int64), k)
    state["pull_until"][:] = [t, t]
    twin = {k: a.copy() for k, a in state.items()}
    assert K.forward_step(*_forward_args(ref["x"], state, projections, hard, w_out, b_out)) == 0
    assert state["t"][0] == t + 1 and (state["pull_until"] == [t, t]).all()
    assert state["pulled_in"][slot] == 0 and (np.delete(state["pulled_in"], slot) == 7).all()
    if ref["hist_rec"].shape[0]:
        assert state["pulled_rec"][slot] == 0 and (np.delete(state["pulled_rec"], slot) == 7).all()
    assert_bitwise_equal(state["hist_in"], cast(hist_in, dtype), "hist_in")
    assert_bitwise_equal(state["hist_rec"], cast(hist_rec, dtype), "hist_rec")
    assert_close(state["future"].transpose(0, 2, 1), future, dtype, scale, "future")
    assert_close(state["current"].T, current, dtype, scale[slot], "current")
    vscale = LIF_DECAY * np.abs(ref["v"].T) + LIF_GAIN * np.abs(scale[slot]) + theta
    assert_close(state["v"].T, v_ref, dtype, vscale, "v")
    np.testing.assert_array_equal(state["z"].T, z_ref)
    assert_close(state["decay_eff"].T, a_ref, dtype, 1.0, "decay_eff")
    yscale = ref_readout_step(z_ref, np.abs(ref["w_out"]), np.abs(ref["b_out"]), READOUT_DECAY, READOUT_GAIN,
                              np.abs(ref["y"].T))
    assert_close(state["y"].T, y_ref, dtype, yscale, "y")
    # the same kernels one by one: bit for bit
    (_, inp), (_, rec) = projections
    K.write_counts(ref["x"], twin["hist_in"], slot)
    K.push_events(twin["hist_in"], slot, *inp, twin["future"], np.inf, twin["pulled_in"])
    if ref["hist_rec"].shape[0]:
        twin["hist_rec"][slot] = twin["z"]
        K.push_events(twin["hist_rec"], slot, *rec, twin["future"], np.inf, twin["pulled_rec"])
    K.take_current(twin["future"], slot, twin["current"])
    K.lif_step(twin["current"], LIF_DECAY, LIF_GAIN, theta, hard, twin["v"], twin["z"], twin["decay_eff"])
    K.readout_step(twin["z"], w_out, b_out, READOUT_DECAY, READOUT_GAIN, twin["y"])
    twin["t"][0] += 1
    for k, a in state.items():
        assert_bitwise_equal(a, twin[k], f"forward_step != the step-by-step kernels: {k}")


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(CURRENT_CASES))
def test_pulled_current(case, seed, dtype, build):
    B, n_pre, n_post, n_slots, t, rate, min_fan = CURRENT_CASES[case]
    rng = np.random.default_rng(seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan)
    delay = random_delays(rng, pre.size, n_slots)
    weight = f32(rng.normal(0.0, 1.0, pre.size))
    x = spikes(rng, (t + 1, B, n_pre), rate)
    hist = ring_from_history(x, t, n_slots)
    current0 = f32(rng.normal(0.0, 1.0, (B, n_post)))
    pulled = (rng.random(n_slots) < 0.5).astype(np.uint8)
    pulled[[t % n_slots, (t - n_slots + 1) % n_slots]] = [1, 0]       # delay 0 pulled, the oldest not
    steps = {s for s in range(t - n_slots + 1, t + 1) if pulled[s % n_slots]}
    syn = [(j, i, w, d) for j, i, w, d in zip(csr_rows(indptr), pre, weight, delay)]
    ref = current0 + ref_pulled_current(x.transpose(1, 0, 2), t, syn, steps, n_post)
    scale = np.abs(current0) + ref_delayed_current(x.transpose(1, 0, 2), t, [(j, i, abs(w), d) for j, i, w, d in syn],
                                                   n_post)
    if case in ("basic", "wrap", "all_spiking", "counts"):
        full = current0 + ref_delayed_current(x.transpose(1, 0, 2), t, syn, n_post)
        assert np.abs(ref - current0).max() > 0.1 and np.abs(ref - full).max() > 0.1, "flags select nothing"
    current = batch_last(current0, dtype)
    args = (cast(hist, dtype), t, pulled, indptr, pre, delay, cast(weight, dtype))
    run_kernel("pulled_current", build, *args, current)
    assert_close(current.T, ref, dtype, scale, "pulled_current")
    # every flag set: exactly delayed_current (the same additions in the same order)
    every, plain = batch_last(current0, dtype), batch_last(current0, dtype)
    run_kernel("pulled_current", build, args[0], t, np.ones(n_slots, np.uint8), *args[3:], every)
    PK.delayed_current(args[0], t, *args[3:], plain)
    assert_bitwise_equal(every, plain, "pulled_current with every flag set != delayed_current")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_dtype", [np.int64, np.int32, np.uint8, np.uint64, np.float64, np.float32])
def test_write_counts(x_dtype, dtype):
    rng = np.random.default_rng(0)
    x = rng.poisson(1.5, size=(3, 5)).astype(x_dtype)
    hist0 = cast(rng.normal(0.0, 1.0, (4, 5, 3)), dtype)
    hist = hist0.copy()
    assert K.write_counts(x, hist, 2) == 0
    want = hist0.copy()
    want[2] = x.T
    assert_bitwise_equal(hist, want, "write_counts")
    assert K.write_counts(x[:, ::2], hist[:, ::2], 1) == 0                      # strided views
    np.testing.assert_array_equal(hist[1, ::2], x[:, ::2].T)
    column = hist0[:, :, :1].copy()                                           # batch 1: a loop of its own
    assert K.write_counts(x[1:2], column, 3) == 0
    want = hist0[:, :, :1].copy()
    want[3] = x[1:2].T
    assert_bitwise_equal(column, want, "write_counts at batch 1")
    bad_values = [-1] if np.issubdtype(x_dtype, np.signedinteger) else []
    if np.issubdtype(x_dtype, np.floating):
        bad_values = [-1.0, 0.5, np.nan, np.inf, -np.inf, 1e-30]
    for value in bad_values:
        bad = x.copy()
        bad[2, 4] = value
        before = hist.copy()
        assert K.write_counts(bad, hist, 3) == 1, value
        assert_bitwise_equal(hist, before, f"write_counts wrote a refused step ({value})")


# ------------------------------------------------------------------------------------------------
# lif_step
# ------------------------------------------------------------------------------------------------
LIF_DECAY = sf(math.exp(-1.0 / 5.0))
LIF_GAIN = sf(0.75)
# (batch, n, mode)
LIF_CASES = {
    "random": (4, 9, "random"),
    "single": (1, 1, "random"),
    "column": (1, 9, "random"),          # batch 1: the loop of its own over the neurons
    "all_spiking": (3, 6, "all_spike"),
    "none_spiking": (3, 6, "no_spike"),
}


def _lif_data(rng, B, n, mode, theta, hard):
    v = f32(rng.uniform(-1.0, 1.0, (B, n)))
    z_prev = (rng.random((B, n)) < 0.5).astype(float)
    if mode == "all_spike":
        z_prev[:] = 1.0
        current = f32((2 * theta + 1.5 + rng.uniform(0, 1, (B, n))) / LIF_GAIN)
    elif mode == "no_spike":
        current = f32((-1.5 - rng.uniform(0, 1, (B, n))) / LIF_GAIN)
    else:
        current = f32(rng.normal(0.8, 1.0, (B, n)) * theta / LIF_GAIN)
        for _ in range(100):                      # redraw currents that land near the threshold
            v_new, _, _ = ref_lif(current, v, z_prev, LIF_DECAY, LIF_GAIN, theta, hard)
            near = np.abs(v_new - theta) < 10 * LIF_MARGIN
            if not near.any():
                break
            current[near] = f32(rng.normal(0.8, 1.0, near.sum()) * theta / LIF_GAIN)
    return v, z_prev, current


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta", [1.0, sf(0.6)])
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(LIF_CASES))
def test_lif_step(case, seed, hard, theta, dtype):
    B, n, mode = LIF_CASES[case]
    rng = np.random.default_rng(100 + seed)
    v0, z0, current = _lif_data(rng, B, n, mode, theta, hard)
    v_ref, z_ref, a_ref = ref_lif(current, v0, z0, LIF_DECAY, LIF_GAIN, theta, hard)
    # a spike flip near the threshold would not be a precision error: keep clear of it
    assert np.abs(v_ref - theta).min() > LIF_MARGIN
    if mode == "all_spike":
        assert z_ref.all()
    elif mode == "no_spike":
        assert not z_ref.any()
    elif n > 1:
        assert 0 < z_ref.sum() < z_ref.size

    v = batch_last(v0, dtype)
    z = batch_last(z0, dtype)
    a = cast(np.full((n, B), np.nan), dtype)
    K.lif_step(batch_last(current, dtype), LIF_DECAY, LIF_GAIN, theta, hard, v, z, a)
    scale = LIF_DECAY * np.abs(v0) + LIF_GAIN * np.abs(current) + theta
    assert_close(v.T, v_ref, dtype, scale, "v")
    np.testing.assert_array_equal(z.T, z_ref)
    assert_close(a.T, a_ref, dtype, 1.0, "decay_eff")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_lif_step_exact_threshold(hard, dtype):
    """v^t == theta exactly spikes (>=); one representable step below does not.  (n=2, B=1)"""
    below = 1.5 - 2.0 ** -20
    current = cast([[1.5], [below]], dtype)
    v = cast([[0.5], [0.5]], dtype)
    z = cast([[0.0], [0.0]], dtype)
    a = cast([[9.0], [9.0]], dtype)
    K.lif_step(current, 0.5, 0.5, 1.0, hard, v, z, a)
    np.testing.assert_array_equal(v, [[1.0], [1.0 - 2.0 ** -21]])
    np.testing.assert_array_equal(z, [[1.0], [0.0]])
    np.testing.assert_array_equal(a, [[0.5], [0.5]])


# ------------------------------------------------------------------------------------------------
# readout_step / readout_error / readout_traces
# ------------------------------------------------------------------------------------------------
READOUT_DECAY = sf(math.exp(-1.0 / 8.0))
READOUT_GAIN = sf(0.4)
# (batch, n_hidden, n_out, z mode)
READOUT_CASES = {
    "random": (3, 8, 4, "random"),
    "single": (1, 1, 1, "random"),
    "column": (1, 9, 4, "random"),        # batch 1: the loop of its own over the units
    "silent": (2, 5, 3, "none"),
    "all_spiking": (2, 5, 3, "all"),
}


def _z(rng, B, n, mode):
    if mode == "none":
        return np.zeros((B, n))
    if mode == "all":
        return np.ones((B, n))
    z = (rng.random((B, n)) < 0.4).astype(float)
    z[0, 0] = 1.0
    return z


def _readout_case(case, rng):
    """(z, w_out, bias, y0, the float64 reference readout, its scale) of a READOUT_CASES case."""
    B, n_h, n_out, mode = READOUT_CASES[case]
    z = _z(rng, B, n_h, mode)
    w_out = f32(rng.normal(0, 1, (n_out, n_h)))
    bias = f32(rng.normal(0, 0.5, n_out))
    y0 = f32(rng.normal(0, 2, (B, n_out)))
    ref = ref_readout_step(z, w_out, bias, READOUT_DECAY, READOUT_GAIN, y0)
    scale = ref_readout_step(z, np.abs(w_out), np.abs(bias), READOUT_DECAY, READOUT_GAIN, np.abs(y0))
    return z, w_out, bias, y0, ref, scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(READOUT_CASES))
def test_readout_step(case, seed, dtype):
    z, w_out, bias, y0, ref, scale = _readout_case(case, np.random.default_rng(200 + seed))
    if READOUT_CASES[case][3] == "none":
        np.testing.assert_allclose(ref, READOUT_DECAY * y0 + bias, rtol=1e-15)

    y = batch_last(y0, dtype)
    K.readout_step(batch_last(z, dtype), cast(w_out, dtype), cast(bias, dtype), READOUT_DECAY, READOUT_GAIN, y)
    assert_close(y.T, ref, dtype, scale, "y")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(READOUT_CASES))
def test_readout_listed_equals_readout_step(case, seed, dtype):
    """The segment kernels' readout (transposed weights, spiking units listed) against the reference,
    and bit for bit against readout_step, on a column range that leaves the other columns alone."""
    from onlinedelay.kernels.readout import readout_listed
    B, n_h, n_out, _ = READOUT_CASES[case]
    z, w_out, bias, y0, ref, scale = _readout_case(case, np.random.default_rng(300 + seed))
    z_k, w_k, b_k = batch_last(z, dtype), cast(w_out, dtype), cast(bias, dtype)
    stepped, listed = batch_last(y0, dtype), batch_last(y0, dtype)
    K.readout_step(z_k, w_k, b_k, READOUT_DECAY, READOUT_GAIN, stepped)
    b0 = 1 if B > 1 else 0
    readout_listed(z_k, np.ascontiguousarray(w_k.T), b_k, READOUT_DECAY, READOUT_GAIN, listed, b0, B,
                   np.full(n_h, -1, np.int64), np.zeros(n_out, listed.dtype))
    np.testing.assert_array_equal(listed[:, :b0], batch_last(y0, dtype)[:, :b0])     # other columns untouched
    np.testing.assert_array_equal(listed[:, b0:], stepped[:, b0:])
    assert_close(listed.T[b0:], ref[b0:], dtype, scale[b0:], "y")

# (batch, n_out, label mode, logit scale)
ERROR_CASES = {
    "mixed": (6, 4, "mixed", 2.0),
    "all_labelled": (3, 5, "all", 2.0),
    "no_target": (3, 4, "none", 2.0),
    "single_out": (2, 1, "all", 2.0),
    "single": (1, 3, "all", 1.0),
    "large_logits": (4, 3, "mixed", 40.0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_readout_error(case, seed, dtype):
    B, n_out, label_mode, spread = ERROR_CASES[case]
    rng = np.random.default_rng(300 + seed)
    y = f32(rng.normal(0, spread, (B, n_out)))
    labels = rng.integers(0, n_out, size=B).astype(np.int64)
    if label_mode == "none":
        labels[:] = -1
    elif label_mode == "mixed":
        labels[rng.choice(B, size=B // 2, replace=False)] = -1
        labels[0] = -1
        labels[-1] = n_out - 1
    w = sf(0.37)
    loss_ref, probs_ref, delta_ref = ref_readout_error(y, labels, w)
    if label_mode == "none":
        assert loss_ref == 0.0 and not delta_ref.any()
    elif n_out > 1:
        assert loss_ref > 0.0
    np.testing.assert_allclose(probs_ref.sum(axis=1), 1.0, rtol=1e-14)

    probs = cast(np.full((n_out, B), np.nan), dtype)
    delta = cast(np.full((n_out, B), np.nan), dtype)
    loss = K.readout_error(batch_last(y, dtype), labels, w, probs, delta)
    loss_scale = w * B * (np.abs(y).max() + math.log(n_out) + 1.0)
    assert_close(loss, loss_ref, dtype, loss_scale, "loss")
    assert_close(probs.T, probs_ref, dtype, 1.0, "probs")
    assert_close(delta.T, delta_ref, dtype, w, "delta")
    # no target: exactly zero error
    assert np.all(delta[:, labels < 0] == 0.0)


def test_readout_error_loss_is_weighted_cross_entropy():
    """Cross-check of the returned loss with -w sum log p on a hand case (n_out=2, B=3)."""
    y = np.array([[0.0, 1.0, 5.0], [math.log(3.0), 1.0, -2.0]])
    labels = np.array([1, -1, 0], np.int64)
    probs = np.zeros_like(y)
    delta = np.zeros_like(y)
    loss = K.readout_error(y, labels, 2.0, probs, delta)
    expected = -2.0 * (math.log(0.75) + math.log(1.0 / (1.0 + math.exp(-7.0))))
    assert abs(loss - expected) < 1e-14
    np.testing.assert_allclose(probs[:, 0], [0.25, 0.75], rtol=1e-15)
    np.testing.assert_allclose(delta[:, 0], [0.5, -0.5], rtol=1e-14)
    np.testing.assert_array_equal(delta[:, 1], [0.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(READOUT_CASES))
def test_readout_traces(case, seed, dtype):
    B, n_h, n_out, mode = READOUT_CASES[case]
    rng = np.random.default_rng(400 + seed)
    n_steps = 4
    zbar0 = f32(rng.uniform(0, 2, (B, n_h)))
    bbar0 = f32(rng.uniform(0, 3, B))
    gw0 = f32(rng.normal(0, 1, (n_out, n_h)))
    gb0 = f32(rng.normal(0, 1, n_out))
    zbar, bbar, gw, gb = batch_last(zbar0, dtype), cast(bbar0, dtype), cast(gw0, dtype), cast(gb0, dtype)
    r = (zbar0, bbar0, gw0, gb0)
    r_abs = (zbar0, bbar0, np.abs(gw0), np.abs(gb0))
    for step in range(n_steps):
        z = _z(rng, B, n_h, mode)
        delta = f32(rng.normal(0, 0.3, (B, n_out)))
        if B > 1:
            delta[step % B] = 0.0                 # a sample without target this step
        r = ref_readout_traces(z, delta, READOUT_DECAY, READOUT_GAIN, *r)
        r_abs = ref_readout_traces(z, np.abs(delta), READOUT_DECAY, READOUT_GAIN, *r_abs)
        K.readout_traces(batch_last(z, dtype), batch_last(delta, dtype), READOUT_DECAY, READOUT_GAIN,
                         zbar, bbar, gw, gb, np.full((B, n_h), np.nan, dtype))
        # zbar is (n_hidden, B); bbar (B,), grad_w_out (n_out, n_hidden), grad_bias (n_out,) keep their layout
        for got, ref, scale, name in zip((zbar.T, bbar, gw, gb), r, r_abs, ("zbar", "bbar", "gw", "gb")):
            assert_close(got, ref, dtype, scale, f"{name} at step {step}")
    assert np.abs(r[2] - gw0).max() > 1e-3 and np.abs(r[3] - gb0).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# pseudo_derivative, learning_signal
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta", [1.0, sf(0.8)])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7)])
def test_pseudo_derivative(shape, seed, theta, dtype):
    rng = np.random.default_rng(500 + seed)
    v = f32(rng.uniform(-1.0, 3.0, shape) * theta)          # (B, n)
    specials = f32([theta, 0.0, 2 * theta, -theta, 3 * theta, theta + 1e-3, 0.5 * theta, 1.5 * theta])
    flat = v.reshape(-1)
    if flat.size >= specials.size:
        flat[:specials.size] = specials
    else:
        flat[:] = rng.choice(specials, size=flat.size)
    gamma = sf(0.3)
    ref = ref_psi(v, gamma, theta)
    if flat.size >= specials.size:
        assert ref.reshape(-1)[0] == pytest.approx(gamma / theta)
        assert ref.reshape(-1)[1] == 0.0 and ref.reshape(-1)[2] == 0.0
    else:
        assert ref.max() <= gamma / theta
    psi = cast(np.full(shape[::-1], np.nan), dtype)
    K.pseudo_derivative(batch_last(v, dtype), gamma, theta, psi)
    assert_close(psi.T, ref, dtype, gamma / theta, "psi")
    assert np.all(psi >= 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 3, 9), (2, 1, 5)])
def test_learning_signal(shape, seed, dtype):
    B, n_out, n = shape
    rng = np.random.default_rng(600 + seed)
    delta = f32(rng.normal(0, 1, (B, n_out)))
    if B > 1:
        delta[1] = 0.0                            # no target: the signal must still be reset to 0
    feedback = f32(rng.normal(0, 1, (n_out, n)))
    ref = ref_learning_signal(delta, feedback)
    scale = ref_learning_signal(np.abs(delta), np.abs(feedback))
    signal = cast(np.full((n, B), np.nan), dtype)
    K.learning_signal(batch_last(delta, dtype), cast(feedback, dtype), signal)
    assert_close(signal.T, ref, dtype, scale, "signal")
    if B > 1:
        assert np.all(signal[:, 1] == 0.0)


# ------------------------------------------------------------------------------------------------
# weight_traces
# ------------------------------------------------------------------------------------------------
TRACE_GAIN = sf(0.6)
TRACE_DECAY_OUT = sf(math.exp(-1.0 / 8.0))
TRACE_GAIN_OUT = sf(0.4)
ALPHA = sf(math.exp(-1.0 / 5.0))
TRACE_ARGS = (TRACE_GAIN, TRACE_DECAY_OUT, TRACE_GAIN_OUT)

# (batch, n_pre, n_post, n_slots, t0, n_steps, rate, min_fan)
WTRACE_CASES = {
    "basic": (3, 6, 4, 5, 0, 9, 0.6, 0),
    "wide_batch": (7, 6, 4, 5, 40, 4, 0.6, 1),
    "wrap": (2, 5, 4, 4, 997, 7, 0.8, 1),
    "single": (1, 1, 1, 3, 2, 6, 1.0, 1),
    "silent": (2, 4, 3, 5, 50, 4, 0, 1),
    "all_spiking": (2, 4, 3, 6, 30, 5, "ones", 4),
    "counts": (2, 5, 3, 7, 211, 6, 2.5, 2),
}


def _post_factors(rng, B, n_post):
    """psi, signal, decay_eff of one step, batch-first (B, n_post)."""
    psi = f32(rng.uniform(0, 0.3, (B, n_post)))
    psi[rng.random((B, n_post)) < 0.2] = 0.0
    signal = f32(rng.normal(0, 1, (B, n_post)))
    decay_eff = np.where(rng.random((B, n_post)) < 0.3, 0.0, ALPHA)     # hard reset: alpha (1 - z)
    return psi, signal, decay_eff


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(WTRACE_CASES))
def test_weight_traces(case, seed, dtype, build):
    B, n_pre, n_post, n_slots, t0, n_steps, rate, min_fan = WTRACE_CASES[case]
    rng = np.random.default_rng(700 + seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan)
    n_syn = pre.size
    delay = random_delays(rng, n_syn, n_slots)
    post = csr_rows(indptr)
    x = spikes(rng, (t0 + n_steps, B, n_pre), rate)
    if rate == 2.5:
        assert x.max() > 1

    eps0 = f32(rng.uniform(0, 1, (B, n_syn)))
    ebar0 = f32(rng.uniform(0, 1, (B, n_syn)))
    grad0 = f32(rng.normal(0, 1, n_syn))
    r = (eps0, ebar0, grad0)
    r_abs = (eps0, ebar0, np.abs(grad0))
    hist = cast(ring_from_history(x, t0 - 1, n_slots) if t0 > 0 else np.zeros((n_slots, n_pre, B)), dtype)
    eps, ebar, grad = batch_last(eps0, dtype), batch_last(ebar0, dtype), cast(grad0, dtype)
    r_zero = r                                    # the same recursion without any input
    input_effect = 0.0
    for t in range(t0, t0 + n_steps):
        hist[t % n_slots] = x[t].T
        psi, signal, decay_eff = _post_factors(rng, B, n_post)
        r_zero = ref_weight_traces(0 * x, t, post, pre, delay, psi, signal, decay_eff, *TRACE_ARGS, *r_zero)
        r = ref_weight_traces(x, t, post, pre, delay, psi, signal, decay_eff, *TRACE_ARGS, *r)
        r_abs = ref_weight_traces(x, t, post, pre, delay, psi, np.abs(signal), decay_eff, *TRACE_ARGS, *r_abs)
        run_kernel("weight_traces", build, hist, t, indptr, pre, delay, batch_last(psi, dtype),
                   batch_last(signal, dtype), batch_last(decay_eff, dtype), *TRACE_ARGS, eps, ebar, grad)
        for got, ref, scale, name in zip((eps.T, ebar.T, grad), r, r_abs, ("eps_w", "ebar_w", "grad_w")):
            assert_close(got, ref, dtype, scale, f"{name} at t={t}")
        input_effect = max(input_effect, np.abs(r[0] - r_zero[0]).max(initial=0.0))
    if n_syn:
        assert np.abs(r[2] - grad0).max() > 1e-3, "gradient did not move: case tests nothing"
        # the delayed input entered the traces (or, silent, it did not)
        if rate == 0:
            assert input_effect == 0.0
        else:
            assert input_effect > 0.1


# ------------------------------------------------------------------------------------------------
# gaussian_taps / xi_from_taps: the Gaussian delay derivative xi, taps tabulated per delay change
# ------------------------------------------------------------------------------------------------
# (batch, n_pre, n_delays, max_delay, half_width K, sigma, t_last, tau offset, rate, extra slots)
XI_CASES = {
    "lag_K": (3, 5, 12, 6, 3, 1.0, 40, 3, 0.7, 0),
    "flush_0": (3, 5, 12, 6, 3, 1.0, 40, 0, 0.7, 0),
    "flush_1": (2, 4, 10, 6, 3, 0.8, 40, 1, 0.7, 2),
    "flush_2": (2, 4, 10, 6, 3, 1.3, 40, 2, 0.7, 1),
    "beyond_lag": (2, 4, 10, 5, 2, 1.0, 60, 5, 0.7, 0),
    "early": (2, 4, 10, 6, 3, 1.0, 3, 1, 0.9, 0),
    "tau0": (2, 4, 8, 4, 2, 1.0, 1, 1, 0.9, 3),
    "wrap": (2, 5, 12, 6, 3, 1.0, 1234, 3, 0.7, 0),
    "wrap_flush": (2, 5, 12, 6, 3, 1.0, 1234, 1, 0.7, 0),
    "single": (1, 1, 1, 6, 3, 1.0, 20, 3, 1.0, 0),
    "silent": (2, 3, 6, 6, 3, 1.0, 30, 2, 0, 0),
    "all_spiking": (2, 3, 8, 6, 3, 1.0, 30, 3, "ones", 0),
    "counts": (2, 4, 10, 8, 3, 1.5, 300, 2, 2.5, 0),
    "K0": (2, 4, 10, 6, 0, 0.5, 30, 0, 0.9, 0),
}
XI_SPECIAL_DELAYS = [0.0, 6.0, 0.5, 1.5, 2.5, 0.2, 1.0, 2.7, 0.49, 5.6]


def _xi_data(case, seed):
    B, n_pre, n_delays, max_d, K_, sigma, t_last, offset, rate, extra = XI_CASES[case]
    rng = np.random.default_rng(800 + seed)
    tau = t_last - offset
    c_max = int(math.floor(max_d + 0.5))
    # oldest tap read: tau - c_max - K; ring keeps t_last - n_slots + 1 .. t_last
    n_slots = offset + c_max + K_ + 1 + extra
    pre_of_delay = rng.integers(0, n_pre, size=n_delays).astype(np.int32)
    delay = f32(rng.uniform(0, max_d, n_delays))
    specials = f32([d * max_d / 6.0 for d in XI_SPECIAL_DELAYS])
    k = min(n_delays, specials.size)
    delay[:k] = specials[:k] if n_delays > 1 else [0.3]
    x = spikes(rng, (t_last + 1, B, n_pre), rate)
    hist = ring_from_history(x, t_last, n_slots)            # (n_slots, n_pre, B)
    return B, K_, sigma, t_last, tau, pre_of_delay, delay, x, hist


def _xi_ref(x, tau, pre_of_delay, delay, K_, sigma, absolute=False):
    """xi (B, n_delays) from the full history x (T, B, n_pre); steps >= T count as zero."""
    B = x.shape[1]
    out = np.zeros((B, delay.size))
    for b in range(B):
        for p in range(delay.size):
            seq = x[:, b, pre_of_delay[p]]
            if absolute:   # sum of |terms|
                c = int(math.floor(delay[p] + 0.5))
                out[b, p] = sum(abs(seq[tau - m] * gauss_deriv(m - delay[p], sigma))
                                for m in range(c - K_, c + K_ + 1) if 0 <= tau - m < len(seq))
            else:
                out[b, p] = xi_train(seq, tau, delay[p], K_, sigma)
    return out


def _ring_after(x, t_last, n_slots, n_after):
    """x extended by ``n_after`` steps holding what the ring slots of steps > t_last contain
    (step s - n_slots): what a kernel ignoring the t_last cut-off would read."""
    extra = np.zeros((n_after,) + x.shape[1:])
    for k in range(n_after):
        s = t_last + 1 + k - n_slots
        if s >= 0:
            extra[k] = x[s]
    return np.concatenate([x[:t_last + 1], extra], axis=0)


def _ref_taps(delay, K_, sigma):
    """centre (n_delays,) and taps (n_delays, 2K+1) = gauss_deriv(centre - K + q - D), float64."""
    centre = np.array([int(math.floor(d + 0.5)) for d in delay])
    taps = np.array([[float(gauss_deriv(c - K_ + q - d, sigma)) for q in range(2 * K_ + 1)]
                     for c, d in zip(centre, delay)]).reshape(len(delay), 2 * K_ + 1)
    return centre, taps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("width", [(0, 0.5), (2, 1.0), (3, 1.3)], ids=["K0", "K2", "K3"])
def test_gaussian_taps(width, seed, dtype):
    K_, sigma = width
    rng = np.random.default_rng(850 + seed)
    delay = f32(np.concatenate([XI_SPECIAL_DELAYS, rng.uniform(0, 6, 7)]))
    centre_ref, taps_ref = _ref_taps(delay, K_, sigma)
    np.testing.assert_array_equal(centre_ref[:5], [0, 6, 1, 2, 3])     # 0, 6, and halves round up
    assert np.abs(taps_ref).max() > 1e-2
    centre = np.full(delay.size, -99, np.int32)
    taps = cast(np.full((delay.size, 2 * K_ + 1), np.nan), dtype)
    K.gaussian_taps(cast(delay, dtype), K_, sigma, centre, taps)
    np.testing.assert_array_equal(centre, centre_ref)
    assert_close(taps, taps_ref, dtype, np.abs(taps_ref), "taps")


def test_gaussian_taps_over_several_blocks():
    """More delays than one vectorised block (surrogate.TAP_BLOCK) and a partial block, sigma 0.6."""
    from onlinedelay.kernels import surrogate
    rng = np.random.default_rng(857)
    K_, sigma = 2, 0.6
    delay = rng.uniform(0, 30, 2 * surrogate.TAP_BLOCK + 37)
    centre_ref, taps_ref = _ref_taps(delay, K_, sigma)
    centre, taps = np.full(delay.size, -99, np.int32), np.full((delay.size, 2 * K_ + 1), np.nan)
    K.gaussian_taps(delay, K_, sigma, centre, taps)
    np.testing.assert_array_equal(centre, centre_ref)
    np.testing.assert_allclose(taps, taps_ref, rtol=1e-14, atol=1e-15)


def test_vectorisable_exp_is_within_an_ulp_or_two():
    """surrogate.exp (plain arithmetic) == np.exp to 2 ulp over its range; clamped outside it."""
    from onlinedelay.kernels import surrogate
    rng = np.random.default_rng(858)
    x = np.concatenate([rng.uniform(-708, 709, 20000), rng.uniform(-2, 2, 20000), [0.0, -1e-300, 1e-17, -708.0, 709.0]])
    got = np.array([surrogate.exp(v) for v in x])
    np.testing.assert_allclose(got, np.exp(x), rtol=4.5e-16, atol=0)
    assert surrogate.exp(-800.0) == surrogate.exp(-708.0) > 0 and surrogate.exp(800.0) == surrogate.exp(709.0)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(XI_CASES))
def test_xi_from_taps(case, seed, dtype, build):
    B, K_, sigma, t_last, tau, pre_of_delay, delay, x, hist = _xi_data(case, seed)
    ref = _xi_ref(x, tau, pre_of_delay, delay, K_, sigma)
    scale = _xi_ref(x, tau, pre_of_delay, delay, K_, sigma, absolute=True)
    if XI_CASES[case][8] == 0:
        assert not ref.any()
    else:
        assert np.abs(ref).max() > 1e-3
    n_slots = hist.shape[0]
    if tau + K_ > t_last and XI_CASES[case][8] != 0 and x.shape[0] > n_slots:
        # the cut-off after t_last matters: reading the ring slots of steps > t_last (which hold
        # old steps) would give a different answer
        x_wrapped = _ring_after(x, t_last, n_slots, tau + K_ - t_last)
        assert not np.allclose(_xi_ref(x_wrapped, tau, pre_of_delay, delay, K_, sigma), ref)
    centre, taps = _ref_taps(delay, K_, sigma)
    # the taps as the kernel gets them (rounded to the dtype); the reference keeps float64 taps
    xi = cast(np.full((delay.size, B), np.nan), dtype)
    run_kernel("xi_from_taps", build, cast(hist, dtype), tau, t_last, pre_of_delay, centre.astype(np.int32),
               cast(taps, dtype), xi)
    assert_close(xi.T, ref, dtype, scale, "xi")


@pytest.mark.parametrize("build", BUILDS)
def test_xi_from_taps_noncausal_taps_hand_case(build):
    """delay 0.2 < K: taps m = -K..K, the future steps tau+1..tau+K are used when written."""
    K_, sigma = 2, 1.0
    hist = np.zeros((12, 1, 1))
    hist[7, 0, 0] = 1.0                           # one spike at step 7
    centre = np.zeros(1, np.int32)
    taps = np.zeros((1, 2 * K_ + 1))
    K.gaussian_taps(np.array([0.2]), K_, sigma, centre, taps)
    assert centre[0] == 0
    xi = np.full((1, 1), np.nan)
    # tau = 5: spike at s = 7 = tau - m  ->  m = -2, u = -2.2
    run_kernel("xi_from_taps", build, hist, 5, 11, np.array([0], np.int32), centre, taps, xi)
    assert xi[0, 0] == pytest.approx(float(gauss_deriv(-2.2, sigma)), rel=1e-13)
    assert xi[0, 0] < 0
    # the same spike lies after t_last = 6: it counts as zero
    run_kernel("xi_from_taps", build, hist, 5, 6, np.array([0], np.int32), centre, taps, xi)
    assert xi[0, 0] == 0.0


def _away_from_half_integers(rng, n, max_d):
    d = rng.uniform(0, max_d, n)
    for _ in range(100):
        bad = np.abs(d - np.floor(d) - 0.5) < 1e-3
        if not bad.any():
            break
        d[bad] = rng.uniform(0, max_d, bad.sum())
    assert np.all(np.abs(d - np.floor(d) - 0.5) >= 1e-3)
    return d


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", ["lag_K", "flush_0", "flush_2", "early", "counts", "wrap"])
def test_xi_is_derivative_of_smoothed_train(case, seed):
    """gaussian_taps + xi_from_taps == central finite difference of the smoothed train G(D)."""
    B, K_, sigma, t_last, tau, pre_of_delay, _, x, hist = _xi_data(case, seed)
    max_d = XI_CASES[case][3]
    rng = np.random.default_rng(900 + seed)
    delay = _away_from_half_integers(rng, pre_of_delay.size, max_d)
    delay[:3] = [0.3, 1e-2, max_d - 0.2]          # below K and near the bounds
    h = 1e-6
    fd = np.zeros((B, delay.size))
    for b in range(B):
        for p in range(delay.size):
            seq = x[:, b, pre_of_delay[p]]
            fd[b, p] = (smoothed_train(seq, tau, delay[p] + h, K_, sigma)
                        - smoothed_train(seq, tau, delay[p] - h, K_, sigma)) / (2 * h)
    assert np.abs(fd).max() > 1e-3
    scale = _xi_ref(x, tau, pre_of_delay, delay, K_, sigma, absolute=True)
    centre = np.zeros(delay.size, np.int32)
    taps = np.zeros((delay.size, 2 * K_ + 1))
    K.gaussian_taps(delay, K_, sigma, centre, taps)
    xi_tab = np.zeros((delay.size, B))
    K.xi_from_taps(hist, tau, t_last, pre_of_delay, centre, taps, xi_tab)
    np.testing.assert_allclose(xi_tab.T, fd, rtol=1e-6, atol=1e-8 * (1.0 + scale.max()))


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", ["lag_K", "flush_0", "early", "wrap_flush", "K0"])
def test_xi_pipeline(case, seed, build):
    """The learner's path, gaussian_taps -> xi_from_taps (kernel taps), == the reference in float64."""
    B, K_, sigma, t_last, tau, pre_of_delay, delay, x, hist = _xi_data(case, seed)
    ref = _xi_ref(x, tau, pre_of_delay, delay, K_, sigma)
    assert np.abs(ref).max() > 1e-3
    centre = np.zeros(delay.size, np.int32)
    taps = np.zeros((delay.size, 2 * K_ + 1))
    K.gaussian_taps(delay, K_, sigma, centre, taps)
    tabulated = np.full((delay.size, B), np.nan)
    run_kernel("xi_from_taps", build, hist, tau, t_last, pre_of_delay, centre, taps, tabulated)
    np.testing.assert_allclose(tabulated.T, ref, rtol=F64_RTOL, atol=F64_ATOL)


# ------------------------------------------------------------------------------------------------
# delay_traces
# ------------------------------------------------------------------------------------------------
# (batch, n_pre, n_post, n_steps, min_fan)
DTRACE_CASES = {
    "basic": (3, 6, 5, 6, 0),
    "single": (1, 1, 1, 5, 1),
    "dense": (2, 4, 6, 4, 4),
}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["synaptic", "axonal"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(DTRACE_CASES))
def test_delay_traces(case, seed, mode, dtype, build):
    """grad_d is per synapse (n_syn,) in both modes; with axonal delays xi is per presynaptic unit."""
    B, n_pre, n_post, n_steps, min_fan = DTRACE_CASES[case]
    rng = np.random.default_rng(1000 + seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan)
    n_syn = pre.size
    post = csr_rows(indptr)
    if mode == "synaptic":
        delay_of_syn = np.arange(n_syn, dtype=np.int32)
        n_delays = n_syn
    else:
        delay_of_syn = pre.copy()
        n_delays = n_pre
    if case == "dense" and mode == "axonal":
        assert np.bincount(delay_of_syn).max() > 1      # several synapses share one delay
    weight = f32(rng.normal(0, 1, n_syn))
    eps0 = f32(rng.normal(0, 0.5, (B, n_syn)))
    ebar0 = f32(rng.normal(0, 0.5, (B, n_syn)))
    grad0 = f32(rng.normal(0, 1, n_syn))
    r = (eps0, ebar0, grad0)
    r_abs = (np.abs(eps0), np.abs(ebar0), np.abs(grad0))
    eps, ebar, grad = batch_last(eps0, dtype), batch_last(ebar0, dtype), cast(grad0, dtype)
    for step in range(n_steps):
        xi = f32(rng.normal(0, 0.4, (B, n_delays)))
        if n_delays > 1:
            xi[:, step % n_delays] = 0.0
        psi, signal, decay_eff = _post_factors(rng, B, n_post)
        r = ref_delay_traces(xi, post, delay_of_syn, weight, psi, signal, decay_eff, *TRACE_ARGS, *r)
        r_abs = ref_delay_traces(np.abs(xi), post, delay_of_syn, np.abs(weight), psi, np.abs(signal),
                                 decay_eff, *TRACE_ARGS, *r_abs)
        run_kernel("delay_traces", build, batch_last(xi, dtype), indptr, delay_of_syn, cast(weight, dtype),
                   batch_last(psi, dtype), batch_last(signal, dtype), batch_last(decay_eff, dtype), *TRACE_ARGS,
                   eps, ebar, grad)
        for got, ref, scale, name in zip((eps.T, ebar.T, grad), r, r_abs, ("eps_d", "ebar_d", "grad_d")):
            assert_close(got, ref, dtype, scale, f"{name} at step {step}")
    if n_syn:
        assert np.abs(r[2] - grad0).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# synaptic_delay_traces: xi_from_taps + delay_traces fused, one delay per synapse
# ------------------------------------------------------------------------------------------------
# (batch, n_pre, n_post, max_delay, half_width K, sigma, t0, n_steps, extra slots, rate, min_fan)
# A run: steps t = t0 .. t0 + n_steps - 1 write x^t into the ring, then (when tau = t - K >= 0) the
# kernel runs at tau with t_last = t; then the end-of-sample flush: tau = T - K .. T - 1 with
# t_last = T - 1 (T = t0 + n_steps).  The ring is as short as the lag allows (plus extra slots).
SDT_CASES = {
    "basic": (3, 5, 4, 6, 3, 1.0, 0, 14, 0, 0.7, 0),
    "single": (1, 1, 1, 4, 2, 1.0, 0, 9, 0, 1.0, 1),
    "batch1": (1, 5, 4, 6, 3, 1.0, 200, 8, 0, 0.8, 1),
    "wrap": (2, 4, 3, 5, 2, 0.8, 1000, 10, 0, 0.8, 1),
    "wrap_extra": (2, 5, 3, 6, 3, 1.3, 517, 9, 3, 0.7, 1),
    "K0": (2, 4, 3, 6, 0, 0.5, 0, 10, 0, 0.9, 1),
    "short": (2, 4, 3, 6, 3, 1.0, 0, 2, 0, 0.9, 1),           # sample shorter than the lag: flush only
    "silent": (2, 4, 3, 6, 3, 1.0, 40, 6, 0, 0, 1),
    "all_spiking": (2, 3, 3, 6, 3, 1.0, 30, 6, 0, "ones", 3),
    "counts": (2, 4, 3, 8, 3, 1.5, 300, 8, 0, 2.5, 2),
}


def _sdt_schedule(t0, n_steps, K_):
    """(step written to the ring before the call, or None; tau; t_last) of every kernel call."""
    T = t0 + n_steps
    calls = [(t, t - K_, t) for t in range(t0, T)]
    calls += [(None, tau, T - 1) for tau in range(max(0, T - K_), T)]
    return calls


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(SDT_CASES))
def test_synaptic_delay_traces(case, seed, dtype, build):
    B, n_pre, n_post, max_d, K_, sigma, t0, n_steps, extra, rate, min_fan = SDT_CASES[case]
    rng = np.random.default_rng(1400 + seed)
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=min_fan)
    n_syn = pre.size
    post = csr_rows(indptr)
    c_max = int(math.floor(max_d + 0.5))
    n_slots = 2 * K_ + c_max + 1 + extra      # oldest read: tau - c_max - K = t_last - 2K - c_max
    delay = f32(rng.uniform(0, max_d, n_syn))
    specials = f32([d * max_d / 6.0 for d in XI_SPECIAL_DELAYS])
    k = min(n_syn, specials.size)
    delay[rng.permutation(n_syn)[:k]] = specials[:k] if n_syn > 1 else [0.3]
    centre, taps = _ref_taps(delay, K_, sigma)
    if n_syn > 1:
        assert centre.min() == 0 and centre.max() == c_max
    if K_ > 0:
        assert (centre < K_).any(), "no delay below K: the taps never read steps after tau"
    weight = f32(rng.normal(0, 1, n_syn))
    eps0 = f32(rng.normal(0, 0.5, (B, n_syn)))
    ebar0 = f32(rng.normal(0, 0.5, (B, n_syn)))
    grad0 = f32(rng.normal(0, 1, n_syn))
    x = spikes(rng, (t0 + n_steps, B, n_pre), rate)

    hist = cast(ring_from_history(x, t0 - 1, n_slots) if t0 > 0 else np.zeros((n_slots, n_pre, B)), dtype)
    eps, ebar, grad = batch_last(eps0, dtype), batch_last(ebar0, dtype), cast(grad0, dtype)
    centre_k, taps_k, weight_k = centre.astype(np.int32), cast(taps, dtype), cast(weight, dtype)
    r = (eps0, ebar0, grad0)
    r_abs = (np.abs(eps0), np.abs(ebar0), np.abs(grad0))
    syn = np.arange(n_syn)
    cut_effect = future_effect = 0.0
    n_calls = 0
    for written, tau, t_last in _sdt_schedule(t0, n_steps, K_):
        if written is not None:
            hist[written % n_slots] = x[written].T
        if tau < 0:
            continue
        psi, signal, decay_eff = _post_factors(rng, B, n_post)
        r = ref_synaptic_delay_traces(x, tau, t_last, post, pre, delay, K_, sigma, weight, psi, signal,
                                      decay_eff, *TRACE_ARGS, *r)
        xi_abs = _xi_ref(x[:t_last + 1], tau, pre, delay, K_, sigma, absolute=True)
        r_abs = ref_delay_traces(xi_abs, post, syn, np.abs(weight), psi, np.abs(signal), decay_eff,
                                 *TRACE_ARGS, *r_abs)
        run_kernel("synaptic_delay_traces", build, hist, tau, t_last, indptr, pre, centre_k, taps_k, weight_k,
                   batch_last(psi, dtype), batch_last(signal, dtype), batch_last(decay_eff, dtype), *TRACE_ARGS,
                   eps, ebar, grad)
        for got, ref, scale, name in zip((eps.T, ebar.T, grad), r, r_abs, ("eps_d", "ebar_d", "grad_d")):
            assert_close(got, ref, dtype, scale, f"{name} at tau={tau}, t_last={t_last}")
        n_calls += 1
        # what the case exercises: steps after t_last that the ring still holds (old steps) must
        # count as zero; steps after tau (taps m < 0, delays below K) must be read when written
        xi = ref_xi_history(x, tau, t_last, pre, delay, K_, sigma)
        if tau + K_ > t_last:
            x_wrapped = _ring_after(x, t_last, n_slots, tau + K_ - t_last)
            xi_wrapped = ref_xi_history(x_wrapped, tau, tau + K_, pre, delay, K_, sigma)
            cut_effect = max(cut_effect, np.abs(xi_wrapped - xi).max(initial=0.0))
        xi_causal = ref_xi_history(x, tau, min(tau, t_last), pre, delay, K_, sigma)
        future_effect = max(future_effect, np.abs(xi - xi_causal).max(initial=0.0))

    assert n_calls == max(0, min(n_steps, t0 + n_steps - K_)) + min(K_, t0 + n_steps)
    if n_syn:
        assert np.abs(r[2] - grad0).max() > 1e-3, "gradient did not move: case tests nothing"
    if rate == 0:
        assert cut_effect == 0.0 and future_effect == 0.0
    elif K_ > 0:
        assert future_effect > 1e-3, "no tap read a step after tau"
        if t0 + n_steps >= n_slots:           # the slots of steps > t_last hold old steps
            assert cut_effect > 1e-3, "the t_last cut-off changed nothing"


@pytest.mark.parametrize("build", BUILDS)
def test_synaptic_delay_traces_hand_case(build):
    """One synapse, delay 0.2 < K = 2, one spike at step 7 (ring of 12 slots, zero traces)."""
    K_, sigma = 2, 1.0
    hist = np.zeros((12, 1, 1))
    hist[7, 0, 0] = 1.0
    centre, taps = np.zeros(1, np.int32), np.zeros((1, 2 * K_ + 1))
    K.gaussian_taps(np.array([0.2]), K_, sigma, centre, taps)
    indptr, pre = np.array([0, 1], np.int32), np.array([0], np.int32)
    weight = np.array([2.0])
    ones = np.ones((1, 1))

    def call(tau, t_last, eps, ebar, grad):
        run_kernel("synaptic_delay_traces", build, hist, tau, t_last, indptr, pre, centre, taps, weight,
                   ones, 3.0 * ones, 0.5 * ones, 0.25, 0.5, 1.0, eps, ebar, grad)

    # tau = 5, spike at s = 7 = tau - m -> m = -2, u = -2.2: eps = 0.5 * 0 + 0.25 * 2 * g'(-2.2)
    eps, ebar, grad = np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1)
    call(5, 11, eps, ebar, grad)
    expected = 0.5 * float(gauss_deriv(-2.2, sigma))
    assert eps[0, 0] == pytest.approx(expected, rel=1e-13) and eps[0, 0] < 0
    assert ebar[0, 0] == pytest.approx(expected, rel=1e-13)
    assert grad[0] == pytest.approx(3.0 * expected, rel=1e-13)
    # the spike lies after t_last = 6: xi = 0, only the decay acts
    eps, ebar, grad = np.full((1, 1), 4.0), np.full((1, 1), 2.0), np.full(1, 1.0)
    call(5, 6, eps, ebar, grad)
    assert eps[0, 0] == 2.0 and ebar[0, 0] == 0.5 * 2.0 + 2.0 and grad[0] == 1.0 + 3.0 * 3.0


# ------------------------------------------------------------------------------------------------
# optimizers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("start_step", [1, 7])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 23])
def test_adam_step(n, seed, start_step, dtype):
    rng = np.random.default_rng(1100 + seed)
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    p_ref = f32(rng.normal(0, 1, n))
    if start_step == 1:
        m_ref, v_ref = np.zeros(n), np.zeros(n)
    else:
        m_ref = f32(rng.normal(0, 0.1, n))
        v_ref = f32(rng.uniform(0, 0.05, n))
    param, m, v = cast(p_ref, dtype), cast(m_ref, dtype), cast(v_ref, dtype)
    p0 = p_ref.copy()
    for step in range(start_step, start_step + 3):
        grad = f32(rng.normal(0, 1, n) * 10.0 ** rng.integers(-3, 2, n))
        if n > 1:
            grad[step % n] = 0.0
        p_ref, m_ref, v_ref = ref_adam(p_ref, grad, m_ref, v_ref, lr, b1, b2, eps, step)
        K.adam_step(param, cast(grad, dtype), m, v, lr, b1, b2, eps, step)
        assert_close(m, m_ref, dtype, np.abs(m_ref), f"m at step {step}")
        assert_close(v, v_ref, dtype, np.abs(v_ref), f"v at step {step}")
        assert_close(param, p_ref, dtype, 1.0, f"param at step {step}")
    assert np.abs(p_ref - p0).max() > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step_stores_subnormal_moments_as_zero_and_keeps_nan(dtype):
    """A moment that would fall below the smallest normal number is stored as 0 (no subnormal
    arithmetic, ever slower); one just above it is kept, and a NaN gradient still makes NaN."""
    tiny = np.finfo(dtype).tiny
    m = np.array([1.01, 20.0, -1.01, 0.3, 0.3], dtype) * np.array([tiny, tiny, tiny, 1, 1], dtype)
    v = np.array([1.0005, 20.0, 1.0005, 0.2, 0.2], dtype) * np.array([tiny, tiny, tiny, 1, 1], dtype)
    grad = np.array([0.0, 0.0, 0.0, 0.5, np.nan], dtype)
    param = np.ones(5, dtype)
    K.adam_step(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 3)
    assert m[0] == m[2] == 0.0 and v[0] == v[2] == 0.0             # 0.909 tiny and 0.9995 tiny
    assert m[1] == dtype(0.9) * dtype(20.0 * tiny) and v[1] > tiny      # kept
    assert np.isfinite(param[:4]).all() and np.isnan(param[4]) and np.isnan(m[4]) and np.isnan(v[4])
    assert param[3] < 1.0 and param[0] == param[2] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 17])
def test_sgd_step(n, dtype):
    rng = np.random.default_rng(1200 + n)
    param0 = f32(rng.normal(0, 1, n))
    grad = f32(rng.normal(0, 1, n))
    lr = sf(0.05)
    ref = ref_sgd(param0, grad, lr)
    param = cast(param0, dtype)
    K.sgd_step(param, cast(grad, dtype), lr)
    assert_close(param, ref, dtype, np.abs(param0) + lr * np.abs(grad), "param")
    assert np.abs(ref - param0).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# round_delays
# ------------------------------------------------------------------------------------------------
ROUND_SPECIALS = [-0.3, -1e-6, 0.0, 0.25, 0.49, float(np.nextafter(np.float32(0.5), np.float32(0))),
                  0.5, 0.51, 1.5, 2.5, 2.4999, 5.5, 5.99, 6.0, 6.0001, 9.7, -12.0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["synaptic", "axonal"])
@pytest.mark.parametrize("seed", SEEDS)
def test_round_delays(seed, mode, dtype):
    rng = np.random.default_rng(1300 + seed)
    max_delay = 6.0
    n_pre, n_post = 20, 6
    indptr, pre = make_csr(rng, n_pre, n_post, min_fan=3)
    n_syn = pre.size
    if mode == "synaptic":
        delay_of_syn = np.arange(n_syn, dtype=np.int32)
        n_delays = n_syn
    else:
        delay_of_syn = pre.copy()
        n_delays = n_pre
    delay0 = f32(rng.uniform(-1.0, max_delay + 1.0, n_delays))
    k = min(n_delays, len(ROUND_SPECIALS))
    delay0[rng.permutation(n_delays)[:k]] = f32(ROUND_SPECIALS[:k])
    clipped_ref, steps_ref, count_ref = ref_round_delays(delay0, max_delay, delay_of_syn)
    assert count_ref > 0
    assert steps_ref.min() >= 0 and steps_ref.max() <= max_delay

    delay = cast(delay0, dtype)
    steps = np.full(n_syn, -99, np.int32)
    count = K.round_delays(delay, max_delay, delay_of_syn, steps)
    assert count == count_ref
    np.testing.assert_array_equal(delay, clipped_ref.astype(dtype))
    np.testing.assert_array_equal(steps, steps_ref)
    assert steps.dtype == np.int32
    # nothing left to clip: a second call clips nothing and keeps the steps
    assert K.round_delays(delay, max_delay, delay_of_syn, steps) == 0
    np.testing.assert_array_equal(steps, steps_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_delays_half_up(dtype):
    """floor(D + 1/2): halves round up; the float32 number just below 1/2 rounds down."""
    below_half = float(np.nextafter(np.float32(0.5), np.float32(0)))
    delay = cast([0.5, 1.5, 2.5, below_half, 2.49, 0.0, 4.0, -1.0, 4.7], dtype)
    steps = np.zeros(delay.size, np.int32)
    count = K.round_delays(delay, 4.0, np.arange(delay.size, dtype=np.int32), steps)
    assert count == 2
    np.testing.assert_array_equal(steps, [1, 2, 3, 0, 2, 0, 4, 0, 4])
    np.testing.assert_array_equal(delay[-2:], [0.0, 4.0])


