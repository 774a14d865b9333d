"""Named architectures: the networks of the papers we come from, as presets of the configs.

``onlinedelay train --arch NAME`` starts from a preset; a config file and command-line options
override any of its fields.  Every preset learns online with the three-factor rule (no BPTT), with
the Gaussian delay surrogate (DelRec and its conv variant spread a delay with a triangle), and no
batch norm or dropout.  The readout reads every layer (``readout="all"``) so each layer gets the
exact symmetric learning signal; the papers read the last layer through BPTT.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arch:
    """A preset: field values of NetworkConfig and LearningConfig, and what it takes and changes."""

    name: str
    summary: str
    network: dict = field(default_factory=dict)
    learning: dict = field(default_factory=dict)
    differs: str = ""


_DELREC_COMMON = dict(n_layers=2, n_hidden=128, input_delays="none", hidden_delays="none", recurrent="dense",
                      recurrent_delays="axonal", reset="hard", tau_mem_ms=20.0, delay_init="range",
                      delay_init_range=(10.0, 30.0), max_delay_steps=40, readout="all")

ARCHS = {arch.name: arch for arch in (
    Arch("three-factor",
         "one hidden layer with a learned delay per input synapse (the three-factor delay-learning rule)",
         differs="the default of `onlinedelay train`: 140 -> 128 LIF (soft reset) -> 20, delays U(0, 25) steps"),
    Arch("delrec",
         "DelRec: 2 recurrent layers, dense recurrent weights, a learned axonal delay per neuron on the "
         "recurrent connections (U(10, 30) steps), hard reset",
         network=dict(_DELREC_COMMON),
         differs="online three-factor rule instead of BPTT; Gaussian instead of triangular delay spread; no batch "
                 "norm or dropout; readout of every layer; 128 neurons per layer by default (the paper: 256; "
                 "use --hidden 256)"),
    Arch("conv-delrec",
         "convolutional DelRec: the recurrent matrix replaced by a k = 3 kernel along the neuron axis "
         "(3 shared taps per layer), learned axonal recurrent delays, hard reset; --layers 4 for the deep variant",
         network=dict(_DELREC_COMMON, recurrent="conv", kernel_size=3),
         differs="as delrec; the kernel taps are learned by the summed gradient of the synapses sharing them"),
    Arch("sun-lowbit",
         "Sun, Akarca et al.'s low-bit network: 2 feedforward hidden layers, a learned axonal delay on every "
         "input channel and hidden neuron's output (grid step 5, delay L2), ternary weights, tau = 2 steps",
         network=dict(n_layers=2, n_hidden=128, input_delays="axonal", hidden_delays="axonal", recurrent="none",
                      weight_bits="ternary", ternary_scales="fixed", delay_step=5.0, delay_offset=0.0,
                      delay_l2=1e-6, tau_mem_ms=20.0, dt_ms=10.0, max_delay_steps=25, readout="all"),
         differs="online three-factor rule instead of BPTT; LIF neurons instead of the SRM; our leaky readout of "
                 "every layer with per-step cross-entropy instead of Spikemax; no delay on the readout "
                 "connections; the input projection also has learned axonal delays (one per input channel), so "
                 "every spike train entering a layer is delayed, as the paper's delay on each neuron's output"),
)}


def arch_values(name: str) -> dict:
    """{"network": {...}, "learning": {...}} of the preset ``name`` (an error names the choices)."""
    from .errors import OnlineDelayError

    if name not in ARCHS:
        raise OnlineDelayError(f"--arch {name!r} is unknown; choose one of {', '.join(ARCHS)}")
    arch = ARCHS[name]
    return {"network": dict(arch.network), "learning": dict(arch.learning)}
