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
import warnings
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import OnlineDelayError, check_int
from .events import EventDataset
from .hdf5_checks import (BLOCK, READ_ERRORS, DatasetFormatError, DatasetWarning, check_global_heaps,
                          check_vlen_references, fail)

__all__ = ["DatasetFormatError", "DatasetWarning", "EventDataset", "read_events_file", "write_events_file",
           "DEFAULT_N_CHANNELS", "MAX_CHANNELS", "MAX_CLASSES", "MAX_SAMPLES", "MAX_META_ELEMENTS"]

DEFAULT_N_CHANNELS = 700
MAX_CHANNELS = 65536            # units are uint16 in the layout
MAX_CLASSES = 100_000
MAX_SAMPLES = 10_000_000        # SSC's train split has 75,466
MAX_META_ELEMENTS = 10_000_000
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
        except READ_ERRORS as exc:
            fail(source, sub, f"unreadable ({exc})")
        if link is None:
            if required:
                fail(source, field, "missing (an SHD-layout file needs spikes/times, spikes/units and labels; "
                                     f"found top-level: {_top_level(f)})")
            return None
        if isinstance(link, h5py.ExternalLink):
            fail(source, sub, f"is an external link to '{link.filename}:{link.path}'; links are refused "
                               f"(a dataset file must hold its own data)")
        if isinstance(link, h5py.SoftLink):
            fail(source, sub, f"is a soft link to '{link.path}'; links are refused")
        try:
            obj = obj[part]
        except READ_ERRORS as exc:
            fail(source, sub, f"unreadable ({exc})")
        want = kind if k == len(parts) - 1 else h5py.Group
        if not isinstance(obj, want):
            found = "a group" if isinstance(obj, h5py.Group) else \
                "a dataset" if isinstance(obj, h5py.Dataset) else type(obj).__name__
            fail(source, sub, f"expected {'a group' if want is h5py.Group else 'a dataset'}, found {found}")
    if isinstance(obj, h5py.Dataset):
        _check_storage(source, field, obj)
    return obj


def _top_level(f):
    try:
        return sorted(f.keys())
    except READ_ERRORS:
        return "unreadable"


def _check_storage(source, field, d):
    """Refuse external storage, virtual datasets and storage that holds less than the shape declares."""
    try:
        d.dtype                                         # parse the datatype now: h5py parses it lazily
        if d.external:
            fail(source, field, f"uses external storage ({d.external[0][0]!r}); refused "
                                 f"(a dataset file must hold its own data)")
        if d.is_virtual:
            fail(source, field, "is a virtual dataset (data in other files); refused")
        if d.shape is None:
            fail(source, field, "has an empty dataspace (no shape)")
        n = int(np.prod(d.shape, dtype=np.int64)) if d.shape else 1
        if n == 0:
            return
        if d.chunks is None:
            need = n * d.id.get_type().get_size()
            stored = d.id.get_storage_size()
            if stored < need:
                fail(source, field, f"declares shape {d.shape} but stores {stored} of {need} bytes")
        else:
            per_axis = [math.ceil(s / c) for s, c in zip(d.shape, d.chunks)]
            need = int(np.prod(per_axis, dtype=np.int64))
            stored = d.id.get_num_chunks()
            if stored < need:
                fail(source, field, f"declares shape {d.shape} but stores {stored} of {need} chunks")
    except DatasetFormatError:
        raise
    except READ_ERRORS as exc:
        fail(source, field, f"unreadable ({exc})")


def _read_all(source, field, d, max_elements):
    if d.size > max_elements:
        fail(source, field, f"declares {d.size} elements, more than the {max_elements} allowed")
    try:
        return d[()]
    except READ_ERRORS as exc:
        fail(source, field, f"unreadable ({exc})")


def _vlen_base(source, field, d, kinds, what):
    base = h5py.check_vlen_dtype(d.dtype)
    if not isinstance(base, np.dtype) or base.kind not in kinds:
        shown = f"variable-length {base}" if base is not None else str(d.dtype)
        fail(source, field, f"expected variable-length {what}, got {shown}")
    try:
        message = d.id.get_type().encode()[2:]         # the datatype message, as stored in the file
    except READ_ERRORS as exc:
        fail(source, field, f"unreadable datatype ({exc})")
    if message[1] & 0x0F != 0:                          # HDF5 reads a vlen of unknown kind out of bounds
        fail(source, field, f"corrupt datatype: variable-length kind {message[1] & 0x0F} is not a sequence")
    return base


def _integers(source, field, values, what, limit, note=""):
    """``values`` (any numeric dtype) as int64, each in ``0 .. limit-1``; refuses NaN, fractions, bools."""
    if values.dtype.kind not in "iuf":
        fail(source, field, f"expected integers, got dtype {values.dtype}")
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            fail(source, field, f"non-integer {what} {values[bad[0]].item()!r}", int(bad[0]))
    bad = np.flatnonzero((values < 0) | (values >= limit))
    if bad.size:
        fail(source, field, f"{what} {values[bad[0]].item()!r} outside 0..{limit - 1}{note}", int(bad[0]))
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
    except READ_ERRORS as exc:
        fail(source, f"attribute {key}", f"unreadable ({exc})")
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
            fail(source, "labels", f"expected a 1-D array, got shape {d_labels.shape}")
        n = d_labels.shape[0]
        if n < 1:
            fail(source, "labels", "no samples (length 0)")
        if n > MAX_SAMPLES:
            fail(source, "labels", f"declares {n} samples, more than the {MAX_SAMPLES} allowed")
        for field, d in (("spikes/times", d_times), ("spikes/units", d_units)):
            if len(d.shape) != 1 or d.shape[0] != n:
                fail(source, field, f"has shape {d.shape} but labels has {n} samples")
        times_dtype = _vlen_base(source, "spikes/times", d_times, "fiu", "numbers (seconds)")
        _vlen_base(source, "spikes/units", d_units, "iu", "integers")
        heap = check_global_heaps(source, path, f)
        for field, d in (("spikes/times", d_times), ("spikes/units", d_units)):
            check_vlen_references(source, path, field, d, heap)
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
    except READ_ERRORS as exc:
        fail(source, "attributes", f"unreadable ({exc})")


def _read_keys(source, f):
    d = _node(f, source, "extra/keys", h5py.Dataset, required=False)
    if d is None:
        return None
    if len(d.shape) != 1:
        fail(source, "extra/keys", f"expected a 1-D array of class names, got shape {d.shape}")
    if d.dtype.kind != "S" and h5py.check_string_dtype(d.dtype) is None:
        fail(source, "extra/keys", f"expected strings, got dtype {d.dtype}")
    names = [_decode(k) for k in _read_all(source, "extra/keys", d, MAX_CLASSES)]
    seen = {}
    for i, k in enumerate(names):
        if k in seen:
            fail(source, "extra/keys", f"class name {k!r} appears twice (entries {seen[k]} and {i})")
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
        fail(source, "extra/speaker", f"has shape {d.shape} but labels has {n} samples")
    if d.dtype.kind not in "iu":
        fail(source, "extra/speaker", f"expected integers, got dtype {d.dtype}")
    values = _read_all(source, "extra/speaker", d, MAX_SAMPLES)
    return _integers(source, "extra/speaker", values, "speaker id", np.iinfo(np.int64).max)


def _read_meta(source, f):
    group = _node(f, source, "extra/meta_info", h5py.Group, required=False)
    if group is None:
        return {}
    try:
        names = list(group.keys())
    except READ_ERRORS as exc:
        fail(source, "extra/meta_info", f"unreadable ({exc})")
    meta = {}
    for key in names:
        field = f"extra/meta_info/{key}"
        meta[key] = _read_all(source, field, _node(f, source, field, h5py.Dataset), MAX_META_ELEMENTS)
    return meta


def _scan_events(source, d_times, d_units, n, n_channels, times_dtype):
    """Validate every sample, ``BLOCK`` at a time; returns (offsets, unsorted, max_time, channel_counts)."""
    offsets = np.zeros(n + 1, dtype=np.int64)
    unsorted = np.zeros(n, dtype=bool)
    channel_counts = np.zeros(n_channels, dtype=np.int64)
    max_time = 0.0
    floating = times_dtype.kind == "f"
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        try:
            t_block, u_block = d_times[start:stop], d_units[start:stop]
        except READ_ERRORS as exc:
            fail(source, "spikes/times, spikes/units", f"unreadable ({exc})", start)
        lengths = np.array([np.size(t) for t in t_block], dtype=np.int64)
        for j, (t, u) in enumerate(zip(t_block, u_block)):
            if np.size(u) != lengths[j]:
                fail(source, "spikes/times, spikes/units",
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
                fail(source, "spikes/times", f"non-finite time {float(times[bad[0]])!r} at event {e}", start + s)
        bad = np.flatnonzero(times < 0)
        if bad.size:
            s, e = sample_of(bad[0])
            fail(source, "spikes/times", f"negative time {float(times[bad[0]])!r} s at event {e}", start + s)
        bad = np.flatnonzero((units < 0) | (units >= n_channels))
        if bad.size:
            s, e = sample_of(bad[0])
            fail(source, "spikes/units", f"unit {int(units[bad[0]])} outside 0..{n_channels - 1} "
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
