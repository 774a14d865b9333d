"""Fuzzer for SHD-layout dataset files: generated malformed ``.h5`` / ``.h5.gz`` / ``.h5.zip`` files
through :func:`onlinedelay.datasets.load_dataset`.

Every case is built from ``(seed, index)`` alone, so a failing case is reproduced by its number.
Each case expects one of:

* ``error`` -- one :class:`~onlinedelay.errors.OnlineDelayError` whose one-line message names the
  file and one of the expected fields;
* ``data`` -- the file loads and gives exactly the reference events, labels and class names, and
  frames equal to a naive per-event loop in Python integers (so an int64 overflow shows);
* ``either`` -- (random byte flips, which the format cannot detect) a clean error or a load.

Cases run in a worker process under an address-space limit, one at a time, with a watchdog: a
case that takes longer than ``--timeout`` seconds is a hang, a dead worker a crash.

    python tests/fuzz/fuzz_datasets.py --cases 3000          # the full set, a summary per outcome
    python tests/fuzz/fuzz_datasets.py --case 123 -v         # one case, with its message
    python tests/fuzz/fuzz_datasets.py --cases 60000 --kind flips --seed 2    # 3000 byte-flip cases
    python tests/fuzz/fuzz_datasets.py --package-root /tmp/old   # measure another checkout's onlinedelay

Outcomes other than ``clean error``, ``loaded`` and ``loaded (either)`` are failures: ``crash``
(another exception type, or the worker died), ``hang``, ``wrong data`` (a malformed file loaded,
or a valid one loaded other data), ``bare ValueError``, ``no file name``, ``no field``,
``multi-line``, ``refused valid data``; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_CHANNELS = 700
DT_MS = 10.0
N_STEPS = 40
SLACK = 1e-9


# ----------------------------------------------------------------------------- a valid base file

def base_spec(rng):
    """A small valid file's content: per-sample times/units, labels, keys, speakers, attrs."""
    n = int(rng.integers(1, 6))
    n_classes = int(rng.integers(2, 5))
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(0, 7))
        times.append(np.sort(rng.integers(0, 24000, k)) / 24000.0 * float(rng.choice([0.5, 1.0, 2.0])))
        units.append(rng.integers(0, N_CHANNELS, k))
    if all(t.size == 0 for t in times):
        times[0], units[0] = np.array([0.25]), np.array([3])
    labels = rng.integers(0, n_classes, n)
    return {"times": times, "units": units, "labels": labels,
            "keys": [f"class{c}" for c in range(n_classes)], "speaker": rng.integers(0, 3, n),
            "meta": {"age": np.arange(3, dtype=np.int32)}, "attrs": {}, "times_dtype": np.float64,
            "units_dtype": np.uint16, "labels_dtype": np.int32}


def write_spec(path, spec, override=None):
    """Write ``spec`` in the SHD layout; ``override[field](f, field)`` writes a field its own way
    (``None``: leave the field out)."""
    override = override or {}

    def put(field, default):
        if field in override:
            if override[field] is not None:
                override[field](f, field)
        else:
            default()

    def vlen(field, values, dtype):
        d = f.create_dataset(field, (len(values),), dtype=h5py.vlen_dtype(np.dtype(dtype)))
        with np.errstate(over="ignore"):         # -1e300 as float32 is meant to become -inf
            for i, v in enumerate(values):
                d[i] = np.asarray(v, dtype=dtype)

    with h5py.File(path, "w") as f:
        put("spikes", lambda: f.create_group("spikes"))
        put("spikes/times", lambda: vlen("spikes/times", spec["times"], spec["times_dtype"]))
        put("spikes/units", lambda: vlen("spikes/units", spec["units"], spec["units_dtype"]))
        put("labels", lambda: f.create_dataset("labels", data=np.asarray(spec["labels"], spec["labels_dtype"])))
        put("extra", lambda: f.create_group("extra"))
        if spec["keys"] is not None:
            put("extra/keys", lambda: f.create_dataset("extra/keys",
                                                       data=np.array([k.encode() for k in spec["keys"]])))
        if spec["speaker"] is not None:
            put("extra/speaker", lambda: f.create_dataset("extra/speaker", data=np.asarray(spec["speaker"], np.int32)))
        if spec["meta"] is not None:
            put("extra/meta_info", lambda: [f.create_dataset(f"extra/meta_info/{k}", data=v)
                                            for k, v in spec["meta"].items()])
        for key, value in spec["attrs"].items():
            f.attrs[key] = value
        for field, write in override.items():      # fields the layout does not have
            if field.startswith("+") and write is not None:
                write(f, field[1:])
    return path


def reference(spec, n_channels=N_CHANNELS, class_names=None):
    """What a correct loader returns for ``spec``: events in float64/int64, stably sorted by time."""
    events = []
    for t, u in zip(spec["times"], spec["units"]):
        t = np.asarray(t, dtype=spec["times_dtype"]).astype(np.float64)
        u = np.asarray(u).astype(np.int64)
        order = np.argsort(t, kind="stable")
        events.append((t[order], u[order]))
    labels = np.asarray(spec["labels"]).astype(np.int64)
    if class_names is None:
        class_names = list(spec["keys"]) if spec["keys"] is not None else [str(k) for k in range(labels.max() + 1)]
    speakers = None if spec["speaker"] is None else np.asarray(spec["speaker"]).astype(np.int64)
    return {"events": events, "labels": labels, "class_names": class_names, "n_channels": n_channels,
            "speakers": speakers}


# ----------------------------------------------------------------------------- field writers

def as_group(f, name):
    f.create_group(name)


def as_dataset(value):
    return lambda f, name: f.create_dataset(name, data=value)


def as_vlen(values, dtype):
    def write(f, name):
        d = f.create_dataset(name, (len(values),), dtype=h5py.vlen_dtype(np.dtype(dtype)))
        for i, v in enumerate(values):
            d[i] = np.asarray(v, dtype=dtype)
    return write


def as_declared(shape, dtype, chunks=True):
    """A dataset that declares ``shape`` but stores nothing (fill values only)."""
    def write(f, name):
        f.create_dataset(name, shape, dtype=dtype, chunks=(min(shape[0], 1024),) if chunks else None)
    return write


def as_external_storage(secret: Path, dtype):
    """A dataset whose bytes live in another local file (HDF5 external storage)."""
    def write(f, name):
        size = secret.stat().st_size
        count = size // np.dtype(dtype).itemsize
        f.create_dataset(name, (count,), dtype=dtype, external=[(str(secret), 0, count * np.dtype(dtype).itemsize)])
    return write


def as_external_link(other: Path, target: str):
    def write(f, name):
        f[name] = h5py.ExternalLink(str(other), target)
    return write


def as_soft_link(target: str, data=None):
    def write(f, name):
        if data is not None:
            data(f, target)
        f[name] = h5py.SoftLink(target)
    return write


def as_virtual(other: Path, target: str, shape, dtype):
    def write(f, name):
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(str(other), target, shape=shape)
        f.create_virtual_dataset(name, layout)
    return write


# ----------------------------------------------------------------------------- the cases

class Case:
    def __init__(self, path, expect, fields=(), ref=None, note=""):
        self.path, self.expect, self.fields, self.ref, self.note = Path(path), expect, tuple(fields), ref, note


def _err(path, fields, note):
    return Case(path, "error", fields, note=note)


def _data(path, spec, note, **ref_kw):
    return Case(path, "data", ref=reference(spec, **ref_kw), note=note)


def k_valid(rng, d):
    spec = base_spec(rng)
    variant = int(rng.integers(0, 10))
    note = "valid"
    ref_kw = {}
    if variant == 1:
        spec["times_dtype"] = [np.float16, np.float32][int(rng.integers(0, 2))]
        note = f"valid {np.dtype(spec['times_dtype'])} times"
    elif variant == 2:
        spec["units_dtype"] = [np.int16, np.int32, np.uint32, np.int64, np.uint64][int(rng.integers(0, 5))]
        note = f"valid {np.dtype(spec['units_dtype'])} units"
    elif variant == 3:
        spec["keys"] = None
        note = "valid, no keys"
    elif variant == 4:
        spec["speaker"], spec["meta"] = None, None
        note = "valid, no speaker"
    elif variant == 5:
        for t in spec["times"]:
            rng.shuffle(t)
        note = "valid, unsorted (repaired)"
    elif variant == 6:
        spec["times"][0], spec["units"][0] = np.zeros(0), np.zeros(0, np.int64)
        if all(t.size == 0 for t in spec["times"]):
            spec["times"].append(np.array([0.1]))
            spec["units"].append(np.array([1]))
            spec["labels"] = np.append(spec["labels"], 0)
            spec["speaker"] = np.append(spec["speaker"], 0)
        note = "valid, an empty sample"
    elif variant == 7:
        spec["attrs"] = {"n_channels": 64}
        spec["units"] = [u % 64 for u in spec["units"]]
        ref_kw["n_channels"] = 64
        note = "valid, n_channels=64"
    elif variant == 8:
        spec["labels_dtype"] = [np.uint8, np.int64, np.float64][int(rng.integers(0, 3))]
        note = f"valid {np.dtype(spec['labels_dtype'])} labels"
    elif variant == 9:
        spec["times_dtype"] = np.int32
        spec["times"] = [np.sort(rng.integers(0, 3, t.size)) for t in spec["times"]]
        note = "valid integer times"
    path = write_spec(d / "valid.h5", spec)
    return _data(path, spec, note, **ref_kw)


def k_wrong_kind(rng, d):
    """A group where a dataset belongs, or a dataset where a group belongs."""
    spec = base_spec(rng)
    field = ["spikes/times", "spikes/units", "labels", "extra/keys", "extra/speaker", "spikes", "extra",
             "extra/meta_info", "extra/meta_info/age"][int(rng.integers(0, 9))]
    override = {}
    if field in ("spikes", "extra"):
        override[field] = as_dataset(np.zeros(3))
        override.update({f: None for f in ("spikes/times", "spikes/units") if field == "spikes"})
        override.update({f: None for f in ("extra/keys", "extra/speaker", "extra/meta_info") if field == "extra"})
    elif field == "extra/meta_info":
        override[field] = as_dataset(np.zeros(3))
    elif field == "extra/meta_info/age":
        override["extra/meta_info"] = lambda f, name: f.create_group(f"{name}/age")
    else:
        override[field] = as_group
    path = write_spec(d / "kind.h5", spec, override)
    return _err(path, [field], f"{field} of the wrong kind")


def k_missing(rng, d):
    spec = base_spec(rng)
    field = ["spikes", "spikes/times", "spikes/units", "labels"][int(rng.integers(0, 4))]
    override = {field: None}
    if field == "spikes":
        override.update({"spikes/times": None, "spikes/units": None})
    path = write_spec(d / "missing.h5", spec, override)
    return _err(path, [field], f"{field} missing")


def k_dtype(rng, d):
    spec = base_spec(rng)
    n = len(spec["times"])
    variant = int(rng.integers(0, 12))
    if variant == 0:
        field, w, note = "spikes/times", as_vlen(spec["times"], np.complex128), "complex times"
    elif variant == 1:
        field, w, note = "spikes/units", as_vlen(spec["units"], np.float32), "float units"
    elif variant == 2:
        field, w, note = "spikes/times", as_dataset(np.zeros(n)), "times not variable-length"
    elif variant == 3:
        field, w, note = "spikes/units", as_dataset(np.zeros((n, 4), np.uint16)), "units 2-D fixed"
    elif variant == 4:
        field, w, note = "labels", as_dataset(np.array([b"a"] * n)), "string labels"
    elif variant == 5:
        field, w, note = "labels", as_dataset(np.full(n, 0.5)), "non-integer labels"
    elif variant == 6:
        field, w, note = "labels", as_dataset(np.full(n, np.nan)), "NaN labels"
    elif variant == 7:
        dt = np.dtype([("a", np.int32), ("b", np.float32)])
        field, w, note = "labels", as_dataset(np.zeros(n, dt)), "compound labels"
    elif variant == 8:
        field, w, note = "extra/keys", as_dataset(np.arange(len(spec["keys"]), dtype=np.float64)), "numeric keys"
    elif variant == 9:
        field, w, note = "extra/speaker", as_dataset(np.full(n, 0.5)), "float speakers"
    elif variant == 10:
        field, w, note = "labels", as_vlen([[0]] * n, np.int32), "vlen labels"
    else:
        field, w, note = "spikes/times", as_dataset(np.array([b"x"] * n)), "string times"
    path = write_spec(d / "dtype.h5", spec, {field: w})
    return _err(path, [field], note)


def k_shape(rng, d):
    spec = base_spec(rng)
    n = len(spec["times"])
    variant = int(rng.integers(0, 9))
    if variant == 0:
        field, w, note = "labels", as_dataset(np.zeros((n, 2), np.int32)), "2-D labels"
    elif variant == 1:
        field, w, note = "labels", as_dataset(np.int32(0)), "scalar labels"
    elif variant == 2:
        field, w, note = "labels", as_dataset(np.zeros(0, np.int32)), "no samples"
        spec["times"], spec["units"] = [], []
        spec["speaker"] = None
    elif variant == 3:
        field, w, note = "labels", as_dataset(np.zeros(n + 1, np.int32)), "labels longer than spikes"
    elif variant == 4:
        field, w, note = "spikes/units", as_vlen(spec["units"][:-1] if n > 1 else [], np.uint16), "units shorter"
        field = "spikes/units"
    elif variant == 5:
        field, w, note = "extra/speaker", as_dataset(np.zeros(n + 2, np.int32)), "speaker longer"
    elif variant == 6:
        field, w, note = "extra/keys", as_dataset(np.array([[b"a", b"b"], [b"c", b"d"]])), "2-D keys"
    elif variant == 7:
        field, w, note = "extra/keys", as_dataset(np.array([b"a", b"a"] + [f"k{i}".encode() for i in range(5)])), \
            "duplicate keys"
    else:
        field, w, note = "spikes/times", as_vlen(spec["times"] + [[0.1]], np.float64), "times longer"
    path = write_spec(d / "shape.h5", spec, {field: w})
    fields = [field, "labels"] if field.startswith("spikes") or field == "labels" else [field]
    return _err(path, fields, note)


def k_ragged(rng, d):
    spec = base_spec(rng)
    i = int(rng.integers(0, len(spec["times"])))
    extra = int(rng.integers(1, 4))
    if rng.random() < 0.5:
        spec["units"][i] = np.concatenate([spec["units"][i], np.arange(extra)])
    elif spec["units"][i].size:
        spec["units"][i] = spec["units"][i][:-1]
    else:
        spec["times"][i] = np.array([0.1] * extra)
    path = write_spec(d / "ragged.h5", spec)
    return _err(path, ["spikes/times", "spikes/units"], "times and units differ in length")


def k_bad_times(rng, d):
    spec = base_spec(rng)
    i = int(np.flatnonzero([t.size for t in spec["times"]])[0])
    j = int(rng.integers(0, spec["times"][i].size))
    bad = [np.nan, np.inf, -np.inf, -1e-3, -1e300][int(rng.integers(0, 5))]
    spec["times"][i] = spec["times"][i].copy()
    spec["times"][i][j] = bad
    if rng.random() < 0.3:
        spec["times_dtype"] = np.float32
    path = write_spec(d / "times.h5", spec)
    return _err(path, ["spikes/times"], f"time {bad}")


def k_huge_times(rng, d):
    """Finite huge times: legal data; frames must clip them into the last step (or drop them)."""
    spec = base_spec(rng)
    i = int(np.flatnonzero([t.size for t in spec["times"]])[0])
    big = float([9.2e16, 9.3e16, 1e17, 1e19, 1e300, 3.0e38, 4.0e15][int(rng.integers(0, 7))])
    if big > 3.4e38:
        spec["times_dtype"] = np.float64
    elif rng.random() < 0.5:
        spec["times_dtype"] = np.float32
    spec["times"][i] = np.append(spec["times"][i], big)
    spec["units"][i] = np.append(spec["units"][i], 5)
    path = write_spec(d / "huge.h5", spec)
    return _data(path, spec, f"time {big:g} s")


def k_units(rng, d):
    spec = base_spec(rng)
    i = int(np.flatnonzero([t.size for t in spec["times"]])[0])
    variant = int(rng.integers(0, 4))
    spec["units"][i] = spec["units"][i].copy().astype(np.int64)
    if variant == 0:
        spec["units"][i][0] = N_CHANNELS
    elif variant == 1:
        spec["units"][i][0] = 65535
    elif variant == 2:
        spec["units_dtype"] = np.int32
        spec["units"][i][0] = -1
    else:
        spec["units_dtype"] = np.uint64
        spec["units"][i] = spec["units"][i].astype(np.uint64)
        spec["units"][i][0] = np.uint64(2**64 - 1)
    path = write_spec(d / "units.h5", spec)
    return _err(path, ["spikes/units"], f"unit out of range ({variant})")


def k_n_channels(rng, d):
    spec = base_spec(rng)
    value = [0, -3, 2.5, "many", 10**12, True, np.array([700, 700]), 2**40][int(rng.integers(0, 8))]
    spec["attrs"] = {"n_channels": value}
    path = write_spec(d / "nch.h5", spec)
    return _err(path, ["n_channels"], f"n_channels={value!r}")


def k_labels(rng, d):
    spec = base_spec(rng)
    n = len(spec["labels"])
    variant = int(rng.integers(0, 5))
    labels = spec["labels"].copy().astype(np.int64)
    if variant == 0:
        labels[-1] = len(spec["keys"])
        note = "label == len(keys)"
    elif variant == 1:
        labels[0] = -1
        note = "negative label"
    elif variant == 2:
        spec["keys"] = None
        labels = np.append(labels, [10**9])
        note = "label 1e9 without keys"
    elif variant == 3:
        spec["labels_dtype"] = np.uint64
        labels = labels.astype(np.uint64)
        labels[-1] = np.uint64(2**63 + 5)
        note = "label 2^63+5"
    else:
        spec["keys"] = None
        spec["labels_dtype"] = np.int64
        labels = np.append(labels, [2**62])
        note = "label 2^62 without keys"
    if len(labels) > n:
        spec["times"].append(np.array([0.2]))
        spec["units"].append(np.array([7]))
        spec["speaker"] = np.append(spec["speaker"], 0)
    spec["labels"] = labels
    path = write_spec(d / "labels.h5", spec)
    return _err(path, ["labels"], note)


def k_keys(rng, d):
    """Keys that are legal but unusual: latin-1 bytes, variable-length strings."""
    spec = base_spec(rng)
    if rng.random() < 0.5:
        raw = [b"f\xfcnf"] + [f"k{i}".encode() for i in range(1, len(spec["keys"]))]
        names = ["f\u00fcnf"] + [f"k{i}" for i in range(1, len(spec["keys"]))]
        path = write_spec(d / "keys.h5", spec, {"extra/keys": as_dataset(np.array(raw))})
        return _data(path, spec, "latin-1 keys", class_names=names)
    names = [f"w\u00f6rd{i}" for i in range(len(spec["keys"]))]
    write = lambda f, name: f.create_dataset(name, data=names, dtype=h5py.string_dtype())  # noqa: E731
    path = write_spec(d / "keys.h5", spec, {"extra/keys": write})
    return _data(path, spec, "vlen utf-8 keys", class_names=names)


def k_declared(rng, d):
    """A small file that declares far more than it stores."""
    spec = base_spec(rng)
    big = int([10**7, 10**8, 10**9][int(rng.integers(0, 3))])
    variant = int(rng.integers(0, 5))
    if variant == 0:
        override = {"labels": as_declared((big,), np.int64),
                    "spikes/times": as_declared((big,), h5py.vlen_dtype(np.float32)),
                    "spikes/units": as_declared((big,), h5py.vlen_dtype(np.uint16)),
                    "extra/speaker": None}
        field = "labels"
    elif variant == 1:
        override = {"extra/keys": as_declared((big,), "S8")}
        field = "extra/keys"
    elif variant == 2:
        override = {"extra/meta_info": lambda f, name: as_declared((big,), np.float64)(f, name + "/age")}
        field = "extra/meta_info/age"
    elif variant == 3:
        override = {"extra/speaker": as_declared((len(spec["labels"]),), np.int32, chunks=False)}
        field = "extra/speaker"
    else:
        n = len(spec["labels"])
        override = {"spikes/times": as_declared((n,), h5py.vlen_dtype(np.float32)),
                    "spikes/units": as_declared((n,), h5py.vlen_dtype(np.uint16))}
        field = "spikes/times"
    path = write_spec(d / "declared.h5", spec, override)
    size = len(spec["labels"]) if variant in (3, 4) else big
    return _err(path, [field, field.split("/")[0], "labels", "spikes"], f"{field} declares {size}, stores none")


def k_links(rng, d):
    """External storage, external links, soft links and virtual datasets: all refused."""
    spec = base_spec(rng)
    secret = d / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    other = write_spec(d / "other.h5", base_spec(rng))
    n = len(spec["labels"])
    variant = int(rng.integers(0, 8))
    if variant == 0:
        field, w = "extra/keys", as_external_storage(secret, "S1")
    elif variant == 1:
        field, w = "labels", as_external_storage(secret, np.uint8)
    elif variant == 2:
        field, w = "labels", as_external_link(other, "/labels")
    elif variant == 3:
        field, w = "spikes/times", as_external_link(other, "/spikes/times")
    elif variant == 4:
        field, w = "extra/keys", as_soft_link("/hidden/keys", as_dataset(np.array([b"x", b"y", b"z", b"w", b"v"])))
    elif variant == 5:
        field, w = "labels", as_soft_link("/nowhere")
    elif variant == 6:
        field, w = "labels", as_virtual(other, "labels", (len(h5py.File(other, "r")["labels"]),), np.int32)
    else:
        field, w = "spikes", as_external_link(other, "/spikes")
        spec_override = {"spikes": w, "spikes/times": None, "spikes/units": None}
        path = write_spec(d / "links.h5", spec, spec_override)
        return _err(path, [field], "spikes as an external link")
    if variant == 1:
        spec["labels"] = np.zeros(n, np.int32)
    path = write_spec(d / "links.h5", spec, {field: w})
    return _err(path, [field], f"{field}: link/external variant {variant}")


def k_bytes(rng, d):
    """Truncated files, non-HDF5 bytes, empty files."""
    spec = base_spec(rng)
    valid = write_spec(d / "src.h5", spec)
    raw = valid.read_bytes()
    variant = int(rng.integers(0, 4))
    path = d / "bytes.h5"
    if variant == 0:
        path.write_bytes(raw[: int(rng.integers(0, len(raw) - 1))])
        note = "truncated"
    elif variant == 1:
        path.write_bytes(b"")
        note = "empty file"
    elif variant == 2:
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes())
        note = "random bytes"
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
        note = "HDF5 signature, garbage after"
    if variant == 0:
        return Case(path, "either", [], note=note)       # a cut after the last used byte still loads
    return _err(path, [], note)


def k_flips(rng, d):
    spec = base_spec(rng)
    valid = write_spec(d / "src.h5", spec)
    raw = bytearray(valid.read_bytes())
    for _ in range(int(rng.integers(1, 9))):
        raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
    path = d / "flipped.h5"
    path.write_bytes(bytes(raw))
    return Case(path, "either", [], note="byte flips")


def _zip_bytes(members, method=zipfile.ZIP_DEFLATED):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(name, data)
    return bytearray(buf.getvalue())


def _patch_zip(raw: bytearray, method=None, flag=None):
    """Set the compression method / general-purpose flag in every local and central header."""
    for sig, method_at, flag_at in ((b"PK\x03\x04", 8, 6), (b"PK\x01\x02", 10, 8)):
        start = 0
        while (i := raw.find(sig, start)) >= 0:
            if method is not None:
                raw[i + method_at:i + method_at + 2] = struct.pack("<H", method)
            if flag is not None:
                old = struct.unpack("<H", raw[i + flag_at:i + flag_at + 2])[0]
                raw[i + flag_at:i + flag_at + 2] = struct.pack("<H", old | flag)
            start = i + 4
    return raw


def k_wrapped(rng, d):
    spec = base_spec(rng)
    valid = write_spec(d / "inner.h5", spec)
    raw = valid.read_bytes()
    variant = int(rng.integers(0, 14))
    if variant == 0:
        path = d / "ok.h5.gz"
        path.write_bytes(gzip.compress(raw))
        return _data(path, spec, "valid gzip")
    if variant == 1:
        path = d / "ok.h5.zip"
        method = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA][int(rng.integers(0, 4))]
        path.write_bytes(bytes(_zip_bytes([("shd_x.h5", raw)], method)))
        return _data(path, spec, f"valid zip method {method}")
    if variant == 2:
        data = bytearray(gzip.compress(raw))
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(10, len(data)))] ^= int(rng.integers(1, 256))
        path = d / "corrupt.h5.gz"
        path.write_bytes(bytes(data))
        return Case(path, "either", [], note="corrupt gzip stream")
    if variant == 3:
        data = gzip.compress(raw)
        path = d / "cut.h5.gz"
        path.write_bytes(data[: int(rng.integers(1, len(data) - 8))])
        return _err(path, [], "truncated gzip")
    if variant == 4:
        path = d / "notgz.h5.gz"
        path.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        return _err(path, [], "not gzip")
    if variant == 5:
        path = d / "junk.h5.gz"
        path.write_bytes(gzip.compress(b"this is not hdf5" * 20))
        return _err(path, [], "gzip of non-HDF5")
    if variant == 6:
        path = d / "method.h5.zip"
        path.write_bytes(bytes(_patch_zip(_zip_bytes([("x.h5", raw)]), method=int(rng.choice([1, 6, 97, 99])))))
        return _err(path, ["x.h5"], "zip member with an unknown method")
    if variant == 7:
        path = d / "crypt.h5.zip"
        path.write_bytes(bytes(_patch_zip(_zip_bytes([("x.h5", raw)]), flag=0x1)))
        return _err(path, ["x.h5"], "zip member with the encrypted flag")
    if variant == 8:
        path = d / "bad.h5.zip"
        path.write_bytes(b"PK\x03\x04" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        return _err(path, [], "bad zip")
    if variant == 9:
        data = _zip_bytes([("x.h5", raw)])
        path = d / "cut.h5.zip"
        path.write_bytes(bytes(data[: int(rng.integers(1, len(data) - 1))]))
        return _err(path, [], "truncated zip")
    if variant == 10:
        path = d / "two.h5.zip"
        path.write_bytes(bytes(_zip_bytes([("a.h5", raw), ("b.h5", raw)])))
        return _err(path, ["a.h5"], "two .h5 members")
    if variant == 11:
        data = _zip_bytes([("x.h5", raw)], zipfile.ZIP_STORED)
        start = data.find(b"\x89HDF")
        for _ in range(3):
            data[start + int(rng.integers(0, len(raw)))] ^= 0xFF
        path = d / "crc.h5.zip"
        path.write_bytes(bytes(data))
        return _err(path, ["x.h5"], "zip member with a bad CRC")
    if variant == 12:
        path = d / "dir.h5.zip"
        path.write_bytes(bytes(_zip_bytes([("x.h5/", b""), ("readme.txt", b"hi")])))
        return _err(path, [], "zip with a directory named .h5")
    bad = bytearray(raw)
    bad[: 8] = b"garbage!"
    path = d / "inner_bad.h5.zip"
    path.write_bytes(bytes(_zip_bytes([("x.h5", bytes(bad))])))
    return _err(path, [], "zip of a non-HDF5 member")


def k_vlen(rng, d):
    """Variable-length storage: chunked (+ deflate) is legal; corrupt stored elements are refused."""
    spec = base_spec(rng)
    variant = int(rng.integers(0, 5))
    if variant == 0:
        gzip_ = bool(rng.integers(0, 2))

        def chunked(values, dtype):
            def write(f, name):
                dd = f.create_dataset(name, (len(values),), dtype=h5py.vlen_dtype(np.dtype(dtype)),
                                      chunks=(min(2, len(values)),),
                                      compression="gzip" if gzip_ else None)
                for i, v in enumerate(values):
                    dd[i] = np.asarray(v, dtype=dtype)
            return write
        path = write_spec(d / "chunked.h5", spec, {"spikes/times": chunked(spec["times"], spec["times_dtype"]),
                                                   "spikes/units": chunked(spec["units"], spec["units_dtype"])})
        return _data(path, spec, f"valid chunked vlen (gzip={gzip_})")
    path = write_spec(d / "refs.h5", spec)
    field = ["spikes/times", "spikes/units"][int(rng.integers(0, 2))]
    with h5py.File(path, "r") as f:
        offset = f[field].id.get_offset()
    raw = bytearray(path.read_bytes())
    i = int(np.flatnonzero([t.size for t in spec["times"]])[0])
    at = offset + 16 * i
    if variant == 1:
        raw[at:at + 4] = struct.pack("<I", int(rng.choice([2**32 - 1, 2**28, 10**6])))   # length
        note = "element claims a huge length"
    elif variant == 2:
        raw[at + 4:at + 12] = struct.pack("<Q", int(rng.integers(0, len(raw))))          # collection address
        note = "element points at no collection"
    elif variant == 3:
        raw[at + 12:at + 16] = struct.pack("<I", int(rng.integers(50, 2**32)))           # object index
        note = "element points at no object"
    else:
        raw[at:at + 4] = struct.pack("<I", spec["times"][i].size + 1)
        note = "element one value longer than its object"
    path.write_bytes(bytes(raw))
    return _err(path, [field, "spikes"], note)


KINDS = [k_valid, k_valid, k_wrong_kind, k_missing, k_dtype, k_shape, k_ragged, k_bad_times, k_huge_times,
         k_units, k_n_channels, k_labels, k_keys, k_declared, k_links, k_bytes, k_flips, k_wrapped, k_wrapped,
         k_vlen]


def make_case(seed: int, index: int, folder: Path) -> Case:
    """Case ``index`` of ``seed``, its files written into ``folder``."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % len(KINDS)]
    case = kind(rng, folder)
    case.note = f"{kind.__name__[2:]}: {case.note}"
    return case


# ----------------------------------------------------------------------------- judging one case

def naive_frames(events, n_steps, overflow):
    """Frames by a per-event loop in Python floats and ints (no int64 anywhere)."""
    out = np.zeros((n_steps, len(events), N_CHANNELS), dtype=np.int64)
    for b, (t, u) in enumerate(events):
        for ti, ui in zip(t.tolist(), u.tolist()):
            k = math.floor(ti * (1000.0 / DT_MS) + SLACK)
            if k >= n_steps:
                if overflow == "drop":
                    continue
                k = n_steps - 1
            out[k, b, ui] += 1
    return out


def _compare(ds, ref):
    if len(ds) != len(ref["labels"]):
        return f"{len(ds)} samples, expected {len(ref['labels'])}"
    if list(ds.class_names) != list(ref["class_names"]):
        return f"class names {list(ds.class_names)[:6]} expected {ref['class_names'][:6]}"
    if not np.array_equal(ds.labels, ref["labels"]):
        return f"labels {ds.labels} expected {ref['labels']}"
    if ds.n_channels != ref["n_channels"]:
        return f"n_channels {ds.n_channels} expected {ref['n_channels']}"
    if (ds.speakers is None) != (ref["speakers"] is None) or (
            ref["speakers"] is not None and not np.array_equal(ds.speakers, ref["speakers"])):
        return f"speakers {ds.speakers} expected {ref['speakers']}"
    for i, (t, u) in enumerate(ref["events"]):
        got_t, got_u = ds.events(i)
        if not (np.array_equal(got_t, t) and np.array_equal(got_u, u)):
            return f"sample {i}: events {got_t[:4]} {got_u[:4]} expected {t[:4]} {u[:4]}"
    pool = 1
    for overflow in ("clip", "drop"):
        x = ds.frames_batch(np.arange(len(ds)), dt_ms=DT_MS, n_steps=N_STEPS, pool=pool, overflow=overflow)
        want = naive_frames(ref["events"], N_STEPS, overflow)
        if ref["n_channels"] != N_CHANNELS:
            want = want[:, :, :ref["n_channels"]]
        if not np.array_equal(x.astype(np.int64), want):
            bad = np.argwhere(x.astype(np.int64) != want)[0]
            return f"frames ({overflow}) differ at step/sample/channel {bad.tolist()}"
    return None


def judge(case: Case, cache_dir: Path) -> dict:
    """Load ``case`` and classify the outcome (see the module docstring)."""
    import warnings

    from onlinedelay.datasets import load_dataset

    try:
        from onlinedelay.errors import OnlineDelayError
    except ImportError:                                   # before errors.py existed
        OnlineDelayError = ()
    out = {"note": case.note, "expect": case.expect}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset(case.path, cache_dir=cache_dir)
            problem = _compare(ds, case.ref) if case.expect == "data" else None
    except Exception as exc:      # noqa: BLE001 -- classifying every exception is the point
        message = str(exc)
        out["error"] = f"{type(exc).__name__}: {message}"[:400]
        own = type(exc).__module__.startswith("onlinedelay")
        out["own_type"] = bool(OnlineDelayError) and isinstance(exc, OnlineDelayError)
        if not own:
            out["outcome"] = "bare ValueError" if type(exc) is ValueError else "crash"
            out["where"] = traceback.format_exc(limit=-2).strip().splitlines()[-3:]
        elif case.expect == "data":
            out["outcome"] = "refused valid data"
        elif str(case.path) not in message:
            out["outcome"] = "no file name"
        elif case.fields and not any(f in message for f in case.fields):
            out["outcome"] = "no field"
        elif "\n" in message:
            out["outcome"] = "multi-line"
        else:
            out["outcome"] = "clean error"
        return out
    if case.expect == "error":
        out["outcome"] = "wrong data"
        out["error"] = f"loaded {len(ds)} samples, classes {ds.class_names[:5]}"
    elif case.expect == "data" and problem:
        out["outcome"] = "wrong data"
        out["error"] = problem
    else:
        out["outcome"] = "loaded" if case.expect == "data" else "loaded (either)"
    return out


# ----------------------------------------------------------------------------- running, time-boxed

def _worker(conn, seed, memory_mb, scratch, package_root):
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    if package_root:
        sys.path.insert(0, str(package_root))
    import onlinedelay.datasets  # noqa: F401 -- import before the first case's clock starts

    conn.send("ready")
    while True:
        index = conn.recv()
        if index is None:
            return
        folder = Path(tempfile.mkdtemp(prefix=f"case{index}_", dir=scratch))
        try:
            case = make_case(seed, index, folder)
            start = time.perf_counter()
            result = judge(case, folder / "cache")
            result["seconds"] = round(time.perf_counter() - start, 3)
        except BaseException as exc:   # noqa: BLE001 -- a generator failure is reported, not fatal
            result = {"outcome": "generator error", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        conn.send(result)


def run_cases(indices, seed=0, timeout_s=10.0, memory_mb=3072, progress=None, package_root=None):
    """Run cases in one worker process at a time, each time-boxed; returns {index: result}."""
    ctx = multiprocessing.get_context("spawn")
    results = {}
    pending = list(indices)
    with tempfile.TemporaryDirectory(prefix="fuzz_datasets_") as scratch:   # what killed workers leave
        while pending:
            _run_worker(ctx, pending, results, seed, timeout_s, memory_mb, scratch, progress, package_root)
    return results


def _run_worker(ctx, pending, results, seed, timeout_s, memory_mb, scratch, progress, package_root):
    """Start a worker and feed it cases until they run out, one hangs or the worker dies."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(child, seed, memory_mb, scratch, package_root), daemon=True)
    proc.start()
    try:
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")
        while pending:
            index = pending.pop(0)
            parent.send(index)
            result = None
            if parent.poll(timeout_s):
                try:
                    result = parent.recv()
                except EOFError:
                    pass
            lost = result is None
            if lost:
                proc.join(1)
                result = ({"outcome": "hang", "error": f"no answer after {timeout_s} s"} if proc.is_alive() else
                          {"outcome": "crash", "error": f"worker died (exit {proc.exitcode})"})
                result["note"] = KINDS[index % len(KINDS)].__name__[2:] + ": (see --case)"
            results[index] = result
            if progress:
                progress(index, result)
            if lost:                  # the worker is stuck or dead: start a fresh one
                return
        parent.send(None)
    finally:
        proc.kill()
        proc.join()


BAD = ("crash", "hang", "wrong data", "bare ValueError", "no file name", "no field", "multi-line",
       "refused valid data", "generator error")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, action="append", help="run only this case (repeatable)")
    parser.add_argument("--kind", help="run only the cases of this generator among the first --cases (e.g. flips)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    parser.add_argument("--memory-mb", type=int, default=3072, help="address-space limit of the worker")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--package-root", type=Path,
                        help="import onlinedelay from this folder (e.g. an older checkout, to measure it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every bad case")
    args = parser.parse_args(argv)
    indices = args.case or [i for i in range(args.cases)
                            if args.kind in (None, KINDS[i % len(KINDS)].__name__[2:])]
    start = time.perf_counter()
    results = run_cases(indices, args.seed, args.timeout, args.memory_mb, package_root=args.package_root)
    seconds = time.perf_counter() - start
    counts = Counter(r["outcome"] for r in results.values())
    kinds = Counter((r.get("note", "?").split(":")[0], r["outcome"]) for r in results.values())
    print(f"{len(results)} cases (seed {args.seed}) in {seconds:.0f} s; peak worker RSS "
          f"{max(r.get('rss_mb', 0) for r in results.values())} MB")
    for outcome, n in counts.most_common():
        print(f"  {outcome:20s} {n}")
    foreign = sum(1 for r in results.values() if r["outcome"] == "clean error" and not r.get("own_type"))
    print(f"  (clean errors not of type OnlineDelayError: {foreign})")
    print("by kind:")
    for (kind, outcome), n in sorted(kinds.items()):
        print(f"  {kind:12s} {outcome:20s} {n}")
    bad = {i: r for i, r in results.items() if r["outcome"] in BAD}
    shown = set()
    for i, r in sorted(bad.items()):
        key = (r.get("note"), r["outcome"])
        if args.verbose or key not in shown:
            print(f"case {i} [{r['outcome']}] {r.get('note')}: {r.get('error')}"
                  + (f"\n    {' | '.join(r['where'])}" if args.verbose and r.get("where") else ""))
            shown.add(key)
    if args.verbose:
        for i in indices:
            if i not in bad:
                print(f"case {i} [{results[i]['outcome']}] {results[i].get('note')}: {results[i].get('error', '')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
