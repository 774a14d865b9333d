"""The named ablation grids: each a function from base configs to a list of :class:`Variant`.

To add a grid, write one ``_grid_<name>(base)`` function below and add one line to
:data:`GRIDS` (name, one-line summary, function); ``onlinedelay ablate NAME``, ``--list``, the
report and the tests that walk every grid pick it up from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import LearningConfig, NetworkConfig, RunConfig
from ..datasets import load_dataset
from ..errors import OnlineDelayError
from ..network import Network

DENSITIES = (1.0, 0.5, 0.2, 0.1)
SIGMAS = (0.5, 1.0, 2.0, 4.0)
DEPTHS = (1, 2, 4)
WEIGHT_PRECISIONS = ("ternary", "2", "4", "8", "32")
DELAY_STEPS = (1.0, 5.0)


class AblationError(OnlineDelayError):
    """A bad ablation request (unknown grid, missing test data or optional dependency)."""


@dataclass(frozen=True)
class Variant:
    """One named configuration of a grid.

    Attributes
    ----------
    name : str, folder name and table label
    description : str, one line for the table
    network, learning, run : the configs of its runs (the run's seed is set per seed)
    fixed_at_mean_of : str or None, name of the variant whose learned input delays' mean this
        variant starts from (same seed)
    prune : bool, compute pruning curves after training
    """

    name: str
    description: str
    network: NetworkConfig
    learning: LearningConfig
    run: RunConfig
    fixed_at_mean_of: str | None = None
    prune: bool = False


@dataclass(frozen=True)
class _Base:
    """The base configs a grid derives its variants from; ``dims``: (n_inputs, n_outputs) or None."""

    network: NetworkConfig
    learning: LearningConfig
    run: RunConfig
    dims: tuple | None

    @property
    def delay_mode(self) -> str:
        """The delay mode of grids that need delays: the base's, or synaptic when the base has none."""
        return self.network.input_delays if self.network.input_delays != "none" else "synaptic"

    def variant(self, name, description, network=None, learning=None, **extra) -> Variant:
        return Variant(name, description, network or self.network, learning or self.learning, self.run, **extra)


def dataset_dims(run: RunConfig) -> tuple:
    """(n_inputs, n_outputs) of ``run.dataset`` after pooling by ``run.pool``."""
    ds = load_dataset(run.dataset, split="train", data_dir=run.data_dir)
    if ds.n_channels % run.pool:
        raise AblationError(f"pool={run.pool} does not divide the {ds.n_channels} channels of {ds.path}")
    return ds.n_channels // run.pool, ds.n_classes


def _total(net: NetworkConfig) -> int:
    return sum(Network(net, seed=0).parameter_counts().values())


def iso_hidden(weights_only: NetworkConfig, target_total: int) -> int:
    """Hidden size at which ``weights_only`` has the learnable-parameter count nearest ``target_total``.

    ``weights_only`` must carry the dataset's ``n_inputs`` / ``n_outputs``; counts come from
    ``Network.parameter_counts`` (the count grows with the hidden size, so a bisection finds it).
    """
    lo, hi = 1, 2
    while _total(weights_only.replace(n_hidden=hi)) < target_total:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _total(weights_only.replace(n_hidden=mid)) < target_total:
            lo = mid
        else:
            hi = mid
    below, above = _total(weights_only.replace(n_hidden=lo)), _total(weights_only.replace(n_hidden=hi))
    return lo if target_total - below < above - target_total else hi


# -- the grids ------------------------------------------------------------------------------------
def _grid_delays(b: _Base) -> list:
    net = b.network
    return [b.variant("none", "weights only", net.replace(input_delays="none")),
            b.variant("synaptic", "learned delay per synapse", net.replace(input_delays="synaptic")),
            b.variant("axonal", "learned delay per input channel", net.replace(input_delays="axonal"))]


def _grid_iso_params(b: _Base) -> list:
    net = b.network
    n_in, n_out = b.dims if b.dims is not None else dataset_dims(b.run)
    sized = net.replace(n_inputs=n_in, n_outputs=n_out)
    out = []
    for delays in ("synaptic", "axonal"):
        target = _total(sized.replace(input_delays=delays))
        wide = iso_hidden(sized.replace(input_delays="none"), target)
        out.append(b.variant(delays, f"learned {delays} delays, {net.n_hidden} hidden ({target} parameters)",
                             net.replace(input_delays=delays)))
        out.append(b.variant(f"none-iso-{delays}", f"weights only, widened to {wide} hidden to match {delays}",
                             net.replace(input_delays="none", n_hidden=wide)))
    return out


def _grid_fixed_vs_learned(b: _Base) -> list:
    mode = b.delay_mode
    with_d = b.network.replace(input_delays=mode, delay_init="uniform")
    fixed = b.learning.replace(learn_delays=False)
    return [b.variant("learned", f"{mode} delays learned from a uniform init", with_d,
                      b.learning.replace(learn_delays=True)),
            b.variant("fixed-random", f"{mode} delays fixed at their uniform random init", with_d, fixed),
            b.variant("fixed-zero", "all delays fixed at 0", with_d.replace(delay_init="zero"), fixed),
            b.variant("fixed-mean", "all delays fixed at the mean of the learned delays (same seed)", with_d,
                      fixed, fixed_at_mean_of="learned")]


def _grid_pruning(b: _Base) -> list:
    return [b.variant(d, f"learned {d} delays, then pruned", b.network.replace(input_delays=d),
                      b.learning.replace(learn_delays=True), prune=True) for d in ("synaptic", "axonal")]


def _grid_sparsity(b: _Base) -> list:
    return [b.variant(f"density{p:g}-{d}", f"input density {p:g}, {'no delays' if d == 'none' else d + ' delays'}",
                      b.network.replace(density=p, input_delays=d))
            for p in DENSITIES for d in ("none", b.delay_mode)]


def _grid_feedback(b: _Base) -> list:
    return [b.variant(f"{fb}-{up}", f"{fb} feedback, {up} updates", None, b.learning.replace(feedback=fb, update=up))
            for fb in ("symmetric", "random") for up in ("online", "accumulate")]


def _grid_sigma(b: _Base) -> list:
    return [b.variant(f"sigma{s:g}", f"Gaussian surrogate width {s:g} steps", b.network.replace(input_delays=b.delay_mode),
                      b.learning.replace(sigma_steps=s)) for s in SIGMAS]


def _grid_depth(b: _Base) -> list:
    out = []
    for n in DEPTHS:
        net = b.network.replace(n_layers=n, layers=(), readout="all" if n > 1 else b.network.readout)
        out.append(b.variant(f"layers{n}", f"{n} hidden layer{'s' if n > 1 else ''} of {b.network.n_hidden}"
                             + (", readout of every layer" if n > 1 else ""), net))
    return out


def _grid_recurrence(b: _Base) -> list:
    """DelRec-style stacks (2 layers, no feedforward delays, recurrent axonal delays from U(10, 30)
    steps where max_delay_steps allows) with dense or conv recurrence and the recurrent delays
    learned, fixed at their init or absent; and the same stack without recurrence."""
    high = min(30.0, float(b.network.max_delay_steps))
    base = b.network.replace(n_layers=max(2, b.network.n_layers), layers=(), readout="all", input_delays="none",
                             hidden_delays="none", delay_init="range", delay_init_range=(min(10.0, high), high))
    out = [b.variant("none", "no recurrence", base.replace(recurrent="none"))]
    for rec in ("dense", "conv"):
        net = base.replace(recurrent=rec, recurrent_delays="axonal")
        out.append(b.variant(f"{rec}-learned", f"{rec} recurrence, axonal recurrent delays learned", net,
                             b.learning.replace(learn_delays=True)))
        out.append(b.variant(f"{rec}-fixed", f"{rec} recurrence, axonal recurrent delays fixed at their init", net,
                             b.learning.replace(learn_delays=False)))
        out.append(b.variant(f"{rec}-nodelay", f"{rec} recurrence without recurrent delays",
                             net.replace(recurrent_delays="none")))
    return out


def _grid_bits(b: _Base) -> list:
    """Weight precision (ternary, 2, 4, 8, 32 bits) x delays (none, learned on a grid of step 1 or 5,
    capped at max_delay_steps); the ternary models with delays get pruning curves."""
    out = []
    for bits in WEIGHT_PRECISIONS:
        label = bits if bits == "ternary" else f"{bits}bit"
        weights = {"ternary": "ternary weights", "32": "float32 weights"}.get(bits, f"{bits}-bit weights")
        out.append(b.variant(f"{label}-none", f"{weights}, no delays",
                             b.network.replace(weight_bits=bits, input_delays="none", delay_step=0.0)))
        for step in DELAY_STEPS:
            step = min(step, float(b.network.max_delay_steps))
            out.append(b.variant(f"{label}-step{step:g}", f"{weights}, learned {b.delay_mode} delays on a grid of "
                                 f"{step:g} steps", b.network.replace(weight_bits=bits, input_delays=b.delay_mode,
                                                                      delay_step=step),
                                 b.learning.replace(learn_delays=True), prune=bits == "ternary"))
    return out


@dataclass(frozen=True)
class Grid:
    """A named grid: ``build(base) -> [Variant]``."""

    summary: str
    build: Callable


GRIDS = {
    "delays": Grid("input delays none vs synaptic vs axonal, same hidden size (3 configs)", _grid_delays),
    "iso-params": Grid("synaptic / axonal delay models vs weights-only models widened to their parameter count "
                       "(4 configs)", _grid_iso_params),
    "fixed-vs-learned": Grid("learned delays vs fixed random vs all fixed at 0 vs all fixed at the learned mean "
                             "(4 configs)", _grid_fixed_vs_learned),
    "pruning": Grid("synaptic / axonal models; zero delays shortest-first, longest-first, random in 10 % steps "
                    "(2 configs)", _grid_pruning),
    "sparsity": Grid("input density 1.0, 0.5, 0.2, 0.1 without and with delays (8 configs)", _grid_sparsity),
    "feedback": Grid("symmetric vs random feedback x online vs accumulate updates (4 configs)", _grid_feedback),
    "sigma": Grid("Gaussian delay-surrogate width sigma 0.5, 1, 2, 4 steps (4 configs)", _grid_sigma),
    "depth": Grid("1, 2 and 4 hidden layers (the readout reads every layer of a stack) (3 configs)", _grid_depth),
    "recurrence": Grid("DelRec-style 2-layer stacks: no recurrence, dense or conv recurrence x axonal recurrent "
                       "delays learned / fixed / none (7 configs)", _grid_recurrence),
    "bits": Grid("weight precision ternary / 2 / 4 / 8 / 32 bits x delays none / learned on a grid of 1 or 5 steps; "
                 "footprint in bits, Pareto plot, bit-budget heat map (15 configs)", _grid_bits),
}
GRID_SUMMARIES = {name: grid.summary for name, grid in GRIDS.items()}
GRID_NAMES = tuple(GRIDS)


def check_grids(grids) -> list:
    """``grids`` without repeats, each a known name; :class:`AblationError` otherwise."""
    grids = list(dict.fromkeys(grids))
    if not grids:
        raise AblationError(f"name at least one grid: {', '.join(GRID_NAMES)} (--list describes them)")
    unknown = [g for g in grids if g not in GRIDS]
    if unknown:
        raise AblationError(f"grid {unknown[0]!r} is unknown; choose one of {', '.join(GRID_NAMES)}")
    return grids


def make_grid(name: str, network: NetworkConfig | None = None, learning: LearningConfig | None = None,
              run: RunConfig | None = None, dims: tuple | None = None) -> list:
    """The variants of grid ``name`` derived from base configs (defaults: the config defaults).

    dims : (n_inputs, n_outputs) for ``iso-params`` (default: read from ``run.dataset``).
    Returns a list of :class:`Variant`.
    """
    check_grids([name])
    base = _Base(network or NetworkConfig(), learning or LearningConfig(), run or RunConfig(), dims)
    return GRIDS[name].build(base)
