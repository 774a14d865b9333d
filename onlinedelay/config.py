"""Configuration: frozen dataclasses, validation, and all ms -> steps conversion.

Two dataclasses describe a model and how it learns:

* :class:`NetworkConfig` -- sizes, neuron and readout dynamics, delays per projection,
  sparsity and initialisation.
* :class:`LearningConfig` -- the three-factor rule (Gaussian surrogate width, feedback,
  loss window), when updates are applied, the optimizer and its learning rates.

Both validate on construction (``ValueError`` naming the field, the value and what is
allowed) and round-trip through plain dicts (``to_dict`` / ``from_dict``) so that every
run can write the exact configuration next to its outputs.  Nothing else in the package
converts milliseconds to steps: use the derived properties here (``decay_mem`` ...).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

DELAY_MODES = ("none", "synaptic", "axonal")
RESETS = ("soft", "hard")
DISCRETISATIONS = ("exact", "euler")
INPUT_SCALES = ("one", "one_minus_decay")
DELAY_INITS = ("uniform", "zero")
FEEDBACKS = ("symmetric", "random")
UPDATE_MODES = ("accumulate", "online")
OPTIMIZERS = ("adam", "sgd")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def _positive(name: str, value, allow_zero: bool = False) -> None:
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if bad or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name}={value!r} is not allowed; expected {need}")


def _integer(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; expected an integer >= {minimum}")


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
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**data)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class NetworkConfig(_DictMixin):
    """Architecture and dynamics of a single-hidden-layer LIF network.

    Hidden neuron j (spec section 2)::

        I_j^t = sum_i W_ji x_i^(t - d_ji) + sum_l R_jl z_l^(t - 1 - d^rec_jl)
        v_j^t = a v_j^(t-1) + zeta I_j^t - theta z_j^(t-1)         (soft reset)
        v_j^t = a v_j^(t-1) (1 - z_j^(t-1)) + zeta I_j^t          (hard reset)
        z_j^t = H(v_j^t - theta)

    Readout k: ``y_k^t = kappa y_k^(t-1) + zeta_o sum_j Wo_kj z_j^t + b_k``.
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
    input_delays: str = "synaptic"     # delays of the input -> hidden projection
    recurrent: bool = False
    recurrent_delays: str = "none"     # delays of the hidden -> hidden projection
    max_delay_steps: int = 25
    density: float = 1.0               # fraction of input -> hidden synapses present
    recurrent_density: float = 1.0     # fraction of hidden -> hidden synapses present (no autapses)
    delay_init: str = "uniform"        # "uniform" on [0, max_delay_steps] or "zero"
    weight_init_scale: float = 1.0     # W ~ N(0, scale^2 * threshold^2 / fan_in)
    surrogate_gamma: float = 0.3       # height of the piecewise-linear pseudo-derivative

    def __post_init__(self):
        _integer("n_inputs", self.n_inputs, 1)
        _integer("n_hidden", self.n_hidden, 1)
        _integer("n_outputs", self.n_outputs, 2)
        for name in ("dt_ms", "tau_mem_ms", "tau_out_ms", "threshold", "weight_init_scale"):
            _positive(name, getattr(self, name))
        _positive("surrogate_gamma", self.surrogate_gamma, allow_zero=True)
        _choice("reset", self.reset, RESETS)
        _choice("discretisation", self.discretisation, DISCRETISATIONS)
        _choice("input_scale", self.input_scale, INPUT_SCALES)
        _choice("readout_input_scale", self.readout_input_scale, INPUT_SCALES)
        _choice("input_delays", self.input_delays, DELAY_MODES)
        _choice("recurrent_delays", self.recurrent_delays, DELAY_MODES)
        _choice("delay_init", self.delay_init, DELAY_INITS)
        if not isinstance(self.recurrent, bool):
            raise ValueError(f"recurrent={self.recurrent!r} is not allowed; expected True or False")
        _integer("max_delay_steps", self.max_delay_steps, 0)
        for name in ("density", "recurrent_density"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ValueError(f"{name}={value!r} is not allowed; expected a number in (0, 1]")
        if self.discretisation == "euler" and self.tau_mem_ms < self.dt_ms:
            raise ValueError(
                f"tau_mem_ms={self.tau_mem_ms!r} is not allowed with discretisation='euler' and "
                f"dt_ms={self.dt_ms!r}; Euler needs tau_mem_ms >= dt_ms (decay 1 - dt/tau >= 0)")

    # -- derived quantities (the only place ms become steps) ------------------------------
    @property
    def decay_mem(self) -> float:
        """alpha: exp(-dt/tau_mem) (exact) or 1 - dt/tau_mem (Euler)."""
        if self.discretisation == "euler":
            return 1.0 - self.dt_ms / self.tau_mem_ms
        return math.exp(-self.dt_ms / self.tau_mem_ms)

    @property
    def decay_out(self) -> float:
        """kappa: exp(-dt/tau_out) (exact) or 1 - dt/tau_out (Euler, floored at 0)."""
        if self.discretisation == "euler":
            return max(0.0, 1.0 - self.dt_ms / self.tau_out_ms)
        return math.exp(-self.dt_ms / self.tau_out_ms)

    @property
    def input_gain(self) -> float:
        """zeta: 1 or 1 - alpha."""
        return 1.0 if self.input_scale == "one" else 1.0 - self.decay_mem

    @property
    def readout_gain(self) -> float:
        """zeta_o: 1 or 1 - kappa."""
        return 1.0 if self.readout_input_scale == "one" else 1.0 - self.decay_out


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

    # Learning-rate note: with Adam a delay moves by about lr_delays steps per update.  The paper's
    # 1e-2 moved the delays by less than one step over a 20-epoch run on `digits` (mean delay
    # 12.50 -> 12.45) and gave 0.72 held-out accuracy; 0.1 gave 0.80 (20 epochs) and 0.88 (40 epochs).

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
