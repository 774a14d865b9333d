"""Model and checkpoint files: HDF5, written atomically, read without executing anything.

Layout of a file (``format = "onlinedelay-model"``, ``format_version = 2``; 3 for a low-bit model)::

    attrs: format, format_version, package_version, seed, dtype, network_config (JSON),
           learning_config (JSON, optional), class_names (JSON), training (JSON, optional),
           checksum (SHA-256 of every array below, in order, with its name, dtype and shape)
    params/layers/<l>/<feedforward|recurrent>/{indptr, pre, weight, delay, delay_of_syn,
                                               pre_of_delay, shared_weight, weight_of_syn}
                               low-bit projections also: weight_shadow, weight_scale, weight_code
                               (int8 -1/0/1 ternary, uint8 0..2^m-1 k-bit: the hardware's codes),
                               delay_shadow, delay_offset (quantize.py)
    params/w_out, params/b_out
    optimizer/ (checkpoints only): attrs steps; m/<i>, v/<i> (Adam moments, in the order of
               Parameters.learned); feedback/<l> (fixed random feedback of layer l)

A low-bit model's effective weights and delays are recomputed from its shadow arrays on load and
must equal the stored ones, as must the stored codes and fixed scales.  Version 1 files (one hidden layer: ``params/input``, ``params/recurrent``, ``optimizer/feedback``)
still load.  Writes go to a temporary file in the same folder, then ``os.replace`` -- a reader
never sees a half-written model.  Loading refuses links and external storage, checks every
array's kind and shape before reading it, the CSR structure against the configuration, every
index range, finite values in the network's dtype, the delay range and the checksum, and names
the file and the field of anything wrong (:class:`ModelFileError`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ._version import __version__
from .atomic import atomic_path
from .config import LearningConfig, NetworkConfig, ProjectionSpec
from .errors import OnlineDelayError
from .network import Network
from .projections import refresh_delay_steps
from . import quantize as Q
from .state import PROJECTION_KINDS, LayerParameters, Parameters, Projection

FORMAT = "onlinedelay-model"
FORMAT_VERSION = 3                # written only for low-bit models; float models stay version 2
FLOAT_FORMAT_VERSION = 2
MAX_MODEL_BYTES = 4 << 30         # a configuration whose network would need more memory is refused


class ModelFileError(OnlineDelayError):
    """A model or checkpoint file that cannot be used (names the file and the field)."""


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    net: Network
    class_names: list
    learning_config: LearningConfig | None
    training: dict | None
    optimizer: dict | None      # {"steps": int, "m": [arrays] or None, "v": [...], "feedback": {layer: array}}
    path: Path


def _checksum(named_arrays) -> str:
    digest = hashlib.sha256()
    for name, arr in named_arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _code_arrays(net: Network):
    """("params/layers/<l>/<kind>/weight_code", codes) of every projection with quantized weights."""
    return [(f"params/layers/{l}/{kind}/weight_code", Q.weight_codes(spec, proj.weight_shadow))
            for l, kind, proj, spec in net.projection_specs() if proj.weight_scale.size]


def _optimizer_arrays(learner):
    out = []
    for key in ("m", "v"):
        out += [(f"optimizer/{key}/{i}", arr) for i, arr in enumerate(getattr(learner.optimizer, key))]
    out += [(f"optimizer/feedback/{l}", fb) for l, fb in enumerate(learner.feedback) if fb is not None]
    return out


def save_model(path, net: Network, class_names=None, learner=None, training: dict | None = None) -> None:
    """Write ``net`` (and, with ``learner``, its optimizer state: a checkpoint) to ``path``."""
    c = net.config
    names = list(class_names) if class_names is not None else [str(k) for k in range(c.n_outputs)]
    if len(names) != c.n_outputs:
        raise OnlineDelayError(f"class_names has {len(names)} names for {c.n_outputs} outputs")
    arrays = [(f"params/{name}", arr) for name, arr in net.params.arrays()]
    codes = _code_arrays(net)
    quantized = bool(codes) or any(proj.delay_offset.size for _, _, proj in net.params.projections())
    arrays += codes
    if learner is not None:
        arrays += _optimizer_arrays(learner)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=USERBLOCK_BYTES) as f:
            _write_model(f, net, c, names, learner, training, arrays, quantized)
        seal_file(tmp)


def _write_model(f, net, c, names, learner, training, arrays, quantized) -> None:
    """The attributes and arrays of a model file (the layout in the module docstring)."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION if quantized else FLOAT_FORMAT_VERSION
    f.attrs["package_version"] = __version__
    f.attrs["seed"] = net.seed
    f.attrs["dtype"] = net.dtype.name
    f.attrs["network_config"] = json.dumps(c.to_dict())
    f.attrs["class_names"] = json.dumps(names)
    if training is not None:
        f.attrs["training"] = json.dumps(training)
    if learner is not None:
        f.attrs["learning_config"] = json.dumps(learner.config.to_dict())
        f.require_group("optimizer").attrs["steps"] = learner.optimizer.steps
    for name, arr in arrays:
        f.create_dataset(name, data=arr)
    f.attrs["checksum"] = _checksum(arrays)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _fail(path, field, message):
    raise ModelFileError(f"{path}: {field}: {message}")


# The first USERBLOCK_BYTES of a file (HDF5 skips them) hold SEAL and the SHA-256 of every byte after
# them: a file is checked whole before HDF5 parses any of it, since a damaged HDF5 structure can make
# the library loop forever or crash (the fuzzer, tests/fuzz/fuzz_models.py, found such files).
USERBLOCK_BYTES = 512
SEAL = b"onlinedelay-model sha256 "
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _file_digest(path, start: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_file(path) -> None:
    """Write SEAL and the digest of the HDF5 part into the userblock of a model file: done by
    :func:`save_model`; call it after editing a model file with h5py on purpose."""
    header = SEAL + _file_digest(path, USERBLOCK_BYTES).encode()
    with open(path, "r+b") as fh:
        fh.write(header.ljust(USERBLOCK_BYTES, b"\0"))


def _check_seal(path) -> None:
    """A sealed file must match its digest; an unsealed one is read only if HDF5 starts at byte 0
    (files written before the seal); anything else is refused before HDF5 sees it."""
    with open(path, "rb") as fh:
        head = fh.read(USERBLOCK_BYTES + len(_HDF5_SIGNATURE))
    if head.startswith(SEAL):
        stored = head[len(SEAL):len(SEAL) + 64].decode("ascii", "replace")
        if stored != _file_digest(path, USERBLOCK_BYTES):
            raise ModelFileError(f"{path}: file checksum does not match (the file was changed or damaged)")
    elif not head.startswith(_HDF5_SIGNATURE):
        raise ModelFileError(f"{path}: not an HDF5 file written by onlinedelay (no seal, no HDF5 signature at byte 0)")


def _node(path, group, name, kind):
    """The hard-linked dataset or group ``name`` of ``group`` (links and external data refused)."""
    field = f"{group.name}/{name}".lstrip("/")
    link = group.get(name, getlink=True)
    if link is None:
        _fail(path, field, "missing")
    if not isinstance(link, h5py.HardLink):
        _fail(path, field, f"is a {type(link).__name__}; only plain (hard-linked) objects are read")
    node = group[name]
    want = h5py.Group if kind == "group" else h5py.Dataset
    if not isinstance(node, want):
        _fail(path, field, f"expected a {'group' if kind == 'group' else 'dataset'}, got a {type(node).__name__}")
    if kind != "group" and (node.external or node.is_virtual):
        _fail(path, field, "uses external or virtual storage, which is refused")
    return node


def _array(path, group, name, kind, shape=None, dtype=None):
    """Read dataset ``name`` after checking its kind and shape (nothing larger than expected is read)."""
    field = f"{group.name}/{name}".lstrip("/")
    dset = _node(path, group, name, "dataset")
    if dset.dtype.kind not in kind:
        _fail(path, field, f"expected an array of kind {kind!r}, got {dset.dtype}")
    if shape is not None and dset.shape != shape:
        _fail(path, field, f"shape {dset.shape}, expected {shape}")
    arr = np.asarray(dset[()])
    if arr.dtype.kind == "f":
        if dtype is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(dtype)
        if not np.isfinite(arr).all():
            i = int(np.argmin(np.isfinite(arr).reshape(-1)))
            _fail(path, field, f"value [{i}] is NaN, inf or too large for {arr.dtype}")
    return arr


def _json_attr(path, f, name, required=True):
    if name not in f.attrs:
        if required:
            _fail(path, f"attrs/{name}", "missing")
        return None
    try:
        return json.loads(f.attrs[name])
    except (TypeError, ValueError) as err:
        _fail(path, f"attrs/{name}", f"not valid JSON ({err})")


def _expected_rows(spec: ProjectionSpec | None, n_pre: int, n_post: int):
    """(indptr, pre) of a dense or conv projection, fixed fan-in of a sparse one, None for recurrence off."""
    if spec is None:
        return np.zeros(n_post + 1, np.int64), np.zeros(0, np.int64)
    if spec.connectivity == "conv":
        half = spec.kernel_size // 2
        rows = [np.arange(max(0, j - half), min(n_pre, j + half + 1)) for j in range(n_post)]
    elif spec.connectivity == "dense":
        rows = [np.delete(np.arange(n_pre), j) if spec.exclude_self else np.arange(n_pre) for j in range(n_post)]
    else:
        available = n_pre - 1 if spec.exclude_self else n_pre
        fan_in = 0 if available <= 0 else max(1, int(round(spec.density * available)))
        return np.arange(n_post + 1) * fan_in, None
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return indptr, (np.concatenate(rows) if rows else np.zeros(0, np.int64))


def _load_projection(path, group, spec: ProjectionSpec | None, n_pre, n_post, max_delay, dtype, version):
    where = group.name.lstrip("/")
    n_pre = n_pre if spec is not None else 0
    mode = spec.delays if spec is not None else "none"
    want_indptr, want_pre = _expected_rows(spec, n_pre, n_post)
    indptr = _array(path, group, "indptr", "iu", (n_post + 1,)).astype(np.int64)
    if not np.array_equal(indptr, want_indptr):
        _fail(path, f"{where}/indptr", "row pointers do not match the configuration's connectivity")
    n_syn = int(indptr[-1])
    pre = _array(path, group, "pre", "iu", (n_syn,)).astype(np.int64)
    if n_syn and (pre.min() < 0 or pre.max() >= n_pre):
        bad = int(np.argmax((pre < 0) | (pre >= n_pre)))
        _fail(path, f"{where}/pre", f"presynaptic index [{bad}] = {int(pre[bad])} outside [0, {n_pre})")
    if want_pre is not None and not np.array_equal(pre, want_pre):
        _fail(path, f"{where}/pre", "presynaptic indices do not match the configuration's connectivity")
    if want_pre is None:                  # sparse: sorted, distinct, no autapse where excluded
        for j in range(n_post):
            row = pre[indptr[j]:indptr[j + 1]]
            if (np.diff(row) <= 0).any() or (spec.exclude_self and (row == j).any()):
                _fail(path, f"{where}/pre", f"row {j} is not a sorted set of distinct inputs"
                      + (" without the autapse" if spec.exclude_self else ""))
    conv = spec is not None and spec.connectivity == "conv"
    n_shared = spec.kernel_size if conv else 0
    if version >= 2:
        shared = _array(path, group, "shared_weight", "f", (n_shared,), dtype)
        weight_of_syn = _array(path, group, "weight_of_syn", "iu", (n_syn if conv else 0,)).astype(np.int64)
        if conv and not np.array_equal(weight_of_syn, pre - np.repeat(np.arange(n_post), np.diff(indptr))
                                       + spec.kernel_size // 2):
            _fail(path, f"{where}/weight_of_syn", "conv taps do not match the kernel layout")
    else:
        shared, weight_of_syn = np.zeros(0, dtype), np.zeros(0, np.int64)
    weight = _array(path, group, "weight", "f", (n_syn,), dtype)
    n_delays = {"synaptic": n_syn, "axonal": n_pre, "none": 0}[mode]
    delay = _array(path, group, "delay", "f", (n_delays,), dtype)
    if n_delays and (delay.min() < 0 or delay.max() > max_delay):
        bad = int(np.argmax((delay < 0) | (delay > max_delay)))
        _fail(path, f"{where}/delay", f"delay [{bad}] = {float(delay[bad])!r} outside [0, {max_delay}] steps")
    delay_of_syn = _array(path, group, "delay_of_syn", "iu", (n_syn,)).astype(np.int64)
    pre_of_delay = _array(path, group, "pre_of_delay", "iu", (n_delays,)).astype(np.int64)
    want_of_syn, want_of_delay = {"synaptic": (np.arange(n_syn), pre), "axonal": (pre, np.arange(n_pre)),
                                  "none": (np.zeros(n_syn, np.int64), np.zeros(0, np.int64))}[mode]
    if not np.array_equal(delay_of_syn, want_of_syn):
        _fail(path, f"{where}/delay_of_syn", f"does not match {mode!r} delays")
    if not np.array_equal(pre_of_delay, want_of_delay):
        _fail(path, f"{where}/pre_of_delay", f"does not match {mode!r} delays")
    i32 = np.int32
    empty = np.zeros(0, dtype)
    quant = {"weight_shadow": empty, "weight_scale": empty, "delay_shadow": empty, "delay_offset": empty}
    if spec is not None and spec.quantized_weights:
        quant["weight_shadow"] = _array(path, group, "weight_shadow", "f", ((n_shared if conv else n_syn),), dtype)
        quant["weight_scale"] = _array(path, group, "weight_scale", "f", (2,), dtype)
    if spec is not None and spec.quantized_delays:
        quant["delay_shadow"] = _array(path, group, "delay_shadow", "f", (n_delays,), dtype)
        quant["delay_offset"] = _array(path, group, "delay_offset", "f", (1,), dtype)
        d = quant["delay_shadow"]
        if n_delays and (d.min() < 0 or d.max() > max_delay):
            bad = int(np.argmax((d < 0) | (d > max_delay)))
            _fail(path, f"{where}/delay_shadow", f"delay [{bad}] = {float(d[bad])!r} outside [0, {max_delay}] steps")
    proj = Projection(indptr.astype(i32), pre.astype(i32), weight, delay, np.zeros(n_syn, i32),
                      delay_of_syn.astype(i32), pre_of_delay.astype(i32), shared, weight_of_syn.astype(i32),
                      **quant)
    if proj.weight_scale.size or proj.delay_offset.size:
        _requantize_and_check(path, where, group, proj, spec, max_delay)
    proj.expand_shared()                  # a conv's per-synapse weights are derived from its taps
    refresh_delay_steps(proj, max_delay)
    return proj


def _requantize_and_check(path, where, group, proj: Projection, spec: ProjectionSpec, max_delay) -> None:
    """Low-bit projection: recompute the effective arrays from the shadows; the stored ones (weights,
    delays, fixed scales, integer codes) must be the same."""
    stored = {"weight": proj.weight.copy(), "shared_weight": proj.shared_weight.copy(), "delay": proj.delay.copy(),
              "weight_scale": proj.weight_scale.copy()}
    Q.quantize_projection(proj, spec, max_delay)
    for field, before in stored.items():
        if not np.array_equal(before, getattr(proj, field)):
            _fail(path, f"{where}/{field}", "does not match the value quantized from the stored shadow arrays")
    if proj.weight_scale.size:
        want = Q.weight_codes(spec, proj.weight_shadow)
        codes = _array(path, group, "weight_code", "iu", want.shape)
        if not np.array_equal(codes.astype(np.int64), want.astype(np.int64)):
            bad = int(np.argmax(codes.astype(np.int64) != want))
            _fail(path, f"{where}/weight_code", f"code [{bad}] = {int(codes[bad])} does not match the quantized "
                  f"shadow weight ({int(want[bad])})")


def estimated_bytes(config: NetworkConfig, extra_slots: int = 64) -> int:
    """Rough upper bound of the memory a batch-1 network of ``config`` needs (parameters, rings)."""
    total, slots = 0, config.max_delay_steps + 1 + extra_slots
    for spec in config.layer_specs:
        n_syn = spec.n_pre * spec.n_neurons + (spec.n_neurons ** 2 if spec.recurrent is not None else 0)
        total += 24 * n_syn + 8 * slots * (spec.n_pre + 3 * spec.n_neurons)
    return total + 8 * config.n_outputs * config.n_readout_inputs


def _load_config(path, f):
    try:
        config = NetworkConfig.from_dict(_json_attr(path, f, "network_config"))
    except (TypeError, ValueError) as err:
        _fail(path, "attrs/network_config", str(err))
    try:
        lcfg_dict = _json_attr(path, f, "learning_config", required=False)
        lcfg = LearningConfig.from_dict(lcfg_dict) if lcfg_dict is not None else None
    except (TypeError, ValueError) as err:
        _fail(path, "attrs/learning_config", str(err))
    if estimated_bytes(config) > MAX_MODEL_BYTES:
        _fail(path, "attrs/network_config", f"the network would need about {estimated_bytes(config) / 2**30:.1f} GiB "
              f"(more than {MAX_MODEL_BYTES >> 30} GiB): refused")
    return config, lcfg


def _load_optimizer(path, f, like: Parameters, lcfg: LearningConfig | None, version: int):
    if "optimizer" not in f:
        return None, []
    opt = _node(path, f, "optimizer", "group")
    steps = opt.attrs.get("steps", 0)
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        _fail(path, "optimizer/attrs/steps", f"{steps!r} is not a step count >= 0")
    learned = [arr for _, arr, _ in like.learned()]
    out = {"steps": int(steps), "m": None, "v": None, "feedback": {}}
    named = []
    adam = lcfg is not None and lcfg.optimizer == "adam"
    for key in ("m", "v"):
        if key not in opt:
            if adam and steps:
                _fail(path, f"optimizer/{key}", "missing (Adam moments of a checkpoint that has taken steps)")
            continue
        grp = _node(path, opt, key, "group")
        if len(grp) != len(learned):
            _fail(path, f"optimizer/{key}", f"holds {len(grp)} arrays; this model has {len(learned)} learned arrays")
        out[key] = [_array(path, grp, str(i), "f", (arr.size,), arr.dtype) for i, arr in enumerate(learned)]
        named += [(f"optimizer/{key}/{i}", a) for i, a in enumerate(out[key])]
    if "feedback" in opt:
        node = opt.get("feedback", getlink=True)
        if version >= 2:
            grp = _node(path, opt, "feedback", "group")
            for name in sorted(grp, key=lambda s: int(s) if s.isdigit() else -1):
                if not name.isdigit() or int(name) >= len(like.layers):
                    _fail(path, f"optimizer/feedback/{name}", f"no such layer (0..{len(like.layers) - 1})")
                l = int(name)
                n = like.layers[l].feedforward.indptr.size - 1
                out["feedback"][l] = _array(path, grp, name, "f", (like.w_out.shape[0], n), like.w_out.dtype)
                named.append((f"optimizer/feedback/{l}", out["feedback"][l]))
        elif isinstance(node, h5py.HardLink):
            n = like.layers[0].feedforward.indptr.size - 1
            out["feedback"][0] = _array(path, opt, "feedback", "f", (like.w_out.shape[0], n), like.w_out.dtype)
    return out, named


def load_model(path) -> LoadedModel:
    """Read a model or checkpoint written by :func:`save_model` (any error: :class:`ModelFileError`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file does not exist")
    _check_seal(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ModelFileError(f"{path}: not an HDF5 file ({err})") from None
    try:
        with f:
            return _read(path, f)
    except ModelFileError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as err:   # h5py on damaged files
        raise ModelFileError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def _read(path: Path, f) -> LoadedModel:
    if f.attrs.get("format") != FORMAT:
        _fail(path, "attrs/format", f"expected {FORMAT!r}, got {f.attrs.get('format')!r}")
    version = f.attrs.get("format_version", -1)
    if not isinstance(version, (int, np.integer)) or not 1 <= version <= FORMAT_VERSION:
        _fail(path, "attrs/format_version", f"{version!r} is not a version this onlinedelay ({__version__}) "
              f"reads (1..{FORMAT_VERSION})")
    config, lcfg = _load_config(path, f)
    names = _json_attr(path, f, "class_names")
    if not isinstance(names, list) or len(names) != config.n_outputs or not all(isinstance(n, str) for n in names):
        _fail(path, "attrs/class_names", f"expected a list of {config.n_outputs} names")
    dtype = f.attrs.get("dtype", "float32")
    if dtype not in ("float32", "float64"):
        _fail(path, "attrs/dtype", f"{dtype!r} is not float32 or float64")
    seed = f.attrs.get("seed", 0)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        _fail(path, "attrs/seed", f"{seed!r} is not an integer >= 0")
    params_group = _node(path, f, "params", "group")
    layers = []
    for l, spec in enumerate(config.layer_specs):
        groups = []
        for kind in PROJECTION_KINDS:
            if version >= 2:
                layer_group = _node(path, _node(path, params_group, "layers", "group"), str(l), "group")
                groups.append(_node(path, layer_group, kind, "group"))
            else:
                groups.append(_node(path, params_group, "input" if kind == "feedforward" else "recurrent", "group"))
        ff = _load_projection(path, groups[0], spec.feedforward, spec.n_pre, spec.n_neurons, config.max_delay_steps,
                              dtype, version)
        rec = _load_projection(path, groups[1], spec.recurrent, spec.n_neurons, spec.n_neurons,
                               config.max_delay_steps, dtype, version)
        layers.append(LayerParameters(ff, rec))
    w_out = _array(path, params_group, "w_out", "f", (config.n_outputs, config.n_readout_inputs), dtype)
    b_out = _array(path, params_group, "b_out", "f", (config.n_outputs,), dtype)
    params = Parameters(tuple(layers), w_out, b_out)
    optimizer, opt_named = _load_optimizer(path, f, params, lcfg, version)
    if version >= 2:
        stored = f.attrs.get("checksum")
        named = [(f"params/{name}", arr) for name, arr in params.arrays()]
        named += [(name, np.asarray(f[name][()])) for name in _quantized_code_names(config)] + opt_named
        if stored != _checksum(named):
            _fail(path, "attrs/checksum", "does not match the stored arrays (the file was changed or damaged)")
    training = _json_attr(path, f, "training", required=False)
    if training is not None and not isinstance(training, dict):
        _fail(path, "attrs/training", "expected a JSON object")
    net = Network.from_parameters(config, params, seed=int(seed), dtype=dtype)
    return LoadedModel(net, list(names), lcfg, training, optimizer, path)


def _quantized_code_names(config: NetworkConfig) -> list:
    """Dataset names of the stored weight codes, in the order save_model checksums them."""
    return [f"params/layers/{l}/{kind}/weight_code" for l, spec in enumerate(config.layer_specs)
            for kind in PROJECTION_KINDS if getattr(spec, kind) is not None and getattr(spec, kind).quantized_weights]


def load_nir(path, dt_ms: float | None = None) -> LoadedModel:
    """A model from a NIR graph file (onlinedelay.export.nir_import; needs onlinedelay[nir])."""
    from .export.nir_import import load_nir as load

    return load(path, dt_ms)


def restore_optimizer(learner, optimizer: dict | None) -> None:
    """Put the optimizer state of a checkpoint back into ``learner`` (shapes checked)."""
    if optimizer is None:
        return
    state = learner.optimizer.state_dict()
    state["steps"] = optimizer["steps"]
    if learner.config.optimizer == "adam" and optimizer["m"] is not None and optimizer["v"] is not None:
        state["m"], state["v"] = optimizer["m"], optimizer["v"]
    learner.optimizer.load_state_dict(state)
    for l, fb in optimizer["feedback"].items():
        if l < len(learner.feedback) and learner.feedback[l] is not None:
            learner.feedback[l][...] = fb
