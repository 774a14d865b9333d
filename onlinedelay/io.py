"""Model and checkpoint files: HDF5, written atomically, read without executing anything.

Layout of a file (``format = "onlinedelay-model"``, ``format_version = 1``)::

    attrs: format, format_version, package_version, seed, dtype, network_config (JSON),
           learning_config (JSON, optional), class_names (JSON), training (JSON, optional)
    params/input/{indptr, pre, weight, delay, delay_of_syn, pre_of_delay}
    params/recurrent/{...same...}
    params/w_out, params/b_out
    optimizer/ (checkpoints only): attrs steps; m/<i>, v/<i> (Adam moments); feedback (random B)

Writes go to a temporary file in the same folder, then ``os.replace`` -- a reader never sees a
half-written model.  Loading validates every array (shape, dtype kind, finite values, CSR
structure, delay range) and names the file and field of anything wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ._version import __version__
from .atomic import atomic_path
from .config import LearningConfig, NetworkConfig
from .network import Network, refresh_delay_steps
from .state import Parameters, Projection

FORMAT = "onlinedelay-model"
FORMAT_VERSION = 1
_PROJ_FIELDS = ("indptr", "pre", "weight", "delay", "delay_of_syn", "pre_of_delay")


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used (names the file and the field)."""


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    net: Network
    class_names: list
    learning_config: LearningConfig | None
    training: dict | None
    optimizer: dict | None      # {"steps": int, "m": [arrays], "v": [arrays], "feedback": array or None}
    path: Path


def save_model(path, net: Network, class_names=None, learner=None, training: dict | None = None) -> None:
    """Write ``net`` (and, with ``learner``, its optimizer state: a checkpoint) to ``path``."""
    c = net.config
    names = list(class_names) if class_names is not None else [str(k) for k in range(c.n_outputs)]
    if len(names) != c.n_outputs:
        raise ValueError(f"class_names has {len(names)} names for {c.n_outputs} outputs")

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["package_version"] = __version__
        f.attrs["seed"] = net.seed
        f.attrs["dtype"] = net.dtype.name
        f.attrs["network_config"] = json.dumps(c.to_dict())
        f.attrs["class_names"] = json.dumps(names)
        if training is not None:
            f.attrs["training"] = json.dumps(training)
        params = f.create_group("params")
        for name, proj in (("input", net.params.input), ("recurrent", net.params.recurrent)):
            g = params.create_group(name)
            for field in _PROJ_FIELDS:
                g.create_dataset(field, data=getattr(proj, field))
        params.create_dataset("w_out", data=net.params.w_out)
        params.create_dataset("b_out", data=net.params.b_out)
        if learner is not None:
            f.attrs["learning_config"] = json.dumps(learner.config.to_dict())
            opt = f.create_group("optimizer")
            opt.attrs["steps"] = learner.optimizer.steps
            if learner.config.optimizer == "adam":
                for key in ("m", "v"):
                    grp = opt.create_group(key)
                    for i, arr in enumerate(getattr(learner.optimizer, key)):
                        grp.create_dataset(str(i), data=arr)
            if learner.feedback is not None:
                opt.create_dataset("feedback", data=learner.feedback)


def _fail(path, field, message):
    raise ModelFileError(f"{path}: {field}: {message}")


def _array(path, group, name, kind, shape=None):
    if name not in group:
        _fail(path, f"{group.name}/{name}".lstrip("/"), "missing")
    arr = group[name][()]
    field = f"{group.name}/{name}".lstrip("/")
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in kind:
        _fail(path, field, f"expected an array of kind {kind!r}, got {getattr(arr, 'dtype', type(arr))}")
    if shape is not None and arr.shape != shape:
        _fail(path, field, f"shape {arr.shape}, expected {shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        _fail(path, field, "contains NaN or inf")
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


def _load_projection(path, group, n_pre, n_post, mode, max_delay, dtype):
    indptr = _array(path, group, "indptr", "iu", (n_post + 1,)).astype(np.int32)
    if indptr[0] != 0 or (np.diff(indptr) < 0).any():
        _fail(path, f"{group.name}/indptr", "not a valid CSR row pointer (must start at 0 and not decrease)")
    n_syn = int(indptr[-1])
    pre = _array(path, group, "pre", "iu", (n_syn,)).astype(np.int32)
    if n_syn and (pre.min() < 0 or pre.max() >= n_pre):
        _fail(path, f"{group.name}/pre", f"presynaptic index outside [0, {n_pre})")
    weight = _array(path, group, "weight", "f", (n_syn,)).astype(dtype)
    n_delays = {"synaptic": n_syn, "axonal": n_pre, "none": 0}[mode]
    delay = _array(path, group, "delay", "f", (n_delays,)).astype(dtype)
    if n_delays and (delay.min() < 0 or delay.max() > max_delay):
        _fail(path, f"{group.name}/delay", f"delays outside [0, {max_delay}] steps")
    delay_of_syn = _array(path, group, "delay_of_syn", "iu", (n_syn,)).astype(np.int32)
    if n_syn and n_delays and (delay_of_syn.min() < 0 or delay_of_syn.max() >= n_delays):
        _fail(path, f"{group.name}/delay_of_syn", f"index outside [0, {n_delays})")
    pre_of_delay = _array(path, group, "pre_of_delay", "iu", (n_delays,)).astype(np.int32)
    proj = Projection(indptr, pre, weight, delay, np.zeros(n_syn, np.int32), delay_of_syn, pre_of_delay)
    refresh_delay_steps(proj, max_delay)
    return proj


def load_model(path) -> LoadedModel:
    """Read a model or checkpoint written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ModelFileError(f"{path}: not an HDF5 file ({err})") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            _fail(path, "attrs/format", f"expected {FORMAT!r}, got {f.attrs.get('format')!r}")
        if int(f.attrs.get("format_version", -1)) > FORMAT_VERSION:
            _fail(path, "attrs/format_version", f"{f.attrs.get('format_version')} is newer than this "
                  f"onlinedelay ({__version__}) reads (<= {FORMAT_VERSION})")
        try:
            config = NetworkConfig.from_dict(_json_attr(path, f, "network_config"))
            lcfg_dict = _json_attr(path, f, "learning_config", required=False)
            lcfg = LearningConfig.from_dict(lcfg_dict) if lcfg_dict is not None else None
        except (TypeError, ValueError) as err:
            _fail(path, "attrs/network_config", str(err))
        names = _json_attr(path, f, "class_names")
        if not isinstance(names, list) or len(names) != config.n_outputs:
            _fail(path, "attrs/class_names", f"expected a list of {config.n_outputs} names")
        dtype = str(f.attrs.get("dtype", "float32"))
        if dtype not in ("float32", "float64"):
            _fail(path, "attrs/dtype", f"{dtype!r} is not float32 or float64")
        net = Network(config, seed=int(f.attrs.get("seed", 0)), dtype=dtype)
        if "params" not in f:
            _fail(path, "params", "missing")
        params = f["params"]
        c = config
        for name in ("input", "recurrent"):
            if name not in params:
                _fail(path, f"params/{name}", "missing")
        inp = _load_projection(path, params["input"], c.n_inputs, c.n_hidden, c.input_delays,
                               c.max_delay_steps, net.dtype)
        rec_pre = c.n_hidden if c.recurrent else 0
        rec = _load_projection(path, params["recurrent"], rec_pre, c.n_hidden,
                               c.recurrent_delays if c.recurrent else "none", c.max_delay_steps, net.dtype)
        w_out = _array(path, params, "w_out", "f", (c.n_outputs, c.n_hidden)).astype(net.dtype)
        b_out = _array(path, params, "b_out", "f", (c.n_outputs,)).astype(net.dtype)
        net.params = Parameters(inp, rec, w_out, b_out)
        net.delay_version += 1
        optimizer = None
        if "optimizer" in f:
            opt = f["optimizer"]
            optimizer = {"steps": int(opt.attrs.get("steps", 0)), "m": None, "v": None, "feedback": None}
            for key in ("m", "v"):
                if key in opt:
                    grp = opt[key]
                    optimizer[key] = [_array(path, grp, str(i), "f") for i in range(len(grp))]
            if "feedback" in opt:
                optimizer["feedback"] = _array(path, opt, "feedback", "f", (c.n_outputs, c.n_hidden))
        training = _json_attr(path, f, "training", required=False)
    return LoadedModel(net, [str(n) for n in names], lcfg, training, optimizer, path)


def restore_optimizer(learner, optimizer: dict | None) -> None:
    """Put the optimizer state of a checkpoint back into ``learner`` (shapes checked)."""
    if optimizer is None:
        return
    learner.optimizer.steps = optimizer["steps"]
    if learner.config.optimizer == "adam" and optimizer["m"] is not None:
        for key in ("m", "v"):
            mine = getattr(learner.optimizer, key)
            theirs = optimizer[key]
            if len(theirs) != len(mine) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
                raise ModelFileError(f"checkpoint optimizer/{key}: shapes do not match the network")
            for a, b in zip(mine, theirs):
                a[...] = b
    if optimizer["feedback"] is not None and learner.feedback is not None:
        learner.feedback[...] = optimizer["feedback"]
