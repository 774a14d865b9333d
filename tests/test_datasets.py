"""Datasets: SHD-layout reading and validation, binning, splits, checksums and download, the
embedded ``digits`` set, and the cochlear front end against the real converter's output.

Nothing here downloads or needs espeak-ng: the download tests use a local address, and the
generator is tested on the frozen data and on synthetic waveforms.
"""

from __future__ import annotations

import gzip
import http.server
import io
import shutil
import socketserver
import threading
import time
import wave
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from onlinedelay.datasets import (DATASETS, ChecksumError, DatasetFormatError, DatasetWarning, DownloadError,
                                  EventDataset, bin_events, embedded_path, fetch, load_dataset, read_events_file,
                                  split_by_speaker, steps_for, write_events_file)
from onlinedelay.errors import OnlineDelayError
from onlinedelay.datasets.registry import candidate_paths, md5_file, verify_checksum

HERE = Path(__file__).resolve().parent
REFERENCE_WAV = HERE / "data" / "lauscher_spoken_digit.wav"
REFERENCE_SPIKES = HERE / "data" / "lauscher_spoken_digit_700ch_spikes.npz"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Keep every cache write inside pytest's temporary tree; no data dir from the environment."""
    monkeypatch.setenv("ONLINEDELAY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("ONLINEDELAY_DATA_DIR", raising=False)
    monkeypatch.delenv("ONLINEDELAY_DATASET_URLS", raising=False)


# --------------------------------------------------------------------------- tiny fixture files

def make_samples(n=24, n_classes=4, n_speakers=6, n_channels=700, seed=0, grid=1 / 24000):
    """Random sorted events on the SHD time grid: (times, units, labels, speakers)."""
    rng = np.random.default_rng(seed)
    times, units = [], []
    for _ in range(n):
        k = int(rng.integers(5, 60))
        t = np.sort(rng.integers(0, int(0.9 / grid), k)) * grid
        times.append(t)
        units.append(rng.integers(0, n_channels, k))
    labels = np.arange(n) % n_classes
    speakers = (np.arange(n) // n_classes) % n_speakers
    return times, units, labels, speakers


def write_fixture(path, n=24, n_classes=4, keys=None, times_dtype=np.float32, **kw):
    times, units, labels, speakers = make_samples(n, n_classes, **kw)
    keys = keys if keys is not None else [f"word{k}" for k in range(n_classes)]
    write_events_file(path, times, units, labels, keys, speakers=speakers,
                      meta_info={"gender": np.array(["f", "m", "f", "m", "f", "m"])},
                      attrs={"seed": 0}, times_dtype=times_dtype)
    return times, units, labels, speakers


def write_raw(path, times, units, labels=None, keys=(b"a", b"b"), times_dtype=np.float64,
              units_dtype=np.uint16, skip=()):
    """An SHD-layout file written field by field with h5py (for malformed variants)."""
    n = len(times)
    with h5py.File(path, "w") as f:
        if "spikes/times" not in skip:
            d = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype(times_dtype)))
            for i, t in enumerate(times):
                d[i] = np.asarray(t, dtype=times_dtype)
        if "spikes/units" not in skip:
            d = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.dtype(units_dtype)))
            for i, u in enumerate(units):
                d[i] = np.asarray(u, dtype=units_dtype)
        if "labels" not in skip:
            f.create_dataset("labels", data=np.zeros(n, dtype=np.uint8) if labels is None else labels)
        if keys is not None:
            f.create_dataset("extra/keys", data=np.array(keys))
    return path


GOOD_T = [[0.1, 0.2, 0.3], [0.05, 0.5]]
GOOD_U = [[1, 2, 3], [10, 699]]


# --------------------------------------------------------------------------- reading

@pytest.mark.parametrize("times_dtype", [np.float16, np.float32, np.float64])
def test_round_trip_any_float_width(tmp_path, times_dtype):
    times, units, labels, speakers = write_fixture(tmp_path / "x.h5", times_dtype=times_dtype)
    ds = load_dataset(tmp_path / "x.h5")
    assert isinstance(ds, EventDataset) and ds.path == tmp_path / "x.h5"
    assert len(ds) == 24 and ds.n_channels == 700
    assert ds.labels.dtype == np.int64 and np.array_equal(ds.labels, labels)
    assert ds.speakers.dtype == np.int64 and np.array_equal(ds.speakers, speakers)
    assert ds.class_names == ["word0", "word1", "word2", "word3"]
    assert ds.attrs["seed"] == 0 and list(ds.meta_info["gender"][:2]) == [b"f", b"m"]
    tol = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-12}[times_dtype]
    for i in (0, 5, 23, -1):
        t, u = ds.events(i)
        assert t.dtype == np.float64 and u.dtype == np.int64
        np.testing.assert_allclose(t, times[i], atol=tol)
        assert np.array_equal(u, units[i])


def test_reads_n_from_labels_and_integer_units_of_any_width(tmp_path):
    path = write_raw(tmp_path / "w.h5", GOOD_T, GOOD_U, units_dtype=np.int32, times_dtype=np.float32)
    ds = read_events_file(path)
    assert len(ds) == 2 and ds.spike_counts.tolist() == [3, 2]
    assert ds.events(1)[1].tolist() == [10, 699]


def test_keys_define_label_order_and_are_never_reordered(tmp_path):
    german_first = ["null", "eins", "zero", "one"]
    write_fixture(tmp_path / "g.h5", keys=german_first)
    ds = load_dataset(tmp_path / "g.h5")
    assert ds.class_names == german_first
    assert ds.class_names[ds.labels[2]] == "zero"


@pytest.mark.parametrize("suffix", [".h5.gz", ".h5.zip"])
def test_compressed_files_are_decompressed_once(tmp_path, suffix, monkeypatch):
    monkeypatch.setenv("ONLINEDELAY_CACHE_DIR", str(tmp_path / "cache"))
    plain = tmp_path / "shd_test.h5"
    times, *_ = write_fixture(plain)
    packed = tmp_path / ("packed" + suffix)
    if suffix == ".h5.gz":
        with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        with zipfile.ZipFile(packed, "w") as z:
            z.write(plain, "shd_test.h5")
    ds = load_dataset(packed)
    assert ds.path.parent.parent == tmp_path / "cache" / "decompressed"
    assert ds.path.read_bytes() == plain.read_bytes()
    np.testing.assert_allclose(ds.events(3)[0], times[3], atol=1e-6)
    stamp = ds.path.stat().st_mtime_ns
    time.sleep(0.01)
    assert load_dataset(packed).path == ds.path and ds.path.stat().st_mtime_ns == stamp   # not rewritten


def test_corrupt_archives_are_reported(tmp_path):
    bad = tmp_path / "bad.h5.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="bad.h5.gz.*not a valid gzip"):
        load_dataset(bad)
    empty_zip = tmp_path / "e.h5.zip"
    with zipfile.ZipFile(empty_zip, "w") as z:
        z.writestr("readme.txt", "nothing")
    with pytest.raises(ValueError, match="exactly one .h5"):
        load_dataset(empty_zip)


def test_named_dataset_lookup_and_missing_files(tmp_path):
    write_fixture(tmp_path / "shd_train.h5", n_classes=20, n=40)
    ds = load_dataset("shd", "train", data_dir=tmp_path)
    assert ds.name == "shd" and ds.split == "train" and ds.path == tmp_path / "shd_train.h5"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("shd", "test", data_dir=tmp_path)
    for candidate in candidate_paths("shd", "test", tmp_path):
        assert str(candidate) in str(err.value)
    assert "onlinedelay data fetch shd" in str(err.value)
    with pytest.raises(ValueError, match="no split 'valid'.*split_by_speaker"):
        load_dataset("shd", "valid", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a known dataset"):
        load_dataset(tmp_path / "nope.h5")


def test_data_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "ssc").mkdir()
    write_fixture(tmp_path / "ssc" / "ssc_valid.h5", n_classes=35, n=35)
    monkeypatch.setenv("ONLINEDELAY_DATA_DIR", str(tmp_path))
    assert len(load_dataset("ssc", "valid")) == 35


# --------------------------------------------------------------------------- validation

def _expect_error(path, field, sample=None):
    with pytest.raises(DatasetFormatError) as err:
        read_events_file(path)
    message = str(err.value)
    assert str(path) in message and field in message, message
    if sample is not None:
        assert f"sample {sample}:" in message, message
    return message


def test_missing_groups_are_fatal(tmp_path):
    p = write_raw(tmp_path / "a.h5", GOOD_T, GOOD_U, skip=("spikes/times", "spikes/units"))
    _expect_error(p, "spikes")
    p = write_raw(tmp_path / "b.h5", GOOD_T, GOOD_U, skip=("spikes/units",))
    _expect_error(p, "spikes/units")
    p = write_raw(tmp_path / "c.h5", GOOD_T, GOOD_U, skip=("labels",))
    _expect_error(p, "labels")
    (tmp_path / "d.h5").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="not a readable HDF5"):
        read_events_file(tmp_path / "d.h5")


def test_mismatched_lengths_are_fatal(tmp_path):
    p = write_raw(tmp_path / "n.h5", GOOD_T, GOOD_U, labels=np.zeros(3, dtype=np.uint8))
    assert "3 samples" in _expect_error(p, "spikes/times")
    p = write_raw(tmp_path / "u.h5", GOOD_T, GOOD_U[:1] + [[5]], labels=np.zeros(2, dtype=np.uint8))
    assert "2 times but 1 units" in _expect_error(p, "spikes/times, spikes/units", sample=1)
    p = write_raw(tmp_path / "s.h5", GOOD_T, GOOD_U)
    with h5py.File(p, "a") as f:
        f.create_dataset("extra/speaker", data=np.zeros(5, dtype=np.int32))
    _expect_error(p, "extra/speaker")


@pytest.mark.parametrize("bad_time, what", [(float("nan"), "non-finite"), (float("inf"), "non-finite"),
                                            (-0.01, "negative")])
def test_bad_times_are_fatal(tmp_path, bad_time, what):
    p = write_raw(tmp_path / "t.h5", [[0.1], [0.2, bad_time, 0.4]], [[1], [2, 3, 4]])
    message = _expect_error(p, "spikes/times", sample=1)
    assert what in message and "event 1" in message


def test_unit_out_of_range_is_fatal(tmp_path):
    p = write_raw(tmp_path / "u.h5", [[0.1], [0.2, 0.3]], [[1], [2, 700]])
    assert "unit 700 outside 0..699" in _expect_error(p, "spikes/units", sample=1)
    p = write_raw(tmp_path / "f.h5", [[0.1]], [[1.5]], units_dtype=np.float32)
    _expect_error(p, "spikes/units")


def test_labels_outside_class_range_or_not_integer_are_fatal(tmp_path):
    p = write_raw(tmp_path / "l.h5", GOOD_T, GOOD_U, labels=np.array([0, 2], dtype=np.uint8))
    assert "label 2 outside 0..1" in _expect_error(p, "labels", sample=1)
    p = write_raw(tmp_path / "m.h5", GOOD_T, GOOD_U, labels=np.array([0, -1], dtype=np.int16))
    _expect_error(p, "labels", sample=1)
    p = write_raw(tmp_path / "o.h5", GOOD_T, GOOD_U, labels=np.array([0.0, 0.5]))
    _expect_error(p, "labels", sample=1)


def test_external_storage_and_links_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    p = write_raw(tmp_path / "ext.h5", GOOD_T, GOOD_U, keys=None)
    with h5py.File(p, "a") as f:                      # class names would become "r", "o", "o", "t", ":" ...
        f.create_dataset("extra/keys", (5,), dtype="S1", external=[(str(secret), 0, 5)])
    assert "uses external storage" in _expect_error(p, "extra/keys")
    p = write_raw(tmp_path / "link.h5", GOOD_T, GOOD_U, skip=("labels",))
    with h5py.File(p, "a") as f:
        f["labels"] = h5py.ExternalLink(str(tmp_path / "ext.h5"), "/labels")
    assert "external link" in _expect_error(p, "labels")
    p = write_raw(tmp_path / "soft.h5", GOOD_T, GOOD_U, skip=("labels",))
    with h5py.File(p, "a") as f:
        f.create_dataset("hidden", data=np.zeros(2, np.uint8))
        f["labels"] = h5py.SoftLink("/hidden")
    assert "soft link" in _expect_error(p, "labels")


def test_declared_but_unstored_data_and_unbounded_labels_fail_fast(tmp_path):
    p = tmp_path / "huge.h5"
    with h5py.File(p, "w") as f:                      # a few KB declaring 10^7 samples
        f.create_dataset("spikes/times", (10**7,), dtype=h5py.vlen_dtype(np.float32), chunks=(4096,))
        f.create_dataset("spikes/units", (10**7,), dtype=h5py.vlen_dtype(np.uint16), chunks=(4096,))
        f.create_dataset("labels", (10**7,), dtype=np.int32, chunks=(4096,))
    assert p.stat().st_size < 10_000
    assert "stores 0 of 2442 chunks" in _expect_error(p, "spikes/times")
    p = write_raw(tmp_path / "big_label.h5", GOOD_T + [[0.3]], GOOD_U + [[4]], keys=None,
                  labels=np.array([0, 1, 10**9], np.int64))
    assert "label 1000000000 outside 0..99999" in _expect_error(p, "labels", sample=2)


def test_a_corrupt_global_heap_is_refused_before_hdf5_loops_on_it(tmp_path):
    p = write_raw(tmp_path / "heap.h5", GOOD_T, GOOD_U)
    raw = bytearray(p.read_bytes())
    heap = raw.find(b"GCOL")
    first_size = heap + 16 + 8                        # the first object's size field
    raw[first_size] += 100                            # the walk now lands on zero bytes: HDF5 spins forever
    p.write_bytes(bytes(raw))
    assert "free space at offset" in _expect_error(p, f"global heap collection at byte {heap}")


def test_unsorted_times_are_repaired_with_a_warning(tmp_path):
    p = write_raw(tmp_path / "s.h5", [[0.1, 0.2], [0.3, 0.1, 0.2], [0.5]], [[1, 2], [3, 1, 2], [4]],
                  labels=np.zeros(3, dtype=np.uint8))
    with pytest.warns(DatasetWarning, match=r"s\.h5: sample 1: spikes/times: not sorted \(1 sample"):
        ds = read_events_file(p)
    t, u = ds.events(1)
    assert t.tolist() == [0.1, 0.2, 0.3] and u.tolist() == [1, 2, 3]
    assert ds.events(0)[0].tolist() == [0.1, 0.2]          # a drop across samples is not "unsorted"


def test_empty_samples_and_missing_keys_warn(tmp_path):
    p = write_raw(tmp_path / "e.h5", [[0.1], []], [[1], []], labels=np.array([0, 2], dtype=np.uint8), keys=None)
    with pytest.warns(DatasetWarning) as record:
        ds = read_events_file(p)
    messages = " | ".join(str(w.message) for w in record)
    assert "sample 1: spikes/times: no spikes" in messages and "extra/keys: missing" in messages
    assert ds.class_names == ["0", "1", "2"]
    assert ds.frames(1).sum() == 0


# --------------------------------------------------------------------------- binning

def naive_frames(t, u, dt_ms, n_steps, pool, overflow):
    out = np.zeros((n_steps, 700 // pool), dtype=np.int64)
    for ti, ui in zip(t, u):
        k = int(np.floor(ti * 1000 / dt_ms + 1e-9))
        if k >= n_steps:
            if overflow == "drop":
                continue
            k = n_steps - 1
        out[k, ui // pool] += 1
    return out


@pytest.fixture(scope="module")
def fixture_ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("fx") / "fx.h5"
    write_fixture(path, times_dtype=np.float64)
    return read_events_file(path)


@pytest.mark.parametrize("dt_ms, n_steps, pool, overflow",
                         [(10.0, 100, 5, "clip"), (10.0, 50, 5, "clip"), (10.0, 50, 5, "drop"),
                          (1.0, 300, 1, "drop"), (25.0, 10, 7, "clip")])
def test_frames_match_a_naive_loop(fixture_ds, dt_ms, n_steps, pool, overflow):
    for i in range(len(fixture_ds)):
        t, u = fixture_ds.events(i)
        x = fixture_ds.frames(i, dt_ms=dt_ms, n_steps=n_steps, pool=pool, overflow=overflow)
        assert x.dtype == np.uint16 and x.shape == (n_steps, 700 // pool)
        assert np.array_equal(x, naive_frames(t, u, dt_ms, n_steps, pool, overflow))


def test_frame_totals_clip_and_drop(fixture_ds):
    counts = fixture_ds.spike_counts
    # window covering every spike: count conserved
    full = fixture_ds.frames_batch(np.arange(len(fixture_ds)), n_steps=None)
    assert full.shape == (fixture_ds.n_steps_for(10.0), len(fixture_ds), 140)
    assert np.array_equal(full.sum(axis=(0, 2)), counts)
    # short window: clip keeps everything in the last step, drop loses exactly the late ones
    clip = fixture_ds.frames_batch(range(len(fixture_ds)), n_steps=30, overflow="clip")
    drop = fixture_ds.frames_batch(range(len(fixture_ds)), n_steps=30, overflow="drop")
    late = np.array([(fixture_ds.events(i)[0] >= 0.3 - 1e-12).sum() for i in range(len(fixture_ds))])
    assert late.sum() > 0
    assert np.array_equal(clip.sum(axis=(0, 2)), counts)
    assert np.array_equal(drop.sum(axis=(0, 2)), counts - late)
    assert np.array_equal(clip[:-1], drop[:-1])
    # batch == stacked single frames, in the order asked for
    idx = [5, 0, 5, 23]
    batch = fixture_ds.frames_batch(idx, n_steps=40)
    assert np.array_equal(batch, np.stack([fixture_ds.frames(i, n_steps=40) for i in idx], axis=1))


def test_step_boundaries_and_bad_options():
    x = bin_events(np.array([0.0, 0.0099999, 0.01, 0.03, 0.999]), np.array([0, 4, 5, 699, 3]),
                   dt_ms=10.0, n_steps=100, pool=5)
    assert x[0, 0] == 2 and x[1, 1] == 1 and x[3, 139] == 1 and x[99, 0] == 1 and x.sum() == 5
    with pytest.raises(ValueError, match="pool=3 does not divide n_channels=700"):
        bin_events(np.zeros(1), np.zeros(1, dtype=int), pool=3)
    with pytest.raises(ValueError, match="overflow='wrap'"):
        bin_events(np.zeros(1), np.zeros(1, dtype=int), overflow="wrap")
    with pytest.raises(ValueError, match="dt_ms=0"):
        bin_events(np.zeros(1), np.zeros(1, dtype=int), dt_ms=0)
    with pytest.raises(ValueError, match="n_steps=0"):
        bin_events(np.zeros(1), np.zeros(1, dtype=int), n_steps=0)


def test_steps_for_takes_seconds_and_milliseconds():
    assert steps_for(0.5, 10.0) == 51              # 0.5 s at 10 ms: steps 0..50
    assert steps_for(0.5, 1.0) == 501
    assert steps_for(0.0, 10.0) == 1
    assert steps_for(0.0099, 10.0) == 1 and steps_for(0.01, 10.0) == 2
    assert steps_for(0.29, 10.0) == 30             # 0.29 * 100 = 28.999999999999996: the slack rule
    assert steps_for(1e17, 10.0) == 10**19 + 1      # Python ints: no overflow
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(OnlineDelayError, match="dt_ms"):
            steps_for(1.0, bad)
    with pytest.raises(OnlineDelayError, match="max_time_s"):
        steps_for(float("inf"), 10.0)


def test_event_on_a_step_boundary_lands_in_the_step_it_starts():
    k = np.arange(200)
    t = k / 100                                    # exactly on the 10 ms boundaries, as decimals
    assert np.any(np.floor(t * 100.0) != k)        # without the slack some land one step early (0.29 s ...)
    x = bin_events(t, np.zeros(200, dtype=int), dt_ms=10.0, n_steps=200, pool=1)
    assert np.array_equal(x[:, 0], np.ones(200))
    x = bin_events(np.array([0.03]), np.array([0]), dt_ms=10.0, n_steps=10, pool=1)
    assert x[3, 0] == 1 and x.sum() == 1
    x = bin_events(np.array([0.003]), np.array([0]), dt_ms=1.0, n_steps=10, pool=1)
    assert x[3, 0] == 1 and x.sum() == 1


@pytest.mark.parametrize("late", [9.2e16, 9.3e16, 1e17, 1e19, 1e300])
def test_huge_times_clip_to_the_last_step_never_wrap_into_step_0(tmp_path, late):
    t, u = np.array([0.001, 0.5, late]), np.array([0, 1, 2])
    clip = bin_events(t, u, dt_ms=10.0, n_steps=20, pool=1, overflow="clip")
    drop = bin_events(t, u, dt_ms=10.0, n_steps=20, pool=1, overflow="drop")
    assert clip[0, 0] == 1 and clip[19, 1] == 1 and clip[19, 2] == 1 and clip.sum() == 3
    assert drop[0, 0] == 1 and drop[19].sum() == 0 and drop.sum() == 1
    path = write_raw(tmp_path / "late.h5", [t, [0.2]], [u, [3]], labels=np.array([0, 1], np.uint8))
    ds = read_events_file(path)
    assert ds.max_time == late
    assert np.array_equal(ds.frames(0, n_steps=20, pool=1), clip)
    with pytest.raises(DatasetFormatError, match=r"late\.h5: spikes/times: the latest spike at .* give n_steps"):
        ds.frames(0, n_steps=None)


def test_binning_refuses_times_it_cannot_place():
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(OnlineDelayError, match="times_s: sample 0"):
            bin_events(np.array([0.1, bad]), np.array([0, 1]))
    with pytest.raises(OnlineDelayError, match="units: sample 0: expected channels 0..699"):
        bin_events(np.array([0.1]), np.array([700]))


def test_reads_lazily_from_the_file(tmp_path):
    times, units, labels, _ = write_fixture(tmp_path / "lazy.h5", n=40, times_dtype=np.float64)
    ds = read_events_file(tmp_path / "lazy.h5")
    sizes = {k: v.size for k, v in vars(ds).items() if isinstance(v, np.ndarray) and k != "channel_counts"}
    assert max(sizes.values()) == 41 < sum(t.size for t in times)     # the index, not the events
    assert np.array_equal(ds.channel_counts, np.bincount(np.concatenate(units), minlength=700))
    import pickle

    copy = pickle.loads(pickle.dumps(ds))          # a worker process gets the index and reopens the file
    assert np.array_equal(copy.events(7)[0], times[7]) and np.array_equal(copy.labels, labels)
    ds.close()
    assert np.array_equal(ds.events(3)[1], units[3])      # reopened on demand
    ds.close()
    write_fixture(tmp_path / "lazy.h5", n=40, seed=5)     # replaced after validation
    with pytest.raises(DatasetFormatError, match="lazy.h5: changed or removed since it was validated"):
        ds.events(0)


def test_memory_is_an_index_plus_a_block(tmp_path):
    """3000 samples of 300 spikes: the old reader held all 900k spikes (5.4 MB in float32 + uint16)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    times = [np.sort(rng.random(300)) for _ in range(3000)]
    units = [rng.integers(0, 700, 300) for _ in range(3000)]
    write_events_file(tmp_path / "big.h5", times, units, np.arange(3000) % 5, list("abcde"))
    tracemalloc.start()
    try:
        ds = read_events_file(tmp_path / "big.h5")
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        x = ds.frames_batch(np.arange(0, 3000, 50), n_steps=100)
        frames_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (100, 60, 140) and int(x.sum()) == 60 * 300
    assert load_peak < 2 * 2**20, load_peak
    assert frames_peak < x.nbytes + 4 * 2**20, frames_peak       # the output plus one block


def test_unbinned_iteration_and_index_errors(fixture_ds):
    seen = [(t.size, label) for t, u, label in fixture_ds]
    assert [s for s, _ in seen] == fixture_ds.spike_counts.tolist()
    assert [label for _, label in seen] == fixture_ds.labels.tolist()
    with pytest.raises(IndexError, match="sample index 24 out of range for 24"):
        fixture_ds.events(24)
    with pytest.raises(TypeError):
        fixture_ds.events(1.0)


# --------------------------------------------------------------------------- Tonic interop

def test_to_tonic_matches_what_tonics_reader_computes(tmp_path):
    path = tmp_path / "shd_train.h5"
    write_fixture(path)
    ds = read_events_file(path)
    ev = ds.to_tonic(3)
    assert ev.dtype.names == ("t", "x", "p") and all(ev.dtype[k] == np.int64 for k in "txp")
    # what tonic.datasets.SHD does with our file: times * 1e6 truncated to int, units, polarity 1
    with h5py.File(path, "r") as f:
        t_us = (f["spikes/times"][3] * 1e6).astype(np.int64)
        x = f["spikes/units"][3].astype(np.int64)
        assert [k.decode() for k in f["extra/keys"][()]] == ds.class_names
        assert int(f["labels"][3]) == ds.labels[3]
    assert np.all((ev["t"] - t_us >= 0) & (ev["t"] - t_us <= 1))   # we round, Tonic truncates in float32
    assert np.array_equal(ev["t"], np.rint(ds.events(3)[0] * 1e6))
    assert np.array_equal(ev["x"], x) and np.all(ev["p"] == 1)
    assert np.all(ds.to_tonic(3, polarity=0)["p"] == 0)


# --------------------------------------------------------------------------- splits

def test_split_by_speaker_holds_out_whole_speakers(fixture_ds):
    tr, va = split_by_speaker(fixture_ds, valid_fraction=0.34, seed=0)
    assert tr.dtype == np.int64 and np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(fixture_ds)))
    assert not set(fixture_ds.speakers[tr]) & set(fixture_ds.speakers[va])
    assert np.unique(fixture_ds.speakers[va]).size == 2          # round(0.34 * 6)
    tr2, va2 = split_by_speaker(fixture_ds, valid_fraction=0.34, seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    held = {tuple(np.unique(fixture_ds.speakers[split_by_speaker(fixture_ds, 0.2, seed=s)[1]])) for s in range(8)}
    assert len(held) > 1                                          # the seed matters
    with pytest.raises(ValueError, match="valid_fraction=1.5"):
        split_by_speaker(fixture_ds, 1.5)


def test_split_without_speakers_is_stratified(tmp_path):
    times, units, labels, _ = make_samples(n=40, n_classes=4)
    write_events_file(tmp_path / "n.h5", times, units, labels, ["a", "b", "c", "d"])
    ds = read_events_file(tmp_path / "n.h5")
    assert ds.speakers is None
    tr, va = split_by_speaker(ds, valid_fraction=0.2, seed=1)
    assert np.bincount(ds.labels[va], minlength=4).tolist() == [2, 2, 2, 2]
    assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == 40


# --------------------------------------------------------------------------- checksums and download

def test_verify_checksums(tmp_path):
    fake = tmp_path / "shd_test.h5"
    write_fixture(fake)
    with pytest.raises(ChecksumError, match="207ad1295a0ab611e22d1734989c254e"):
        load_dataset("shd", "test", data_dir=tmp_path, verify=True)
    assert len(load_dataset("shd", "test", data_dir=tmp_path, verify=False)) == 24
    assert verify_checksum(fake, expected=md5_file(fake)) is True
    other = tmp_path / "mine.h5"
    shutil.copy(fake, other)
    with pytest.warns(DatasetWarning, match="no published checksum"):
        load_dataset(other, verify=True)


def test_fetch_fails_fast_when_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("ONLINEDELAY_DATASET_URLS", "http://127.0.0.1:9/")
    start = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        fetch("shd", splits=["test"], data_dir=tmp_path, timeout_s=2)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "http://127.0.0.1:9/shd_test.h5.zip" in message and str(tmp_path) in message
    assert "1503a5064faa34311c398fb0a1ed0a6f" in message and "zenkelab.org" in message
    assert not list(tmp_path.iterdir())                          # nothing half-written left behind
    with pytest.raises(ValueError, match="ships with the package"):
        fetch("digits")
    with pytest.raises(KeyError, match="unknown dataset"):
        fetch("mnist")


@pytest.fixture
def local_server(tmp_path):
    """A throw-away HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_checks_the_published_md5(tmp_path, local_server):
    root, url = local_server
    (root / "shd_test.h5.zip").write_bytes(b"definitely not the real file")
    target = tmp_path / "data"
    with pytest.raises(ChecksumError, match="1503a5064faa34311c398fb0a1ed0a6f"):
        fetch("shd", splits=["test"], data_dir=target, urls=url)
    assert not (target / "shd_test.h5.zip").exists()            # a bad download is removed


# --------------------------------------------------------------------------- frozen format

def test_frozen_codec_round_trip(tmp_path):
    from onlinedelay.datasets.frozen import FrozenEvents, encode, load_frozen, materialise, save_frozen

    rng = np.random.default_rng(3)
    samples = []
    for _ in range(7):
        k = int(rng.integers(0, 300))
        samples.append((rng.integers(0, 33600, k), rng.integers(0, 700, k)))
    counts, ticks = encode(samples, 700)
    fz = FrozenEvents(counts, ticks, np.arange(7) % 3, np.arange(7) % 2, np.array([0, 0, 0, 0, 1, 1, 1]),
                      ["train", "test"], ["a", "b", "c"], 1 / 24000, {"seed": 5}, {"gender": np.array(["m", "f"])})
    save_frozen(tmp_path / "f.npz", fz)
    back = load_frozen(tmp_path / "f.npz")
    assert back.attrs == {"seed": 5} and back.class_names == ["a", "b", "c"]
    for i, (t, u) in enumerate(samples):
        order = np.lexsort((u, t))
        bt, bu = back.sample(i)
        assert np.array_equal(bt, t[order]) and np.array_equal(bu, u[order])
    paths = materialise(back, tmp_path / "out", name="tiny")
    test = read_events_file(paths["test"])
    assert len(test) == 3 and test.labels.tolist() == [1, 2, 0] and test.attrs["split"] == "test"
    t, u = test.events(0)
    order = np.lexsort((samples[4][1], samples[4][0]))
    np.testing.assert_allclose(t, samples[4][0][order] / 24000, rtol=1e-6)


# --------------------------------------------------------------------------- the embedded dataset

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_digits_layout(digits):
    train, test = digits
    assert embedded_path().stat().st_size < 10 * 2**20
    assert train.path.name == "digits_train.h5" and test.path.name == "digits_test.h5"
    assert train.class_names[:3] == ["zero", "one", "two"] and train.class_names[10] == "null"
    assert len(train.class_names) == 20 and train.n_channels == 700
    assert len(train) + len(test) >= 900
    assert np.unique(train.speakers).size == 10 and np.unique(test.speakers).size == 2
    assert not set(train.speakers) & set(test.speakers)
    assert np.all(np.bincount(train.labels, minlength=20) == len(train) // 20)
    assert train.attrs["generator_version"] and train.attrs["espeak_ng_version"] and "seed" in train.attrs
    assert len(load_dataset("digits", "test", verify=True)) == len(test)     # MD5 recorded next to the npz
    with h5py.File(train.path, "r") as f:                         # the materialised file is plain SHD layout
        assert f["spikes/times"].dtype.metadata["vlen"].kind == "f"
        assert f["spikes/units"].dtype.metadata["vlen"] == np.uint16


def test_digits_spike_statistics(digits):
    counts = np.concatenate([d.spike_counts for d in digits])
    assert 2000 <= counts.mean() <= 10000
    assert np.percentile(counts, 5) >= 1000 and np.percentile(counts, 95) <= 15000
    per_channel = sum(d.channel_counts for d in digits)
    assert per_channel.sum() == counts.sum()
    share = per_channel.reshape(7, 100).sum(axis=1) / counts.sum()
    assert share[4:].sum() > 0.75                                  # speech sits in units 400-699, as in SHD
    assert max(d.max_time for d in digits) < 1.4


def test_embedded_checksum_mismatch(tmp_path, monkeypatch):
    copy = tmp_path / "digits.npz"
    shutil.copy(embedded_path(), copy)
    (tmp_path / "digits.npz.md5").write_text("0" * 32 + "  digits.npz\n")
    monkeypatch.setenv("ONLINEDELAY_EMBEDDED_DATA", str(copy))
    with pytest.raises(ChecksumError, match="differs from the recorded 0000"):
        load_dataset("digits", "train", verify=True)
    monkeypatch.setenv("ONLINEDELAY_EMBEDDED_DATA", str(tmp_path / "gone.npz"))
    with pytest.raises(FileNotFoundError, match="onlinedelay data generate"):
        load_dataset("digits", "train")


def features(ds):
    x = ds.frames_batch(np.arange(len(ds)), dt_ms=10.0, n_steps=100, pool=5)
    return x.transpose(1, 0, 2).reshape(len(ds), -1).astype(np.float64)


def nearest_centroid_accuracy(train, test):
    xtr, xte = features(train), features(test)
    centroids = np.stack([xtr[train.labels == c].mean(axis=0) for c in range(train.n_classes)])
    d = (xte ** 2).sum(1)[:, None] - 2 * xte @ centroids.T + (centroids ** 2).sum(1)[None]
    return float((d.argmin(axis=1) == test.labels).mean())


def test_digits_difficulty_band(digits):
    """Held-out speakers, nearest centroid on 10 ms x 140-channel counts: far from chance, far from solved."""
    acc = nearest_centroid_accuracy(*digits)
    assert 0.3 <= acc <= 0.7, acc


# --------------------------------------------------------------------------- front end

def test_front_end_matches_reference():
    """The front end on the converter's own test recording vs the converter's output."""
    from scipy.io import wavfile

    from onlinedelay.datasets.cochlea import cochlea_spikes

    rate, sound = wavfile.read(REFERENCE_WAV)
    ref = np.load(REFERENCE_SPIKES)
    ref_units = ref["units"].astype(np.int64)
    ticks, units = cochlea_spikes(sound, rate)
    assert abs(units.size / ref_units.size - 1) < 0.15              # 7117 reference spikes
    ours = np.bincount(units // 100, minlength=7) / units.size
    theirs = np.bincount(ref_units // 100, minlength=7) / ref_units.size
    assert np.abs(ours - theirs).max() < 0.06, (ours.round(3), theirs.round(3))
    active, ref_active = np.unique(units).size, np.unique(ref_units).size
    assert abs(active / ref_active - 1) < 0.2                       # 549 active units
    ref_hist = np.histogram(ref["times"], bins=8, range=(0, 0.8))[0]
    our_hist = np.histogram(ticks / 24000, bins=8, range=(0, 0.8))[0]
    assert np.argmax(our_hist) in (np.argmax(ref_hist) - 1, np.argmax(ref_hist), np.argmax(ref_hist) + 1)


def test_front_end_place_map_and_determinism():
    from onlinedelay.datasets.cochlea import CochleaConfig, centre_frequencies, cochlea_spikes

    cf = centre_frequencies()
    assert cf[0] == pytest.approx(22500) and cf[-1] == pytest.approx(110) and np.all(np.diff(cf) < 0)
    fs = 48000
    t = np.arange(int(0.5 * fs)) / fs
    for f0 in (300.0, 800.0):
        ticks, units = cochlea_spikes(np.sin(2 * np.pi * f0 * t), fs)
        peak = np.bincount(units, minlength=700).argmax()
        assert abs(np.log2(cf[peak] / f0)) < 0.5, (f0, cf[peak])    # the busiest channel is tuned near the tone
        again = cochlea_spikes(np.sin(2 * np.pi * f0 * t), fs)
        assert np.array_equal(again[0], ticks) and np.array_equal(again[1], units)
    quiet_t, quiet_u = cochlea_spikes(np.zeros(fs // 2), fs)       # silence: spontaneous spikes only
    assert quiet_u.size < 0.6 * 700 * 0.5 * 2
    assert cochlea_spikes(np.zeros(fs // 2), fs, seed=1)[1].tolist() != quiet_u.tolist()
    with pytest.raises(ValueError, match="saturation_db"):
        CochleaConfig(threshold_db=-10, saturation_db=-20)


def synthetic_vowel(f0, formants, seconds=0.4, fs=22050):
    """A harmonic complex shaped by formant peaks -- stands in for espeak-ng's output."""
    t = np.arange(int(seconds * fs)) / fs
    x = np.zeros_like(t)
    for h in range(1, int(5000 / f0)):
        f = h * f0
        gain = sum(1.0 / (1 + ((f - fm) / 80.0) ** 2) for fm in formants)
        x += gain * np.sin(2 * np.pi * f * t)
    return (0.3 * x / np.abs(x).max() * 32767).astype(np.int16), fs


def test_generator_pipeline_on_synthetic_speech(monkeypatch):
    from onlinedelay.datasets import digits as gen

    cfg = gen.DigitsConfig(repetitions=1, seed=7)
    plan = gen.plan(cfg)
    assert len(plan) == 12 * 20 and plan == gen.plan(cfg) and plan != gen.plan(gen.DigitsConfig(repetitions=1, seed=8))
    assert {p["speaker"] for p in plan if p["speaker"] in gen.TEST_SPEAKERS} == {10, 11}
    assert all(p["voice"].startswith("de+") for p in plan if p["label"] >= 10)

    def fake_espeak(text, voice, pitch, speed):
        samples, fs = synthetic_vowel(80 + pitch * 2, (500 + 20 * len(text), 1500))
        return samples.astype(np.float64) / 32768, fs

    monkeypatch.setattr(gen, "synthesise", fake_espeak)
    a = gen.render(plan[3])
    b = gen.render(plan[3])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert 1000 < a[1].size < 15000
    assert np.all(np.diff(a[0]) >= 0)


def test_generation_does_not_depend_on_worker_count(monkeypatch):
    from onlinedelay.datasets import digits as gen

    full = gen.plan(gen.DigitsConfig(repetitions=1, seed=3))
    monkeypatch.setattr(gen, "plan", lambda config: full[::61])       # 4 samples, 4 speakers
    monkeypatch.setattr(gen, "espeak_version", lambda: "fake")
    monkeypatch.setattr(gen, "synthesise", lambda text, voice, pitch, speed: (
        synthetic_vowel(90 + pitch, (400 + 30 * len(text), 1200), seconds=0.2)[0] / 32768.0, 22050))
    one = gen.generate(gen.DigitsConfig(repetitions=1, seed=3), processes=1)
    two = gen.generate(gen.DigitsConfig(repetitions=1, seed=3), processes=2)
    assert one.ticks.size > 0
    assert np.array_equal(one.ticks, two.ticks) and np.array_equal(one.counts, two.counts)
    assert one.labels.tolist() == [p["label"] for p in full[::61]]
    assert one.attrs["espeak_ng_version"] == "fake" and one.attrs["seed"] == 3


def test_espeak_wav_stream_parsing():
    from onlinedelay.datasets.digits import _parse_wav

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.array([0, 1000, -1000, 32767], dtype="<i2").tobytes())
    data = bytearray(buf.getvalue())
    data[4:8] = b"\xff\xff\xff\x7f"                                 # espeak-ng --stdout leaves sizes unset
    samples, rate = _parse_wav(bytes(data))
    assert rate == 22050 and samples.tolist() == [0, 1000, -1000, 32767]
    with pytest.raises(RuntimeError, match="WAV"):
        _parse_wav(b"garbage")


def test_registry_lists_the_three_datasets():
    assert set(DATASETS) == {"digits", "shd", "ssc"}
    assert DATASETS["ssc"].splits == ("train", "valid", "test") and DATASETS["shd"].n_classes == 20


# --------------------------------------------------------------------------- CLI

def test_cli_list_info_fetch_generate(tmp_path, monkeypatch, digits):
    from click.testing import CliRunner

    from onlinedelay.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["data", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "digits" in result.output and "embedded" in result.output and "not downloaded" in result.output

    result = runner.invoke(main, ["data", "info", "digits"])
    assert result.exit_code == 0, result.output
    train, test = digits
    assert f"samples {len(train)}, classes 20" in result.output and f"samples {len(test)}," in result.output
    assert "spikes/sample mean" in result.output and "zero, one, two" in result.output

    result = runner.invoke(main, ["data", "fetch", "shd", "--split", "test", "--data-dir", str(tmp_path),
                                  "--url", "http://127.0.0.1:9/", "--timeout", "2"])
    assert result.exit_code == 1
    assert "could not download shd_test.h5.zip" in result.output and str(tmp_path) in result.output

    assert runner.invoke(main, ["data", "fetch", "mnist"]).exit_code == 2
    assert runner.invoke(main, ["data", "info", str(tmp_path / "missing.h5")]).exit_code == 1

    monkeypatch.setenv("PATH", str(tmp_path))                       # no espeak-ng on this PATH
    result = runner.invoke(main, ["data", "generate", "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 1 and "espeak-ng is not installed" in result.output
    assert not (tmp_path / "x.npz").exists()
