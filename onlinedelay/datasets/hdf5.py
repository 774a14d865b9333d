"""Event files in the layout of the Spiking Heidelberg Digits (SHD) / Spiking Speech Commands.

Layout (HDF5, one file per split)::

    /spikes/times   (N,) variable-length float   spike times in seconds, sorted within a sample
    /spikes/units   (N,) variable-length uint    channel id 0 .. n_channels-1
    /labels         (N,) int                     class index, names in /extra/keys
    /extra/speaker  (N,) int                     optional speaker id
    /extra/keys     (C,) bytes                   optional class names, label i <-> keys[i]
    /extra/meta_info/<field>                     optional per-speaker arrays

:func:`read_events_file` validates every sample once, block by block, and keeps only an index
in memory (per-sample offsets, labels, speakers, about 25 bytes per sample); events are read
from the open file when asked for (:meth:`EventDataset.events`, :meth:`EventDataset.frames_batch`),
so memory stays bounded by a batch plus the index whatever the size of the split.
:func:`write_events_file` writes the same layout, atomically.

What validation does
--------------------
Fatal (:class:`DatasetFormatError`, an :class:`~onlinedelay.errors.OnlineDelayError`; one line
naming the file, the field, the sample index where there is one, and the offending value):

* a missing ``spikes`` group or ``spikes/times``, ``spikes/units``, ``labels`` dataset; a group
  where a dataset belongs or a dataset where a group belongs (``spikes``, ``extra``,
  ``extra/meta_info`` are groups, everything else datasets);
* a field that is a soft or external link, uses external storage or is a virtual dataset: a file
  must hold its own data, never pull another file's bytes in;
* a dataset that declares more elements than the file stores (unallocated storage: a small file
  claiming millions of samples), or more than :data:`MAX_SAMPLES` samples / :data:`MAX_CLASSES`
  class names / :data:`MAX_META_ELEMENTS` elements of a ``meta_info`` array;
* ``spikes/times``, ``spikes/units`` not variable-length numbers (times: float or int; units: int);
  ``spikes/times``, ``spikes/units``, ``labels`` (and ``extra/speaker``) of different lengths;
  a sample whose times and units differ in length;
* a NaN, infinite or negative time (finite huge times are legal: binning clips or drops them);
* a unit outside ``0 .. n_channels-1``; an ``n_channels`` attribute that is not an integer in
  ``1 .. MAX_CHANNELS``;
* a non-integer label, or a label outside ``0 .. len(extra/keys)-1`` (without keys: outside
  ``0 .. MAX_CLASSES-1``); ``extra/keys`` not 1-D strings, or with a name twice;
* fewer than one sample; any part of the file HDF5 cannot read (truncated, corrupt); a corrupt
  variable-length datatype; a global heap collection (where variable-length data lives) whose
  objects do not tile it, or a stored variable-length element that claims more values than its
  heap object holds -- HDF5 itself loops forever, crashes or allocates what the element claims
  on these, so they are checked on the raw bytes before any variable-length read.

Repaired with a :class:`DatasetWarning` (one warning per kind and file, giving the count and
the first sample index):

* times not sorted within a sample -- the sample is stably sorted by time (units follow) when read;
* samples without any spike -- kept (they bin to all-zero frames);
* no ``extra/keys`` -- class names become ``"0" .. "K-1"`` from the largest label.
"""

from __future__ import annotations

import math
import struct
import warnings
import zlib
from array import array
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import OnlineDelayError, check_int
from .binning import MAX_DERIVED_STEPS, bin_batch, check_binning, steps_for

__all__ = ["DatasetFormatError", "DatasetWarning", "EventDataset", "read_events_file", "write_events_file",
           "DEFAULT_N_CHANNELS", "MAX_CHANNELS", "MAX_CLASSES", "MAX_SAMPLES", "MAX_META_ELEMENTS"]

DEFAULT_N_CHANNELS = 700
MAX_CHANNELS = 65536            # units are uint16 in the layout
MAX_CLASSES = 100_000
MAX_SAMPLES = 10_000_000        # SSC's train split has 75,466
MAX_META_ELEMENTS = 10_000_000
_BLOCK = 256                    # samples validated / iterated at a time (SSC: about 8 MB of spikes)
_BIN_BLOCK = 16                 # samples binned at a time (np.bincount's int64 counts: 16 x steps x groups)
_READ_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError)


class DatasetFormatError(OnlineDelayError):
    """An event file that does not follow the SHD layout (message names file, field, sample, value)."""


class DatasetWarning(UserWarning):
    """Something in an event file was repaired or filled in while reading it."""


def _fail(source, field, message, sample=None):
    where = f"sample {sample}: " if sample is not None else ""
    raise DatasetFormatError(f"{source}: {where}{field}: {message}")


class EventDataset:
    """One split of an event dataset: an index in memory, events read from the open file.

    Attributes
    ----------
    path : pathlib.Path -- the ``.h5`` file that is read
    source : pathlib.Path -- the file named in messages (the ``.h5.gz`` / ``.h5.zip`` it came from)
    name : str -- dataset name (``"digits"``, ``"shd"``, ...) or the file's stem
    split : str or None
    class_names : list of str -- from ``extra/keys``; label ``i`` is ``class_names[i]``
    labels : ndarray, shape (N,), int64
    speakers : ndarray, shape (N,), int64, or None when the file has no ``extra/speaker``
    n_channels : int
    offsets : ndarray, shape (N + 1,), int64 -- sample ``i`` holds ``offsets[i+1] - offsets[i]`` spikes
    channel_counts : ndarray, shape (n_channels,), int64 -- spikes per channel over the split
    max_time : float -- latest spike time of the split, seconds (0.0 when there are no spikes)
    attrs : dict -- the file's root attributes
    meta_info : dict of str -> ndarray -- ``extra/meta_info/*``
    """

    def __init__(self, path, offsets, labels, class_names, speakers, n_channels, unsorted, max_time,
                 channel_counts, attrs=None, meta_info=None, name=None, split=None, source=None):
        self.path = Path(path)
        self.source = Path(source) if source is not None else self.path
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.speakers = None if speakers is None else np.asarray(speakers, dtype=np.int64)
        self.n_channels = int(n_channels)
        self.max_time = float(max_time)
        self.channel_counts = np.asarray(channel_counts, dtype=np.int64)
        self.attrs = dict(attrs or {})
        self.meta_info = dict(meta_info or {})
        self.name = name if name is not None else self.source.name.split(".")[0]
        self.split = split
        self._unsorted = np.asarray(unsorted, dtype=bool)
        st = self.path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)
        self._h5 = self._datasets = None

    # -- the open file ---------------------------------------------------------------------------
    def _spikes(self):
        """``(spikes/times, spikes/units)`` of the open file (opened again, checked unchanged, when closed)."""
        if self._h5 is None or not self._h5.id.valid:
            st = self.path.stat() if self.path.is_file() else None
            if st is None or (st.st_size, st.st_mtime_ns) != self._stamp:
                raise DatasetFormatError(f"{self.source}: changed or removed since it was validated; load it again")
            self._h5 = h5py.File(self.path, "r")
            self._datasets = (self._h5["spikes/times"], self._h5["spikes/units"])
        return self._datasets

    def close(self) -> None:
        """Close the file (it is reopened, and checked unchanged, on the next read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = self._datasets = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = state["_datasets"] = None
        return state

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"EventDataset(name={self.name!r}, split={self.split!r}, samples={len(self)}, "
                f"classes={len(self.class_names)}, channels={self.n_channels}, path='{self.path}')")

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def spike_counts(self) -> np.ndarray:
        """Spikes per sample, shape (N,), int64."""
        return np.diff(self.offsets)

    def _index(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"sample index must be an int, got {type(i).__name__}")
        n = len(self)
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"sample index {i} out of range for {n} samples in '{self.path}'")
        return j

    def _read(self, indices) -> dict:
        """``{i: (times float64, units int64)}`` for the sample indices asked, sorted where repaired."""
        d_times, d_units = self._spikes()
        wanted = np.unique(np.asarray(indices, dtype=np.int64))
        out = {}
        for a, b in _runs(wanted):
            try:
                t_run, u_run = d_times[a:b], d_units[a:b]
            except _READ_ERRORS as exc:
                _fail(self.source, "spikes/times, spikes/units", f"unreadable ({exc})", a)
            for k in range(b - a):
                i = a + k
                t, u = np.asarray(t_run[k], dtype=np.float64), np.asarray(u_run[k]).astype(np.int64)
                if t.shape[0] != self.offsets[i + 1] - self.offsets[i] or u.shape != t.shape:
                    _fail(self.source, "spikes/times", "changed since it was validated; load it again", i)
                if self._unsorted[i]:
                    order = np.argsort(t, kind="stable")
                    t, u = t[order], u[order]
                out[i] = (t, u)
        return out

    def events(self, i):
        """Spike events of sample ``i``.

        Returns
        -------
        times : ndarray, shape (n,), float64, seconds, sorted
        units : ndarray, shape (n,), int64, channel ids
        """
        j = self._index(i)
        return self._read([j])[j]

    def __iter__(self):
        """Unbinned per-event iteration: yields ``(times, units, label)`` per sample."""
        for a in range(0, len(self), _BLOCK):
            block = self._read(range(a, min(a + _BLOCK, len(self))))
            for i in range(a, min(a + _BLOCK, len(self))):
                t, u = block[i]
                yield t, u, int(self.labels[i])

    def n_steps_for(self, dt_ms: float = 10.0) -> int:
        """Steps of ``dt_ms`` that cover the latest spike of the split."""
        return steps_for(self.max_time, dt_ms)

    def frames(self, i, dt_ms=10.0, n_steps=100, pool=5, overflow="clip"):
        """Spike counts of sample ``i`` per time step and channel group.

        Parameters
        ----------
        i : int
        dt_ms : float -- step length, ms
        n_steps : int or None -- steps in the window; None: enough to cover the split's latest spike
        pool : int -- channels summed per group (``n_channels`` must be a multiple)
        overflow : "clip" (events past the window count in the last step) or "drop"

        Returns
        -------
        ndarray, shape (n_steps, n_channels // pool), uint16
        """
        return self.frames_batch([self._index(i)], dt_ms, n_steps, pool, overflow)[:, 0, :]

    def frames_batch(self, indices, dt_ms=10.0, n_steps=100, pool=5, overflow="clip"):
        """Like :meth:`frames` for several samples: shape (n_steps, len(indices), n_channels // pool), uint16.

        Samples are read and binned ``_BIN_BLOCK`` at a time: memory is the output plus one block.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(f"indices: expected a 1-D sequence of ints, got {np.asarray(indices).dtype} "
                            f"with shape {idx.shape}")
        idx = np.array([self._index(int(k)) for k in idx], dtype=np.int64)
        if n_steps is None:
            n_steps = self.n_steps_for(dt_ms)
            if n_steps > MAX_DERIVED_STEPS:
                _fail(self.source, "spikes/times", f"the latest spike at {self.max_time!r} s needs {n_steps} steps "
                                                   f"of {dt_ms} ms (more than {MAX_DERIVED_STEPS}); give n_steps")
        dt_ms, n_steps, pool = check_binning(dt_ms, n_steps, self.n_channels, pool, overflow)
        out = np.zeros((n_steps, idx.size, self.n_channels // pool), dtype=np.uint16)
        for a in range(0, idx.size, _BIN_BLOCK):
            chunk = idx[a:a + _BIN_BLOCK]
            events = self._read(chunk)
            pairs = [events[int(i)] for i in chunk]
            offsets = np.zeros(len(pairs) + 1, dtype=np.int64)
            np.cumsum([t.size for t, _ in pairs], out=offsets[1:])
            times = np.concatenate([t for t, _ in pairs]) if pairs else np.zeros(0)
            units = np.concatenate([u for _, u in pairs]) if pairs else np.zeros(0, np.int64)
            out[:, a:a + chunk.size] = bin_batch(times, units, offsets, np.arange(chunk.size), dt_ms, n_steps,
                                                 self.n_channels, pool, overflow)
        return out

    def to_tonic(self, i, polarity: int = 1):
        """Sample ``i`` as a Tonic-style structured event array.

        Fields ``t`` (microseconds, int64), ``x`` (channel, int64) and ``p`` (int64, constant
        ``polarity``; Tonic's SHD reader sets 1), in Tonic's ``(t, x, p)`` order and dtype.
        ``t`` is rounded to the nearest microsecond in float64; Tonic's own reader truncates
        ``times * 1e6`` in the file's float width, so its values can be 1 us lower.
        """
        t, u = self.events(i)
        out = np.empty(t.shape[0], dtype=np.dtype([("t", np.int64), ("x", np.int64), ("p", np.int64)]))
        out["t"] = np.rint(t * 1e6).astype(np.int64)
        out["x"] = u
        out["p"] = polarity
        return out


def _runs(sorted_indices):
    """``(start, stop)`` of the runs of consecutive values in a sorted unique int array."""
    if sorted_indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_indices) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_indices.size]])
    return [(int(sorted_indices[s]), int(sorted_indices[e - 1]) + 1) for s, e in zip(starts, stops)]


# -- reading one field, guarded ----------------------------------------------------------------------

def _node(f, source, field, kind, required=True):
    """The object at ``field`` (an ``h5py.Dataset`` or ``h5py.Group``, as ``kind`` says), or None when
    absent and not ``required``.  Links, external storage and virtual datasets are refused."""
    parts = field.split("/")
    obj = f
    for k, part in enumerate(parts):
        sub = "/".join(parts[:k + 1])
        try:
            link = obj.get(part, getlink=True)
        except _READ_ERRORS as exc:
            _fail(source, sub, f"unreadable ({exc})")
        if link is None:
            if required:
                _fail(source, field, "missing (an SHD-layout file needs spikes/times, spikes/units and labels; "
                                     f"found top-level: {_top_level(f)})")
            return None
        if isinstance(link, h5py.ExternalLink):
            _fail(source, sub, f"is an external link to '{link.filename}:{link.path}'; links are refused "
                               f"(a dataset file must hold its own data)")
        if isinstance(link, h5py.SoftLink):
            _fail(source, sub, f"is a soft link to '{link.path}'; links are refused")
        try:
            obj = obj[part]
        except _READ_ERRORS as exc:
            _fail(source, sub, f"unreadable ({exc})")
        want = kind if k == len(parts) - 1 else h5py.Group
        if not isinstance(obj, want):
            found = "a group" if isinstance(obj, h5py.Group) else \
                "a dataset" if isinstance(obj, h5py.Dataset) else type(obj).__name__
            _fail(source, sub, f"expected {'a group' if want is h5py.Group else 'a dataset'}, found {found}")
    if isinstance(obj, h5py.Dataset):
        _check_storage(source, field, obj)
    return obj


def _top_level(f):
    try:
        return sorted(f.keys())
    except _READ_ERRORS:
        return "unreadable"


def _check_storage(source, field, d):
    """Refuse external storage, virtual datasets and storage that holds less than the shape declares."""
    try:
        d.dtype                                         # parse the datatype now: h5py parses it lazily
        if d.external:
            _fail(source, field, f"uses external storage ({d.external[0][0]!r}); refused "
                                 f"(a dataset file must hold its own data)")
        if d.is_virtual:
            _fail(source, field, "is a virtual dataset (data in other files); refused")
        if d.shape is None:
            _fail(source, field, "has an empty dataspace (no shape)")
        n = int(np.prod(d.shape, dtype=np.int64)) if d.shape else 1
        if n == 0:
            return
        if d.chunks is None:
            need = n * d.id.get_type().get_size()
            stored = d.id.get_storage_size()
            if stored < need:
                _fail(source, field, f"declares shape {d.shape} but stores {stored} of {need} bytes")
        else:
            per_axis = [math.ceil(s / c) for s, c in zip(d.shape, d.chunks)]
            need = int(np.prod(per_axis, dtype=np.int64))
            stored = d.id.get_num_chunks()
            if stored < need:
                _fail(source, field, f"declares shape {d.shape} but stores {stored} of {need} chunks")
    except DatasetFormatError:
        raise
    except _READ_ERRORS as exc:
        _fail(source, field, f"unreadable ({exc})")


def _read_all(source, field, d, max_elements):
    if d.size > max_elements:
        _fail(source, field, f"declares {d.size} elements, more than the {max_elements} allowed")
    try:
        return d[()]
    except _READ_ERRORS as exc:
        _fail(source, field, f"unreadable ({exc})")


def _vlen_base(source, field, d, kinds, what):
    base = h5py.check_vlen_dtype(d.dtype)
    if not isinstance(base, np.dtype) or base.kind not in kinds:
        shown = f"variable-length {base}" if base is not None else str(d.dtype)
        _fail(source, field, f"expected variable-length {what}, got {shown}")
    try:
        message = d.id.get_type().encode()[2:]         # the datatype message, as stored in the file
    except _READ_ERRORS as exc:
        _fail(source, field, f"unreadable datatype ({exc})")
    if message[1] & 0x0F != 0:                          # HDF5 reads a vlen of unknown kind out of bounds
        _fail(source, field, f"corrupt datatype: variable-length kind {message[1] & 0x0F} is not a sequence")
    return base


def _integers(source, field, values, what, limit, note=""):
    """``values`` (any numeric dtype) as int64, each in ``0 .. limit-1``; refuses NaN, fractions, bools."""
    if values.dtype.kind not in "iuf":
        _fail(source, field, f"expected integers, got dtype {values.dtype}")
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            _fail(source, field, f"non-integer {what} {values[bad[0]].item()!r}", int(bad[0]))
    bad = np.flatnonzero((values < 0) | (values >= limit))
    if bad.size:
        _fail(source, field, f"{what} {values[bad[0]].item()!r} outside 0..{limit - 1}{note}", int(bad[0]))
    return values.astype(np.int64)


def _decode(name) -> str:
    if isinstance(name, bytes):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            return name.decode("latin-1")
    return str(name)


def _read_attr(source, f, key):
    try:
        value = f.attrs[key]
    except _READ_ERRORS as exc:
        _fail(source, f"attribute {key}", f"unreadable ({exc})")
    if isinstance(value, bytes):
        return _decode(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _file_channels(source, value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    check_int(f"{source}: attribute n_channels", value, 1, MAX_CHANNELS, error=DatasetFormatError)
    return value


# -- the reader ----------------------------------------------------------------------------------------

def read_events_file(path, n_channels=None, name=None, split=None, source=None) -> EventDataset:
    """Validate an SHD-layout ``.h5`` file (see the module docstring for the rules) and index it.

    Parameters
    ----------
    path : str or Path
    n_channels : int or None -- channel count; None: the file's ``n_channels`` attribute, else 700
    source : str or Path or None -- the file to name in messages (default ``path``)

    Raises
    ------
    FileNotFoundError, DatasetFormatError
    """
    path = Path(path)
    source = Path(source) if source is not None else path
    if not path.is_file():
        raise FileNotFoundError(f"event file not found: '{path}'")
    if n_channels is not None:
        n_channels = int(n_channels) if isinstance(n_channels, np.integer) else n_channels
        check_int("n_channels", n_channels, 1, MAX_CHANNELS)
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise DatasetFormatError(f"{source}: not a readable HDF5 file ({exc})") from None
    with f:
        attrs = {k: _read_attr(source, f, k) for k in _attr_names(source, f)}
        if n_channels is None:
            n_channels = _file_channels(source, attrs.get("n_channels", DEFAULT_N_CHANNELS))
        d_times = _node(f, source, "spikes/times", h5py.Dataset)
        d_units = _node(f, source, "spikes/units", h5py.Dataset)
        d_labels = _node(f, source, "labels", h5py.Dataset)
        if len(d_labels.shape) != 1:
            _fail(source, "labels", f"expected a 1-D array, got shape {d_labels.shape}")
        n = d_labels.shape[0]
        if n < 1:
            _fail(source, "labels", "no samples (length 0)")
        if n > MAX_SAMPLES:
            _fail(source, "labels", f"declares {n} samples, more than the {MAX_SAMPLES} allowed")
        for field, d in (("spikes/times", d_times), ("spikes/units", d_units)):
            if len(d.shape) != 1 or d.shape[0] != n:
                _fail(source, field, f"has shape {d.shape} but labels has {n} samples")
        times_dtype = _vlen_base(source, "spikes/times", d_times, "fiu", "numbers (seconds)")
        _vlen_base(source, "spikes/units", d_units, "iu", "integers")
        heap = _check_global_heaps(source, path, f)
        for field, d in (("spikes/times", d_times), ("spikes/units", d_units)):
            _check_vlen_references(source, path, field, d, heap)
        class_names = _read_keys(source, f)
        labels = _read_labels(source, d_labels, class_names)
        speakers = _read_speakers(source, f, n)
        meta_info = _read_meta(source, f)
        index = _scan_events(source, d_times, d_units, n, n_channels, times_dtype)
    offsets, unsorted, max_time, channel_counts = index
    if unsorted.any():
        first = int(np.flatnonzero(unsorted)[0])
        warnings.warn(f"{source}: sample {first}: spikes/times: not sorted ({int(unsorted.sum())} sample(s) "
                      f"affected); sorted on read", DatasetWarning, stacklevel=2)
    empty = np.flatnonzero(np.diff(offsets) == 0)
    if empty.size:
        warnings.warn(f"{source}: sample {empty[0]}: spikes/times: no spikes ({empty.size} empty sample(s)); kept",
                      DatasetWarning, stacklevel=2)
    if class_names is None:
        class_names = [str(k) for k in range(int(labels.max()) + 1)]
        warnings.warn(f"{source}: extra/keys: missing; class names set to '0'..'{len(class_names) - 1}'",
                      DatasetWarning, stacklevel=2)
    return EventDataset(path, offsets, labels, class_names, speakers, n_channels, unsorted, max_time,
                        channel_counts, attrs, meta_info, name=name, split=split, source=source)


def _attr_names(source, f):
    try:
        return list(f.attrs.keys())
    except _READ_ERRORS as exc:
        _fail(source, "attributes", f"unreadable ({exc})")


def _read_keys(source, f):
    d = _node(f, source, "extra/keys", h5py.Dataset, required=False)
    if d is None:
        return None
    if len(d.shape) != 1:
        _fail(source, "extra/keys", f"expected a 1-D array of class names, got shape {d.shape}")
    if d.dtype.kind != "S" and h5py.check_string_dtype(d.dtype) is None:
        _fail(source, "extra/keys", f"expected strings, got dtype {d.dtype}")
    names = [_decode(k) for k in _read_all(source, "extra/keys", d, MAX_CLASSES)]
    seen = {}
    for i, k in enumerate(names):
        if k in seen:
            _fail(source, "extra/keys", f"class name {k!r} appears twice (entries {seen[k]} and {i})")
        seen[k] = i
    return names


def _read_labels(source, d, class_names):
    values = _read_all(source, "labels", d, MAX_SAMPLES)
    if class_names is not None:
        return _integers(source, "labels", values, "label", len(class_names),
                         f" (extra/keys has {len(class_names)} class names)")
    return _integers(source, "labels", values, "label", MAX_CLASSES,
                     f" (without extra/keys class names are made from the labels: at most {MAX_CLASSES} classes)")


def _read_speakers(source, f, n):
    d = _node(f, source, "extra/speaker", h5py.Dataset, required=False)
    if d is None:
        return None
    if d.shape != (n,):
        _fail(source, "extra/speaker", f"has shape {d.shape} but labels has {n} samples")
    if d.dtype.kind not in "iu":
        _fail(source, "extra/speaker", f"expected integers, got dtype {d.dtype}")
    values = _read_all(source, "extra/speaker", d, MAX_SAMPLES)
    return _integers(source, "extra/speaker", values, "speaker id", np.iinfo(np.int64).max)


def _read_meta(source, f):
    group = _node(f, source, "extra/meta_info", h5py.Group, required=False)
    if group is None:
        return {}
    try:
        names = list(group.keys())
    except _READ_ERRORS as exc:
        _fail(source, "extra/meta_info", f"unreadable ({exc})")
    meta = {}
    for key in names:
        field = f"extra/meta_info/{key}"
        meta[key] = _read_all(source, field, _node(f, source, field, h5py.Dataset), MAX_META_ELEMENTS)
    return meta


_GCOL_HEADER = struct.Struct("<4sB3sQ")      # signature, version, reserved, collection size (8-byte lengths)
_GCOL_OBJECT = struct.Struct("<HHIQ")        # heap object index, reference count, reserved, object size
_VLEN_REF = np.dtype([("length", "<u4"), ("collection", "<u8"), ("index", "<u4")])   # one element on disk


def _check_global_heaps(source, path, f, block=1 << 18):
    """Walk every global heap collection of the file; returns (keys, sizes) of its objects, sorted.

    Variable-length data lives in global heap collections: a 16-byte header, then objects (a
    16-byte header + data padded to 8 bytes; index 0 is the free space, which runs to the end).
    A corrupt object size can land HDF5's own walk on a zero-size free-space object, and HDF5
    (2.0.0 included) then loops forever; so every ``GCOL`` signature with a valid header is
    walked here first, reading 16 bytes per object.  ``keys`` are ``address * 65536 + index``.
    """
    try:
        sizes = f.id.get_create_plist().get_sizes()
    except _READ_ERRORS as exc:
        _fail(source, "superblock", f"unreadable ({exc})")
    if tuple(sizes) != (8, 8):
        _fail(source, "superblock", f"address/length sizes {tuple(sizes)}; only 8-byte ones are read")
    objects = array("Q")                         # key, size, key, size, ...
    file_size = path.stat().st_size
    with open(path, "rb") as raw:
        position, tail = 0, b""
        while chunk := raw.read(block):
            data = tail + chunk
            base = position - len(tail)
            start = data.find(b"GCOL")
            while start >= 0:
                here = raw.tell()
                _walk_collection(source, raw, base + start, file_size, objects)
                raw.seek(here)
                start = data.find(b"GCOL", start + 1)
            position += len(chunk)
            tail = data[-3:]
    table = np.frombuffer(objects, dtype=np.uint64).reshape(-1, 2)
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1]


def _walk_collection(source, raw, address, file_size, objects):
    raw.seek(address)
    header = raw.read(_GCOL_HEADER.size)
    if len(header) < _GCOL_HEADER.size:
        return
    _, version, reserved, size = _GCOL_HEADER.unpack(header)
    if version != 1 or reserved != b"\0\0\0" or size < 4096:
        return                                   # not a collection header (these bytes are data)
    where = f"global heap collection at byte {address}"
    if address + size > file_size:
        _fail(source, where, f"size {size} runs past the end of the file ({file_size} bytes)")
    offset = _GCOL_HEADER.size
    for _ in range(1 << 16):                    # object indices are 16-bit
        if offset + _GCOL_OBJECT.size > size:
            return                               # the remainder is free space too small for a header
        raw.seek(address + offset)
        index, _, _, length = _GCOL_OBJECT.unpack(raw.read(_GCOL_OBJECT.size))
        if index == 0:
            if offset + length != size:
                _fail(source, where, f"free space at offset {offset} has size {length}, but "
                                     f"{size - offset} bytes remain (the collection is corrupt)")
            return
        offset += _GCOL_OBJECT.size + (length + 7) // 8 * 8
        if offset > size:
            _fail(source, where, f"object {index} of size {length} runs past the collection's {size} bytes")
        objects.extend((address * 65536 + index, length))
    _fail(source, where, "more than 65536 objects (the collection is corrupt)")


def _check_vlen_references(source, path, field, d, heap, block=1 << 14):
    """Every element of a variable-length dataset must point at a heap object that holds it.

    HDF5 allocates (and fills) a buffer of the length an element claims before it looks at the
    heap, so a corrupt length could ask for gigabytes; the stored elements are read raw here
    (contiguous, or chunked without filters or with deflate only) and checked first.
    """
    keys = np.append(heap[0], np.uint64(2**64 - 1))     # a sentinel: every search lands on an entry
    sizes = np.append(heap[1], np.uint64(0))
    try:
        item = d.id.get_type().get_super().get_size()
        for first, refs in _raw_element_blocks(source, path, field, d, block):
            plausible = (refs["collection"] < 2**47) & (refs["index"] < 65536)     # keys fit in 64 bits
            key = refs["collection"].astype(np.uint64) * np.uint64(65536) + (refs["index"] & 0xFFFF).astype(np.uint64)
            at = np.searchsorted(keys[:-1], key)
            used = refs["length"] > 0
            bad = np.flatnonzero(used & ~(plausible & (keys[at] == key)))
            if bad.size:
                j = int(bad[0])
                _fail(source, field, f"element points at no heap object (collection {int(refs['collection'][j])}, "
                                     f"object {int(refs['index'][j])})", first + j)
            bad = np.flatnonzero(used & (refs["length"].astype(np.uint64) * np.uint64(item) > sizes[at]))
            if bad.size:
                j = int(bad[0])
                _fail(source, field, f"element claims {int(refs['length'][j])} values but its heap object "
                                     f"holds {int(sizes[at][j])} bytes", first + j)
    except DatasetFormatError:
        raise
    except _READ_ERRORS as exc:
        _fail(source, field, f"unreadable ({exc})")


def _raw_element_blocks(source, path, field, d, block):
    """Yields ``(first element, structured array of _VLEN_REF)`` of the dataset's stored bytes."""
    n = d.shape[0]
    if n == 0:
        return
    if d.chunks is None:
        offset = d.id.get_offset()
        if offset is None:
            _fail(source, field, "stores no data")
        with open(path, "rb") as raw:
            for first in range(0, n, block):
                count = min(block, n - first)
                raw.seek(offset + first * _VLEN_REF.itemsize)
                data = raw.read(count * _VLEN_REF.itemsize)
                if len(data) != count * _VLEN_REF.itemsize:
                    _fail(source, field, "stored elements run past the end of the file")
                yield first, np.frombuffer(data, dtype=_VLEN_REF)
        return
    plist = d.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(code != h5py.h5z.FILTER_DEFLATE for code in filters):
        _fail(source, field, f"variable-length data with HDF5 filters {filters} is not read "
                             f"(only none or deflate; the filters do not shrink it anyway)")
    per_chunk = d.chunks[0] * _VLEN_REF.itemsize
    with open(path, "rb") as raw:
        for i in range(d.id.get_num_chunks()):
            info = d.id.get_chunk_info(i)
            raw.seek(info.byte_offset)
            data = raw.read(info.size)
            if filters and not info.filter_mask & 1:
                inflate = zlib.decompressobj()
                try:
                    data = inflate.decompress(data, per_chunk)
                except zlib.error as exc:
                    _fail(source, field, f"chunk {i}: corrupt deflate stream ({exc})")
            first = int(info.chunk_offset[0])
            count = min(d.chunks[0], n - first)
            if len(data) < count * _VLEN_REF.itemsize:
                _fail(source, field, f"chunk {i}: {len(data)} bytes, expected {count * _VLEN_REF.itemsize}")
            yield first, np.frombuffer(data[:count * _VLEN_REF.itemsize], dtype=_VLEN_REF)


def _scan_events(source, d_times, d_units, n, n_channels, times_dtype):
    """Validate every sample, ``_BLOCK`` at a time; returns (offsets, unsorted, max_time, channel_counts)."""
    offsets = np.zeros(n + 1, dtype=np.int64)
    unsorted = np.zeros(n, dtype=bool)
    channel_counts = np.zeros(n_channels, dtype=np.int64)
    max_time = 0.0
    floating = times_dtype.kind == "f"
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        try:
            t_block, u_block = d_times[start:stop], d_units[start:stop]
        except _READ_ERRORS as exc:
            _fail(source, "spikes/times, spikes/units", f"unreadable ({exc})", start)
        lengths = np.array([np.size(t) for t in t_block], dtype=np.int64)
        for j, (t, u) in enumerate(zip(t_block, u_block)):
            if np.size(u) != lengths[j]:
                _fail(source, "spikes/times, spikes/units",
                      f"{lengths[j]} times but {np.size(u)} units (lengths must match)", start + j)
        np.cumsum(lengths, out=offsets[start + 1:stop + 1])
        offsets[start + 1:stop + 1] += offsets[start]
        if not lengths.sum():
            continue
        times = np.concatenate([np.asarray(t) for t in t_block])
        units = np.concatenate([np.asarray(u) for u in u_block])
        local = np.concatenate([[0], np.cumsum(lengths)])

        def sample_of(position):
            s = int(np.searchsorted(local, position, side="right") - 1)
            return s, int(position - local[s])

        if floating:
            bad = np.flatnonzero(~np.isfinite(times))
            if bad.size:
                s, e = sample_of(bad[0])
                _fail(source, "spikes/times", f"non-finite time {float(times[bad[0]])!r} at event {e}", start + s)
        bad = np.flatnonzero(times < 0)
        if bad.size:
            s, e = sample_of(bad[0])
            _fail(source, "spikes/times", f"negative time {float(times[bad[0]])!r} s at event {e}", start + s)
        bad = np.flatnonzero((units < 0) | (units >= n_channels))
        if bad.size:
            s, e = sample_of(bad[0])
            _fail(source, "spikes/units", f"unit {int(units[bad[0]])} outside 0..{n_channels - 1} "
                                          f"(n_channels={n_channels}) at event {e}", start + s)
        descending = np.flatnonzero(np.diff(times) < 0) + 1          # position of the later event
        descending = descending[~np.isin(descending, local[1:-1])]    # not across a sample boundary
        if descending.size:
            unsorted[start + np.unique(np.searchsorted(local, descending, side="right") - 1)] = True
        max_time = max(max_time, float(times.max()))
        channel_counts += np.bincount(units.astype(np.int64), minlength=n_channels)
    return offsets, unsorted, max_time, channel_counts


def write_events_file(path, times, units, labels, class_names, speakers=None, meta_info=None, attrs=None,
                      n_channels=DEFAULT_N_CHANNELS, times_dtype=np.float32):
    """Write samples in the SHD layout, atomically (temporary file, then ``os.replace``).

    Parameters
    ----------
    path : str or Path -- the ``.h5`` to create or replace
    times : sequence of N arrays, seconds -- written as variable-length ``times_dtype`` (float32)
    units : sequence of N integer arrays -- written as variable-length uint16
    labels : (N,) ints in ``0 .. len(class_names)-1``
    class_names : sequence of str -- written to ``extra/keys`` as UTF-8 bytes
    speakers : (N,) ints or None -- ``extra/speaker``
    meta_info : dict of str -> array or None -- ``extra/meta_info/<key>``
    attrs : dict or None -- root attributes (str, numbers); ``n_channels`` is always added
    """
    path = Path(path)
    n = len(labels)
    if len(times) != n or len(units) != n:
        raise OnlineDelayError(f"times ({len(times)}), units ({len(units)}) and labels ({n}) must have the same length")
    if speakers is not None and len(speakers) != n:
        raise OnlineDelayError(f"speakers has {len(speakers)} entries, labels {n}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        vt = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.dtype(times_dtype)))
        vu = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.dtype(np.uint16)))
        for i in range(n):
            t = np.asarray(times[i], dtype=times_dtype)
            u = np.asarray(units[i])
            if t.shape != u.shape or t.ndim != 1:
                raise OnlineDelayError(f"sample {i}: times {t.shape} and units {u.shape} must be 1-D of equal length")
            if u.size and (u.min() < 0 or u.max() > np.iinfo(np.uint16).max):
                raise OnlineDelayError(f"sample {i}: units must fit uint16, got range {u.min()}..{u.max()}")
            vt[i] = t
            vu[i] = u.astype(np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int32))
        f.create_dataset("extra/keys", data=np.array([str(k).encode("utf-8") for k in class_names]))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.int32))
        for key, value in (meta_info or {}).items():
            value = np.asarray(value)
            if value.dtype.kind == "U":
                value = np.char.encode(value, "utf-8")
            f.create_dataset(f"extra/meta_info/{key}", data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.attrs["n_channels"] = int(n_channels)
    return path
