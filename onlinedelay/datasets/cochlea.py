"""A 700-channel cochlear front end: sound in, SHD-style spike events out.

It stands in for the converter that produced the Spiking Heidelberg Digits (``lauscher``:
hydrodynamic basilar membrane, inner hair cells, bushy cells) with a cheaper chain of
textbook stages, calibrated so that, on the converter's own test recording, it lands close to
the converter's spike count and to its spread of spikes over the channels
(``tests/test_datasets.py::test_front_end_matches_reference``).

Stages, per channel ``k`` (unit 0 = base = highest frequency, as in SHD):

1. **Level and window**: resample to ``fs_hz`` (48 kHz), RMS-normalise to ``rms`` (0.3, as the
   converter does), then 10 ms raised-cosine ramps at both ends (the converter applies a Hann
   window over the whole clip; ramps keep the start and end of a word intact).
2. **Basilar membrane**: a 4th-order gammatone filter centred on ``cf_k``.  Centre frequencies
   follow the converter's place map -- stiffness falls exponentially along the membrane, so the
   resonant frequency falls exponentially with place -- from ``cf_base_hz`` (22.5 kHz, unit 0)
   to ``cf_apex_hz`` (110 Hz, unit 699); bandwidth ``1.019 ERB(cf)`` (Glasberg & Moore:
   ``ERB = 24.7 (4.37 f/kHz + 1)`` Hz).  Implemented as four cascaded complex one-pole
   low-passes on the analytic signal shifted down by ``cf_k`` (gain 1 at ``cf_k``, numerically
   stable at every centre frequency), ``bm = Re(shifted back)``.
3. **Inner hair cell**: half-wave rectification, ``x pi`` (so a steady tone gives its
   amplitude), then a 2nd-order low-pass at ``ihc_cutoff_hz`` (1 kHz): phase locking survives in
   the low channels, only the envelope in the high ones.  Decimated to ``fs_hz / 2`` (24 kHz, the
   converter's time grid).
4. **Compression (rate-level function)**: ``L = 20 log10(ihc)`` dB re full scale;
   ``d = clip((L - threshold_db) / (saturation_db - threshold_db), 0, 1)``.
5. **Onset adaptation**: ``a`` follows ``d`` with time constant ``adapt_tau_ms``;
   ``rate = sustained_rate_hz * d + onset_rate_hz * max(d - a, 0)`` spikes/s.
6. **Integrate-and-fire encoder**: ``v += rate / fs``; a spike when ``v >= 1`` (``v -= 1``),
   then ``refractory_ms`` of silence.  Deterministic: the same sound gives the same spikes.
7. **Spontaneous activity**: independent Poisson spikes at ``spontaneous_rate_hz`` per channel
   (seeded), as the converter's stochastic fibres give a few spikes in silence.

Between stages 2 and 4 each channel gets a fixed sensitivity (:func:`sensitivity_db`): flat
from ``lf_corner_hz`` to ``hf_corner_hz``, falling outside.  The real converter barely responds
above ~2 kHz (units 0-299 carry ~3 % of its spikes on the reference, mostly spontaneous) nor at
the very apex; this curve, the threshold and the saturation level were fitted to the reference
recording.

Everything runs in one numba kernel that streams over time channel by channel (no 700 x T
intermediate arrays), about 0.5 s per second of sound per core.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import gcd

import numpy as np

from ..kernels._jit import jit

__all__ = ["CochleaConfig", "centre_frequencies", "erb_hz", "cochlea_spikes", "prepare_sound",
           "sensitivity_db"]


@dataclass(frozen=True)
class CochleaConfig:
    """Parameters of the front end (defaults calibrated on the reference recording)."""

    n_channels: int = 700           # places along the membrane, unit 0 = base
    cf_base_hz: float = 22500.0     # centre frequency of unit 0
    cf_apex_hz: float = 110.0       # centre frequency of unit n_channels - 1
    fs_hz: float = 48000.0          # model sample rate; spike times on a 2/fs grid (1/24000 s)
    rms: float = 0.3                # RMS the sound is normalised to (full scale = 1)
    ramp_ms: float = 10.0           # raised-cosine ramps at both ends
    bandwidth_factor: float = 1.019  # gammatone bandwidth in ERBs
    ihc_cutoff_hz: float = 1000.0   # inner-hair-cell low-pass (2nd order)
    hf_corner_hz: float = 1000.0    # sensitivity falls above this centre frequency ...
    hf_slope_db_per_octave: float = 15.0
    lf_corner_hz: float = 200.0     # ... and below this one
    lf_slope_db_per_octave: float = 18.0
    threshold_db: float = -38.0     # level (dB re full scale) where firing starts
    saturation_db: float = -10.0    # level where the drive saturates
    sustained_rate_hz: float = 60.0  # firing rate at saturation, adapted
    onset_rate_hz: float = 300.0    # extra rate on a rising level
    adapt_tau_ms: float = 30.0      # onset adaptation time constant
    refractory_ms: float = 1.0      # dead time after a spike
    spontaneous_rate_hz: float = 0.6  # independent Poisson spikes per channel (seeded)

    def __post_init__(self):
        for name in ("cf_base_hz", "cf_apex_hz", "fs_hz", "rms", "bandwidth_factor", "ihc_cutoff_hz",
                     "adapt_tau_ms"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"CochleaConfig.{name}={value!r} is not allowed; expected a finite number > 0")
        for name in ("ramp_ms", "hf_corner_hz", "hf_slope_db_per_octave", "lf_corner_hz", "lf_slope_db_per_octave",
                     "sustained_rate_hz", "onset_rate_hz", "refractory_ms"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CochleaConfig.{name}={value!r} is not allowed; expected a finite number >= 0")
        if not isinstance(self.n_channels, int) or self.n_channels < 1:
            raise ValueError(f"CochleaConfig.n_channels={self.n_channels!r} is not allowed; expected an integer >= 1")
        if max(self.cf_base_hz, self.cf_apex_hz) >= self.fs_hz / 2:
            raise ValueError(f"CochleaConfig: centre frequencies up to {max(self.cf_base_hz, self.cf_apex_hz)} Hz "
                             f"need fs_hz > {2 * max(self.cf_base_hz, self.cf_apex_hz)}; got fs_hz={self.fs_hz}")
        if not self.saturation_db > self.threshold_db:
            raise ValueError(f"CochleaConfig: saturation_db={self.saturation_db} must exceed "
                             f"threshold_db={self.threshold_db}")

    def to_dict(self) -> dict:
        """Plain dict of every field."""
        return dataclasses.asdict(self)

    @property
    def time_step_s(self) -> float:
        """Spacing of the spike-time grid in seconds (2 / fs_hz)."""
        return 2.0 / self.fs_hz


def erb_hz(f_hz):
    """Equivalent rectangular bandwidth (Glasberg & Moore 1990) in Hz of a filter at ``f_hz``."""
    return 24.7 * (4.37 * np.asarray(f_hz, dtype=np.float64) / 1000.0 + 1.0)


def centre_frequencies(config: CochleaConfig = CochleaConfig()) -> np.ndarray:
    """Centre frequency (Hz) of every unit, shape ``(n_channels,)``, unit 0 at the base (highest).

    Exponential in place, like the resonance of a membrane whose stiffness falls exponentially
    from base to apex.
    """
    place = np.linspace(0.0, 1.0, config.n_channels)
    return config.cf_base_hz * (config.cf_apex_hz / config.cf_base_hz) ** place


def sensitivity_db(config: CochleaConfig = CochleaConfig()) -> np.ndarray:
    """Gain (dB, <= 0) of every unit, shape ``(n_channels,)``: flat between the two corners,
    falling by the given slopes per octave outside them."""
    cf = centre_frequencies(config)
    high = np.maximum(0.0, np.log2(cf / max(config.hf_corner_hz, 1e-9)))
    low = np.maximum(0.0, np.log2(max(config.lf_corner_hz, 1e-9) / cf))
    return -config.hf_slope_db_per_octave * high - config.lf_slope_db_per_octave * low


def prepare_sound(samples, sample_rate_hz: float, config: CochleaConfig = CochleaConfig()) -> np.ndarray:
    """Mono float64 sound resampled to ``config.fs_hz``, RMS-normalised and ramped (stage 1).

    Parameters
    ----------
    samples : ndarray, shape (n,) or (n, channels), any int or float dtype
        Integer samples are scaled to [-1, 1); several channels are averaged.
    sample_rate_hz : float
    """
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1) if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64).mean(axis=1)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"samples: expected a non-empty 1-D (or 2-D multi-channel) array, "
                         f"got shape {np.shape(samples)}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("samples: contains NaN or inf")
    fs_in = float(sample_rate_hz)
    if fs_in <= 0:
        raise ValueError(f"sample_rate_hz={sample_rate_hz!r}: expected > 0")
    if fs_in != config.fs_hz:
        from scipy.signal import resample_poly

        up, down = int(round(config.fs_hz)), int(round(fs_in))
        g = gcd(up, down)
        x = resample_poly(x, up // g, down // g)
    rms = float(np.sqrt(np.mean(x * x)))
    if rms > 0:
        x = x * (config.rms / rms)
    n_ramp = min(int(round(config.ramp_ms * 1e-3 * config.fs_hz)), x.size // 2)
    if n_ramp > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n_ramp) + 0.5) / n_ramp)
        x[:n_ramp] *= ramp
        x[-n_ramp:] *= ramp[::-1]
    return x


def cochlea_spikes(samples, sample_rate_hz: float, config: CochleaConfig = CochleaConfig(),
                   prepared: bool = False, seed=0):
    """Spike events of a sound, sorted by time (then unit), in the SHD convention.

    Parameters
    ----------
    samples : ndarray, shape (n,), sound (see :func:`prepare_sound`)
    sample_rate_hz : float
    config : CochleaConfig
    prepared : bool
        True when ``samples`` already went through :func:`prepare_sound` (at ``config.fs_hz``).
    seed : int or numpy.random.Generator
        Draws the spontaneous spikes (the only random part).

    Returns
    -------
    ticks : ndarray, shape (n_spikes,), int64 -- spike times in units of ``config.time_step_s``
    units : ndarray, shape (n_spikes,), int64 -- channel 0..n_channels-1 (0 = base)
    """
    from scipy.signal import hilbert

    if prepared:
        if float(sample_rate_hz) != config.fs_hz:
            raise ValueError(f"prepared=True needs sound at config.fs_hz={config.fs_hz}, got {sample_rate_hz}")
        x = np.ascontiguousarray(samples, dtype=np.float64)
    else:
        x = prepare_sound(samples, sample_rate_hz, config)
    analytic = hilbert(x)
    cf = centre_frequencies(config)
    fs = config.fs_hz
    pole = np.exp(-2.0 * np.pi * config.bandwidth_factor * erb_hz(cf) / fs)
    step = np.exp(-2j * np.pi * cf / fs)
    ihc_pole = float(np.exp(-2.0 * np.pi * config.ihc_cutoff_hz / fs))
    fs_out = fs / 2.0
    adapt = float(1.0 - np.exp(-1.0 / (config.adapt_tau_ms * 1e-3 * fs_out)))
    refractory = int(round(config.refractory_ms * 1e-3 * fs_out))
    n_out = x.size // 2                      # window of the spontaneous spikes
    n_ticks = (x.size + 1) // 2              # ticks the kernel can emit (0 .. n_ticks - 1)
    capacity = config.n_channels * (n_ticks // (refractory + 1) + 1)   # at most one spike per refractory + 1 ticks
    ticks = np.empty(capacity, dtype=np.int64)
    units = np.empty(capacity, dtype=np.int64)
    threshold_db = config.threshold_db - sensitivity_db(config)          # per channel
    count = _cochlea_kernel(np.ascontiguousarray(analytic.real), np.ascontiguousarray(analytic.imag),
                            pole, step.real.copy(), step.imag.copy(), ihc_pole,
                            threshold_db, config.saturation_db - config.threshold_db,
                            config.sustained_rate_hz / fs_out, config.onset_rate_hz / fs_out, adapt, refractory,
                            ticks, units)
    ticks, units = ticks[:count], units[:count]
    if config.spontaneous_rate_hz > 0:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n_spont = rng.poisson(config.spontaneous_rate_hz * n_out / fs_out * config.n_channels)
        spont_units = rng.integers(0, config.n_channels, n_spont)
        spont_ticks = rng.integers(0, max(n_out, 1), n_spont)
        key = np.unique(np.concatenate([units * n_ticks + ticks, spont_units * n_ticks + spont_ticks]))
        units, ticks = np.divmod(key, n_ticks)
    order = np.lexsort((units, ticks))
    return ticks[order], units[order]


@jit
def _cochlea_kernel(xr, xi, pole, step_re, step_im, ihc_pole, threshold_db, span,
                    sustained_per_tick, onset_per_tick, adapt, refractory, ticks, units):
    """Stages 2-6 for every channel; writes spikes to ``ticks``/``units``, returns their count.

    xr, xi : (n,) analytic signal at fs; pole : (C,) one-pole radius per channel;
    step_re, step_im : (C,) exp(-2 pi i cf / fs); threshold_db : (C,) per-channel threshold;
    span : dB from threshold to saturation; output at fs/2 (every second sample).
    """
    n = xr.shape[0]
    n_channels = pole.shape[0]
    count = 0
    pi = np.pi
    for k in range(n_channels):
        p = pole[k]
        g = 1.0 - p
        sr, si = step_re[k], step_im[k]
        rr, ri = 1.0, 0.0               # rotation exp(-i w t)
        z1r = z1i = z2r = z2i = z3r = z3i = z4r = z4i = 0.0
        h1 = h2 = 0.0
        th = threshold_db[k]
        level = 0.0
        v = 0.0
        dead = 0
        for t in range(n):
            # shift down by cf: u = x_a * exp(-i w t)
            ur = xr[t] * rr - xi[t] * ri
            ui = xr[t] * ri + xi[t] * rr
            z1r = p * z1r + g * ur
            z1i = p * z1i + g * ui
            z2r = p * z2r + g * z1r
            z2i = p * z2i + g * z1i
            z3r = p * z3r + g * z2r
            z3i = p * z3i + g * z2i
            z4r = p * z4r + g * z3r
            z4i = p * z4i + g * z3i
            # shift back up: bm = Re(z4 * exp(+i w t))
            bm = z4r * rr + z4i * ri
            hw = bm * pi if bm > 0.0 else 0.0
            h1 = ihc_pole * h1 + (1.0 - ihc_pole) * hw
            h2 = ihc_pole * h2 + (1.0 - ihc_pole) * h1
            # advance the rotation; renormalise now and then against drift
            nr = rr * sr - ri * si
            ri = rr * si + ri * sr
            rr = nr
            if (t & 1023) == 0:
                mag = np.sqrt(rr * rr + ri * ri)
                rr /= mag
                ri /= mag
            if (t & 1) == 1:
                continue
            tick = t >> 1
            if h2 > 1e-12:
                d = (20.0 * np.log10(h2) - th) / span
                if d < 0.0:
                    d = 0.0
                elif d > 1.0:
                    d = 1.0
            else:
                d = 0.0
            onset = d - level
            if onset < 0.0:
                onset = 0.0
            level += adapt * (d - level)
            if dead > 0:
                dead -= 1
                continue
            v += sustained_per_tick * d + onset_per_tick * onset
            if v >= 1.0:
                v -= 1.0
                if v > 1.0:
                    v = 0.0
                ticks[count] = tick
                units[count] = k
                count += 1
                dead = refractory
    return count
