"""Configuration: frozen dataclasses, validation, and all ms -> steps conversion.

Two dataclasses describe a model and how it learns:

* :class:`NetworkConfig` -- the stack of hidden layers (sizes, neuron dynamics, the projections'
  connectivity, delays and initialisation; :class:`LayerConfig` overrides a layer), the readout.
* :class:`LearningConfig` -- the three-factor rule (Gaussian surrogate width, feedback,
  loss window), when updates are applied, the optimizer and its learning rates.

Both validate on construction (:class:`~onlinedelay.errors.OnlineDelayError`, a ``ValueError`` naming the field, the value and what is
allowed) and round-trip through plain dicts (``to_dict`` / ``from_dict``) so that every
run can write the exact configuration next to its outputs.  Nothing else in the package
converts milliseconds to steps: use the derived properties here (``decay_mem`` ...).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from .errors import OnlineDelayError, check_choice, check_fraction, check_int, check_positive

DELAY_MODES = ("none", "synaptic", "axonal")
RESETS = ("soft", "hard")
DISCRETISATIONS = ("exact", "euler")
INPUT_SCALES = ("one", "one_minus_decay")
DELAY_INITS = ("uniform", "zero", "range")
RECURRENCES = ("none", "dense", "sparse", "conv")
READOUTS = ("last", "all")
MAX_DELAY_STEPS = 10_000           # the delay rings hold max_delay_steps + 1 steps of every population
FEEDBACKS = ("symmetric", "random")
UPDATE_MODES = ("accumulate", "online")
OPTIMIZERS = ("adam", "sgd")
WEIGHT_BITS = ("32", "8", "4", "2", "ternary")   # precision of the hidden projections' weights (quantize.py)
SCALE_MODES = ("fixed", "learned")               # ternary scales alpha, beta / the delay grid's offset


_choice = check_choice
_positive = check_positive
_integer = check_int


class _DictMixin:
    def to_dict(self) -> dict:
        """Plain dict of every field (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Build from a dict; unknown keys are an error naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OnlineDelayError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


_LAYER_FIELDS = ("n_hidden", "tau_mem_ms", "threshold", "reset", "delays", "density", "recurrent",
                 "recurrent_delays", "recurrent_density", "kernel_size", "delay_init", "delay_init_range",
                 "weight_init_scale", "weight_bits", "ternary_scales", "delay_step", "delay_offset",
                 "delay_offset_mode", "delay_l2")


def _normalise_bits(value):
    """``weight_bits`` as one of WEIGHT_BITS (a config file may give 4 or "4")."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_real(name: str, value, low: float | None = 0.0) -> None:
    """A finite number (>= ``low`` unless ``low`` is None)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (low is not None and value < low)):
        raise OnlineDelayError(f"{name}={value!r} is not allowed; expected a finite number"
                               + ("" if low is None else f" >= {low:g}"))


def _normalise_recurrent(value, density):
    """``recurrent`` as one of RECURRENCES; the old boolean form (True/False) is accepted."""
    if value is True:
        return "sparse" if isinstance(density, (int, float)) and density < 1.0 else "dense"
    if value is False:
        return "none"
    return value


def _check_range(name: str, value):
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OnlineDelayError(f"{name}={value!r} is not allowed; expected two numbers [low, high] (steps)") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high):
        raise OnlineDelayError(f"{name}={value!r} is not allowed; expected 0 <= low <= high (steps)")
    return (low, high)


@dataclass(frozen=True)
class LayerConfig(_DictMixin):
    """Per-layer overrides of a :class:`NetworkConfig` (a ``[[layer]]`` table of a config file).

    Every field left ``None`` takes the network-wide value: ``n_hidden``, ``tau_mem_ms``,
    ``threshold``, ``reset``, ``recurrent``, ``recurrent_delays``, ``recurrent_density``,
    ``kernel_size``, ``delay_init``, ``delay_init_range``, ``weight_init_scale``, the quantizers
    (``weight_bits``, ``ternary_scales``, ``delay_step``, ``delay_offset``, ``delay_offset_mode``)
    and ``delay_l2``; ``delays`` and
    ``density`` (of the feedforward projection into the layer) default to ``input_delays`` /
    ``density`` for layer 1 and ``hidden_delays`` / ``hidden_density`` above it.
    """

    n_hidden: int | None = None
    tau_mem_ms: float | None = None
    threshold: float | None = None
    reset: str | None = None
    delays: str | None = None
    density: float | None = None
    recurrent: str | None = None
    recurrent_delays: str | None = None
    recurrent_density: float | None = None
    kernel_size: int | None = None
    delay_init: str | None = None
    delay_init_range: tuple | None = None
    weight_init_scale: float | None = None
    weight_bits: str | None = None
    ternary_scales: str | None = None
    delay_step: float | None = None
    delay_offset: float | None = None
    delay_offset_mode: str | None = None
    delay_l2: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "recurrent", _normalise_recurrent(self.recurrent, self.recurrent_density))
        object.__setattr__(self, "delay_init_range", _check_range("layer delay_init_range", self.delay_init_range))
        object.__setattr__(self, "weight_bits", _normalise_bits(self.weight_bits))


@dataclass(frozen=True)
class ProjectionSpec:
    """A projection of a resolved layer: connectivity, delays and initialisation (not serialised)."""

    connectivity: str          # "dense", "sparse" or "conv"
    density: float             # fraction of synapses present (sparse)
    kernel_size: int           # taps shared by every neuron (conv)
    delays: str                # "none", "synaptic" or "axonal"
    delay_init: str            # "uniform" on [0, max], "zero" or "range"
    delay_init_range: tuple    # (low, high) steps for "range"
    weight_init_scale: float
    exclude_self: bool         # no autapse j -> j (dense/sparse recurrence)
    weight_bits: str = "32"    # WEIGHT_BITS: "32" float, "8"/"4"/"2" k-bit, "ternary"
    ternary_scales: str = "fixed"   # alpha, beta recomputed each update ("fixed") or learned
    delay_step: float = 0.0    # delay grid step (steps); 0: delays not quantized
    delay_offset: float = 0.0  # delay grid offset (steps), initial value when learned
    delay_offset_mode: str = "fixed"
    delay_l2: float = 0.0      # lambda of the delay penalty lambda sum d^2 (added to the delay gradient)

    @property
    def quantized_weights(self) -> bool:
        return self.weight_bits != "32"

    @property
    def quantized_delays(self) -> bool:
        return self.delay_step > 0 and self.delays != "none"


@dataclass(frozen=True)
class LayerSpec:
    """One hidden layer with every field resolved (:attr:`NetworkConfig.layer_specs`)."""

    index: int
    n_pre: int                 # size of the population below (the input for layer 0)
    n_neurons: int
    tau_mem_ms: float
    threshold: float
    reset: str
    decay_mem: float           # alpha
    input_gain: float          # zeta
    feedforward: ProjectionSpec
    recurrent: ProjectionSpec | None


@dataclass(frozen=True)
class NetworkConfig(_DictMixin):
    """Architecture and dynamics of a stack of LIF layers with a leaky-integrator readout.

    Hidden neuron j of layer l, fed by the layer below (the input ``x`` for l = 0)::

        I_j^t = sum_i W_ji s_i^(t - d_ji) + sum_m R_jm z_m^(t - 1 - d^rec_jm)      s = x or z_(l-1)
        v_j^t = a v_j^(t-1) + zeta I_j^t - theta z_j^(t-1)         (soft reset)
        v_j^t = a v_j^(t-1) (1 - z_j^(t-1)) + zeta I_j^t          (hard reset)
        z_j^t = H(v_j^t - theta)

    Readout k: ``y_k^t = kappa y_k^(t-1) + zeta_o sum_j Wo_kj z_j^t + b_k`` over the last layer
    (``readout="last"``) or over every layer (``"all"``).

    The flat fields describe every layer; ``layers`` (one :class:`LayerConfig` per layer) overrides
    them layer by layer.  ``input_delays``/``density`` belong to the projection from the input,
    ``hidden_delays``/``hidden_density`` to the projections between hidden layers.  ``recurrent``
    is ``none``, ``dense``, ``sparse`` (``recurrent_density``) or ``conv`` (``kernel_size`` taps
    along the neuron axis shared by every neuron, zero padding, the centre tap is the neuron
    itself).  ``delay_init``: ``uniform`` on [0, max_delay_steps], ``zero``, or ``range``
    (uniform on ``delay_init_range`` steps).

    Low-bit networks (onlinedelay/quantize.py): ``weight_bits`` ("32", "8", "4", "2" or "ternary")
    quantizes the weights of every hidden projection, feedforward and recurrent (the readout stays
    float32); ``ternary_scales`` "fixed" or "learned"; ``delay_step`` > 0 (steps) puts the learned
    delays on the grid ``k delay_step + delay_offset`` (offset "fixed" or "learned",
    ``delay_offset_mode``); ``delay_l2`` adds ``2 delay_l2 d`` to every delay gradient.
    """

    n_inputs: int = 140
    n_hidden: int = 128
    n_outputs: int = 20
    dt_ms: float = 10.0
    tau_mem_ms: float = 20.0
    tau_out_ms: float = 20.0
    threshold: float = 1.0
    reset: str = "soft"
    discretisation: str = "exact"
    input_scale: str = "one"           # zeta: "one" or "one_minus_decay" (1 - alpha)
    readout_input_scale: str = "one"   # zeta_o: "one" or "one_minus_decay" (1 - kappa)
    input_delays: str = "synaptic"     # delays of the input -> layer 1 projection
    recurrent: str = "none"            # recurrence of every layer: none | dense | sparse | conv
    recurrent_delays: str = "none"     # delays of the recurrent projections
    max_delay_steps: int = 25
    density: float = 1.0               # fraction of input -> layer 1 synapses present
    recurrent_density: float = 1.0     # fraction of recurrent synapses present (sparse; no autapses)
    delay_init: str = "uniform"        # "uniform" on [0, max_delay_steps], "zero" or "range"
    weight_init_scale: float = 1.0     # W ~ N(0, scale^2 * threshold^2 / fan_in)
    surrogate_gamma: float = 0.3       # height of the piecewise-linear pseudo-derivative
    n_layers: int = 1                  # hidden layers (len(layers) when ``layers`` is given)
    hidden_delays: str = "none"        # delays of the projections between hidden layers
    hidden_density: float = 1.0        # fraction of hidden -> hidden (feedforward) synapses present
    kernel_size: int = 3               # taps of a conv recurrence (odd)
    delay_init_range: tuple | None = None   # (low, high) steps for delay_init = "range"
    readout: str = "last"              # the readout reads the "last" layer or "all" layers
    layers: tuple = ()                 # per-layer overrides (LayerConfig or dicts)
    weight_bits: str = "32"            # hidden weights: "32" (float), "8", "4", "2" (k-bit) or "ternary"
    ternary_scales: str = "fixed"      # ternary alpha, beta: "fixed" (recomputed each update) or "learned"
    delay_step: float = 0.0            # delay quantization step (steps); 0: real-valued delays
    delay_offset: float = 0.0          # offset of the delay grid (steps)
    delay_offset_mode: str = "fixed"   # the offset is "fixed" or "learned"
    delay_l2: float = 0.0              # lambda of the delay penalty lambda sum d^2 (per layer)

    def __post_init__(self):
        object.__setattr__(self, "recurrent", _normalise_recurrent(self.recurrent, self.recurrent_density))
        object.__setattr__(self, "weight_bits", _normalise_bits(self.weight_bits))
        object.__setattr__(self, "delay_init_range", _check_range("delay_init_range", self.delay_init_range))
        layers = tuple(layer if isinstance(layer, LayerConfig) else LayerConfig.from_dict(dict(layer))
                       for layer in (self.layers or ()))
        object.__setattr__(self, "layers", layers)
        _integer("n_inputs", self.n_inputs, 1)
        _integer("n_hidden", self.n_hidden, 1)
        _integer("n_outputs", self.n_outputs, 2)
        _integer("n_layers", self.n_layers, 1)
        if layers and self.n_layers not in (1, len(layers)):
            raise OnlineDelayError(f"n_layers={self.n_layers!r} is not allowed with {len(layers)} [[layer]] tables; "
                                   "give one table per layer")
        if layers:
            object.__setattr__(self, "n_layers", len(layers))
        for name in ("dt_ms", "tau_out_ms"):
            _positive(name, getattr(self, name))
        _positive("surrogate_gamma", self.surrogate_gamma, allow_zero=True)
        _choice("discretisation", self.discretisation, DISCRETISATIONS)
        _choice("input_scale", self.input_scale, INPUT_SCALES)
        _choice("readout_input_scale", self.readout_input_scale, INPUT_SCALES)
        _choice("input_delays", self.input_delays, DELAY_MODES)
        _choice("hidden_delays", self.hidden_delays, DELAY_MODES)
        _choice("readout", self.readout, READOUTS)
        _integer("max_delay_steps", self.max_delay_steps, 0, MAX_DELAY_STEPS)
        check_fraction("hidden_density", self.hidden_density)
        self.layer_specs                         # resolves and validates every layer, naming it

    # -- resolved layers --------------------------------------------------------------------
    def _layer_value(self, index: int, name: str):
        override = getattr(self.layers[index], name) if index < len(self.layers) else None
        if override is not None:
            return override
        if name == "delays":
            return self.input_delays if index == 0 else self.hidden_delays
        if name == "density":
            return self.density if index == 0 else self.hidden_density
        return getattr(self, name)

    @functools.cached_property
    def layer_specs(self) -> tuple:
        """One :class:`LayerSpec` per hidden layer, every field resolved and validated."""
        specs, n_pre = [], self.n_inputs
        for l in range(self.n_layers):
            v = {name: self._layer_value(l, name) for name in _LAYER_FIELDS}
            where = f"layer {l + 1}: " if self.n_layers > 1 or self.layers else ""
            for name in ("n_hidden", "kernel_size"):
                _integer(where + name, v[name], 1)
            for name in ("tau_mem_ms", "threshold", "weight_init_scale"):
                _positive(where + name, v[name])
            _choice(where + "reset", v["reset"], RESETS)
            _choice(where + "delays", v["delays"], DELAY_MODES)
            _choice(where + "recurrent", v["recurrent"], RECURRENCES)
            _choice(where + "recurrent_delays", v["recurrent_delays"], DELAY_MODES)
            _choice(where + "delay_init", v["delay_init"], DELAY_INITS)
            for name in ("density", "recurrent_density"):
                check_fraction(where + name, v[name])
            _choice(where + "weight_bits", v["weight_bits"], WEIGHT_BITS)
            _choice(where + "ternary_scales", v["ternary_scales"], SCALE_MODES)
            _choice(where + "delay_offset_mode", v["delay_offset_mode"], SCALE_MODES)
            _check_real(where + "delay_l2", v["delay_l2"])
            _check_real(where + "delay_step", v["delay_step"])
            _check_real(where + "delay_offset", v["delay_offset"], None)
            if v["delay_step"] > self.max_delay_steps:
                raise OnlineDelayError(f"{where}delay_step={v['delay_step']!r} is not allowed; expected at most "
                                       f"max_delay_steps={self.max_delay_steps} (0: delays not quantized)")
            if v["kernel_size"] % 2 == 0:
                raise OnlineDelayError(f"{where}kernel_size={v['kernel_size']!r} is not allowed; expected an odd "
                                       "integer (the centre tap is the neuron itself)")
            if v["recurrent"] == "dense" and v["recurrent_density"] < 1.0:
                raise OnlineDelayError(f"{where}recurrent='dense' with recurrent_density={v['recurrent_density']!r}: "
                                       "use recurrent='sparse' for a partly connected recurrence")
            if v["delay_init"] == "range":
                rng = v["delay_init_range"]
                if rng is None or rng[1] > self.max_delay_steps:
                    raise OnlineDelayError(f"{where}delay_init='range' needs delay_init_range=[low, high] within "
                                           f"[0, max_delay_steps={self.max_delay_steps}], got {rng!r}")
            if self.discretisation == "euler" and v["tau_mem_ms"] < self.dt_ms:
                raise OnlineDelayError(
                    f"{where}tau_mem_ms={v['tau_mem_ms']!r} is not allowed with discretisation='euler' and "
                    f"dt_ms={self.dt_ms!r}; Euler needs tau_mem_ms >= dt_ms (decay 1 - dt/tau >= 0)")
            alpha = _decay(self.discretisation, self.dt_ms, v["tau_mem_ms"])
            common = dict(kernel_size=v["kernel_size"], delay_init=v["delay_init"],
                          delay_init_range=v["delay_init_range"] or (0.0, float(self.max_delay_steps)),
                          weight_init_scale=v["weight_init_scale"], weight_bits=v["weight_bits"],
                          ternary_scales=v["ternary_scales"], delay_step=float(v["delay_step"]),
                          delay_offset=float(v["delay_offset"]), delay_offset_mode=v["delay_offset_mode"],
                          delay_l2=float(v["delay_l2"]))
            ff = ProjectionSpec("dense" if v["density"] == 1.0 else "sparse", v["density"], delays=v["delays"],
                                exclude_self=False, **common)
            rec = None
            if v["recurrent"] != "none":
                rec = ProjectionSpec(v["recurrent"], v["recurrent_density"] if v["recurrent"] == "sparse" else 1.0,
                                     delays=v["recurrent_delays"], exclude_self=v["recurrent"] != "conv", **common)
            specs.append(LayerSpec(l, n_pre, v["n_hidden"], v["tau_mem_ms"], v["threshold"], v["reset"], alpha,
                                   1.0 if self.input_scale == "one" else 1.0 - alpha, ff, rec))
            n_pre = v["n_hidden"]
        return tuple(specs)

    @property
    def layer_sizes(self) -> tuple:
        """Neurons per hidden layer."""
        return tuple(spec.n_neurons for spec in self.layer_specs)

    @property
    def n_readout_inputs(self) -> int:
        """Columns of the readout weights: the last layer's size, or every layer's (``readout="all"``)."""
        sizes = self.layer_sizes
        return sum(sizes) if self.readout == "all" else sizes[-1]

    def to_dict(self) -> dict:
        """Plain dict of every field (JSON-serialisable; per-layer overrides as dicts)."""
        out = dataclasses.asdict(self)
        out["layers"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in layer.to_dict().items()
                          if v is not None} for layer in self.layers]
        if self.delay_init_range is not None:
            out["delay_init_range"] = list(self.delay_init_range)
        return out

    # -- derived quantities (the only place ms become steps) ------------------------------
    @property
    def decay_mem(self) -> float:
        """alpha of layer 1: exp(-dt/tau_mem) (exact) or 1 - dt/tau_mem (Euler)."""
        return self.layer_specs[0].decay_mem

    @property
    def decay_out(self) -> float:
        """kappa: exp(-dt/tau_out) (exact) or 1 - dt/tau_out (Euler, floored at 0)."""
        return max(0.0, _decay(self.discretisation, self.dt_ms, self.tau_out_ms))

    @property
    def input_gain(self) -> float:
        """zeta of layer 1: 1 or 1 - alpha."""
        return self.layer_specs[0].input_gain

    @property
    def readout_gain(self) -> float:
        """zeta_o: 1 or 1 - kappa."""
        return 1.0 if self.readout_input_scale == "one" else 1.0 - self.decay_out


def _decay(discretisation: str, dt_ms: float, tau_ms: float) -> float:
    if discretisation == "euler":
        return 1.0 - dt_ms / tau_ms
    return math.exp(-dt_ms / tau_ms)


@dataclass(frozen=True)
class LearningConfig(_DictMixin):
    """The three-factor rule and its optimizer.

    Loss: per-step cross-entropy of softmax(y^t) against the label, on steps
    ``t >= loss_start_step``, averaged over those steps and over the batch.  The learning
    signal is ``L_j^t = sum_k B_kj delta_k^t`` with ``B = Wo`` (symmetric) or a fixed random
    matrix.  Delay gradients use a Gaussian surrogate of width ``sigma_steps`` truncated at
    ``K = ceil(truncation * sigma_steps)`` steps; the delay pipeline runs ``K`` steps behind
    the forward pass (spec section 5.3).
    """

    sigma_steps: float = 1.0
    truncation: float = 3.0
    feedback: str = "symmetric"
    loss_start_step: int = 0
    update: str = "accumulate"          # "accumulate": apply at batch end; "online": every n steps
    update_every_steps: int = 1         # n, for update="online"
    optimizer: str = "adam"
    lr_weights: float = 1e-3            # input and recurrent weights
    lr_delays: float = 0.1              # synaptic and axonal delays (steps); see the note below
    lr_readout: float = 1e-3            # readout weights and bias
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    learn_weights: bool = True
    learn_delays: bool = True
    learn_readout: bool = True

    def __post_init__(self):
        _positive("sigma_steps", self.sigma_steps)
        _positive("truncation", self.truncation)
        _choice("feedback", self.feedback, FEEDBACKS)
        _integer("loss_start_step", self.loss_start_step, 0)
        _choice("update", self.update, UPDATE_MODES)
        _integer("update_every_steps", self.update_every_steps, 1)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("lr_weights", "lr_delays", "lr_readout", "adam_eps"):
            _positive(name, getattr(self, name), allow_zero=(name != "adam_eps"))
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r} is not allowed; expected a number in [0, 1)")
        for name in ("learn_weights", "learn_delays", "learn_readout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; expected True or False")

    # lr_delays: with Adam a delay moves by about lr_delays steps per update (why 0.1: README, results)

    @property
    def half_width_steps(self) -> int:
        """K: Gaussian kernel half-width in steps, also the lag of the delay pipeline."""
        return int(math.ceil(self.truncation * self.sigma_steps))


OVERFLOWS = ("clip", "drop")


@dataclass(frozen=True)
class RunConfig(_DictMixin):
    """A training run: data, binning, batches, epochs, seed and where outputs go.

    ``dataset`` is ``digits`` (embedded default), ``shd``, ``ssc`` or a path to an SHD-layout file.
    Inputs are binned at the network's ``dt_ms`` into ``n_steps`` steps with ``pool`` adjacent
    channels summed (700 -> 140 by default).
    """

    dataset: str = "digits"
    arch: str = "three-factor"         # the preset the run started from (onlinedelay/archs.py)
    data_dir: str | None = None
    n_steps: int = 100
    pool: int = 5
    overflow: str = "clip"
    batch_size: int = 32
    epochs: int = 40
    max_samples: int | None = None
    valid_fraction: float = 0.1
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 0          # batches between mid-epoch checkpoints (0: once per epoch)

    def __post_init__(self):
        from .archs import ARCHS

        _choice("arch", self.arch, tuple(ARCHS))
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset={self.dataset!r} is not allowed; expected a name or a path")
        _integer("n_steps", self.n_steps, 1)
        _integer("pool", self.pool, 1)
        _choice("overflow", self.overflow, OVERFLOWS)
        _integer("batch_size", self.batch_size, 1)
        _integer("epochs", self.epochs, 1)
        if self.max_samples is not None:
            _integer("max_samples", self.max_samples, 1)
        if not isinstance(self.valid_fraction, (int, float)) or not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction={self.valid_fraction!r} is not allowed; expected a number in [0, 1)")
        _integer("seed", self.seed, 0)
        _integer("threads", self.threads, 1)
        _integer("checkpoint_every", self.checkpoint_every, 0)
