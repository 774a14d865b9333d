"""Guards of the SHD-layout reader: its error type, the raw checks HDF5 itself cannot be trusted with.

A corrupt file can make HDF5 loop forever, crash or allocate what a damaged element claims when it
reads variable-length data; :func:`check_global_heaps` and :func:`check_vlen_references` walk the
global heap collections and the stored elements on the raw bytes first, and refuse anything
inconsistent with one :class:`DatasetFormatError` naming the file and the field.
"""

from __future__ import annotations

import struct
import zlib
from array import array

import h5py
import numpy as np

from ..errors import OnlineDelayError

BLOCK = 256                    # samples validated / iterated at a time (SSC: about 8 MB of spikes)
BIN_BLOCK = 16                 # samples binned at a time (np.bincount's int64 counts: 16 x steps x groups)
READ_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError)


class DatasetFormatError(OnlineDelayError):
    """An event file that does not follow the SHD layout (message names file, field, sample, value)."""


class DatasetWarning(UserWarning):
    """Something in an event file was repaired or filled in while reading it."""


def fail(source, field, message, sample=None):
    where = f"sample {sample}: " if sample is not None else ""
    raise DatasetFormatError(f"{source}: {where}{field}: {message}")


_GCOL_HEADER = struct.Struct("<4sB3sQ")      # signature, version, reserved, collection size (8-byte lengths)
_GCOL_OBJECT = struct.Struct("<HHIQ")        # heap object index, reference count, reserved, object size
_VLEN_REF = np.dtype([("length", "<u4"), ("collection", "<u8"), ("index", "<u4")])   # one element on disk


def check_global_heaps(source, path, f, block=1 << 18):
    """Walk every global heap collection of the file; returns (keys, sizes) of its objects, sorted.

    Variable-length data lives in global heap collections: a 16-byte header, then objects (a
    16-byte header + data padded to 8 bytes; index 0 is the free space, which runs to the end).
    A corrupt object size can land HDF5's own walk on a zero-size free-space object, and HDF5
    (2.0.0 included) then loops forever; so every ``GCOL`` signature with a valid header is
    walked here first, reading 16 bytes per object.  ``keys`` are ``address * 65536 + index``.
    """
    try:
        sizes = f.id.get_create_plist().get_sizes()
    except READ_ERRORS as exc:
        fail(source, "superblock", f"unreadable ({exc})")
    if tuple(sizes) != (8, 8):
        fail(source, "superblock", f"address/length sizes {tuple(sizes)}; only 8-byte ones are read")
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
        fail(source, where, f"size {size} runs past the end of the file ({file_size} bytes)")
    offset = _GCOL_HEADER.size
    for _ in range(1 << 16):                    # object indices are 16-bit
        if offset + _GCOL_OBJECT.size > size:
            return                               # the remainder is free space too small for a header
        raw.seek(address + offset)
        index, _, _, length = _GCOL_OBJECT.unpack(raw.read(_GCOL_OBJECT.size))
        if index == 0:
            if offset + length != size:
                fail(source, where, f"free space at offset {offset} has size {length}, but "
                                     f"{size - offset} bytes remain (the collection is corrupt)")
            return
        offset += _GCOL_OBJECT.size + (length + 7) // 8 * 8
        if offset > size:
            fail(source, where, f"object {index} of size {length} runs past the collection's {size} bytes")
        objects.extend((address * 65536 + index, length))
    fail(source, where, "more than 65536 objects (the collection is corrupt)")


def check_vlen_references(source, path, field, d, heap, block=1 << 14):
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
                fail(source, field, f"element points at no heap object (collection {int(refs['collection'][j])}, "
                                     f"object {int(refs['index'][j])})", first + j)
            bad = np.flatnonzero(used & (refs["length"].astype(np.uint64) * np.uint64(item) > sizes[at]))
            if bad.size:
                j = int(bad[0])
                fail(source, field, f"element claims {int(refs['length'][j])} values but its heap object "
                                     f"holds {int(sizes[at][j])} bytes", first + j)
    except DatasetFormatError:
        raise
    except READ_ERRORS as exc:
        fail(source, field, f"unreadable ({exc})")


def _raw_element_blocks(source, path, field, d, block):
    """Yields ``(first element, structured array of _VLEN_REF)`` of the dataset's stored bytes."""
    n = d.shape[0]
    if n == 0:
        return
    if d.chunks is None:
        offset = d.id.get_offset()
        if offset is None:
            fail(source, field, "stores no data")
        with open(path, "rb") as raw:
            for first in range(0, n, block):
                count = min(block, n - first)
                raw.seek(offset + first * _VLEN_REF.itemsize)
                data = raw.read(count * _VLEN_REF.itemsize)
                if len(data) != count * _VLEN_REF.itemsize:
                    fail(source, field, "stored elements run past the end of the file")
                yield first, np.frombuffer(data, dtype=_VLEN_REF)
        return
    plist = d.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if any(code != h5py.h5z.FILTER_DEFLATE for code in filters):
        fail(source, field, f"variable-length data with HDF5 filters {filters} is not read "
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
                    fail(source, field, f"chunk {i}: corrupt deflate stream ({exc})")
            first = int(info.chunk_offset[0])
            count = min(d.chunks[0], n - first)
            if len(data) < count * _VLEN_REF.itemsize:
                fail(source, field, f"chunk {i}: {len(data)} bytes, expected {count * _VLEN_REF.itemsize}")
            yield first, np.frombuffer(data[:count * _VLEN_REF.itemsize], dtype=_VLEN_REF)
