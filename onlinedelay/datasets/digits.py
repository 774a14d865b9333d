"""The generator of the embedded ``digits`` dataset (needs the ``espeak-ng`` program).

Twenty words -- English ``zero`` .. ``nine`` (labels 0-9) and German ``null`` .. ``neun``
(labels 10-19; ``fünf`` is stored as ``fuenf`` in ``extra/keys``) -- spoken by twelve synthetic
speakers, ``repetitions`` times each.  Speakers 0-9 form the train split, speakers 10 and 11 the
test split (held-out speakers, as in SHD).

A speaker is an espeak-ng English accent (German words always use the ``de`` voice) with a
voice variant (male/female timbre), a base pitch, a base speed and a vocal-tract scale (the
sound is resampled by this factor, shifting formants and pitch together).  Every utterance then
draws, from ``numpy.random.default_rng([seed, sample_index])``:

* pitch: base x exp(N(0, ``pitch_sd``)), speed: base x exp(N(0, ``speed_sd``)),
  vocal-tract scale: base x exp(N(0, ``vtl_sd``));
* onset: U(0, ``onset_max_ms``) of silence before the word, U(``tail_ms``) after it;
* background noise: pink noise at an SNR of U(``snr_db``) dB relative to the speech;
* level: N(0, ``level_sd_db``) dB after the front end's RMS normalisation;
* the front end's spontaneous spikes.

The sound then goes through :func:`~onlinedelay.datasets.cochlea.cochlea_spikes` (700 channels,
spike times on a 1/24000 s grid).  Generation is deterministic for a given seed and espeak-ng
version, whatever the number of worker processes: every sample depends only on its index.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np

from .cochlea import CochleaConfig, cochlea_spikes, prepare_sound

__all__ = ["GENERATOR_VERSION", "WORDS", "CLASS_NAMES", "Speaker", "SPEAKERS", "DigitsConfig", "espeak_version",
           "synthesise", "plan", "render", "generate", "TEST_SPEAKERS"]

GENERATOR_VERSION = "1"
WORDS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS_DE = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
WORDS = WORDS_EN + WORDS_DE                       # what espeak-ng speaks
CLASS_NAMES = WORDS_EN + tuple(w.replace("ü", "ue") for w in WORDS_DE)   # extra/keys (ASCII)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: espeak-ng voice settings that stay fixed across its utterances."""

    english_voice: str      # espeak-ng English accent
    variant: str            # espeak-ng voice variant (timbre)
    gender: str
    pitch: float            # espeak-ng -p (0..99)
    speed: float            # espeak-ng -s, words per minute
    vtl: float              # resampling factor (> 1: shorter vocal tract, higher formants)


SPEAKERS = (
    Speaker("en-us", "m1", "male", 45, 160, 1.00),
    Speaker("en-gb", "f2", "female", 60, 150, 1.06),
    Speaker("en-gb-scotland", "m3", "male", 38, 170, 0.96),
    Speaker("en-029", "f4", "female", 55, 145, 1.08),
    Speaker("en-gb-x-rp", "m2", "male", 50, 140, 0.98),
    Speaker("en-us-nyc", "f1", "female", 65, 175, 1.04),
    Speaker("en-gb-x-gbclan", "m5", "male", 42, 155, 0.94),
    Speaker("en-gb-x-gbcwmd", "f3", "female", 58, 165, 1.10),
    Speaker("en-us", "m6", "male", 35, 150, 1.02),
    Speaker("en-gb", "f5", "female", 70, 160, 1.05),
    Speaker("en-us", "m4", "male", 48, 165, 0.97),          # test
    Speaker("en-gb-x-rp", "f1", "female", 62, 155, 1.07),   # test
)
TEST_SPEAKERS = (10, 11)


@dataclass(frozen=True)
class DigitsConfig:
    """What the generator varies, and how much."""

    repetitions: int = 4
    seed: int = 0
    pitch_sd: float = 0.10
    speed_sd: float = 0.18
    vtl_sd: float = 0.03
    onset_max_ms: float = 150.0
    tail_ms: tuple = (30.0, 120.0)
    snr_db: tuple = (20.0, 40.0)
    level_sd_db: float = 3.0
    cochlea: CochleaConfig = field(default_factory=CochleaConfig)

    def __post_init__(self):
        if not isinstance(self.repetitions, int) or self.repetitions < 1:
            raise ValueError(f"repetitions={self.repetitions!r}: expected an integer >= 1")
        for name in ("pitch_sd", "speed_sd", "vtl_sd", "onset_max_ms", "level_sd_db"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected >= 0")
        for name in ("tail_ms", "snr_db"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected (low, high) with low <= high")

    def to_dict(self) -> dict:
        """Plain dict (the front end's config nested)."""
        return dataclasses.asdict(self)


def espeak_version(executable: str = "espeak-ng") -> str:
    """Version string of espeak-ng, e.g. ``"1.51"``; RuntimeError when it is not installed."""
    path = shutil.which(executable)
    if path is None:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng); it is needed "
                           "only to regenerate the embedded dataset, never to use it")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return out.split(":", 1)[1].split()[0] if ":" in out else out.strip()


def _parse_wav(data: bytes):
    """(int16 samples, rate) from espeak-ng's --stdout WAV (its size fields are not filled in)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not return a WAV stream")
    pos, rate, bits = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"fmt ":
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
            bits = int.from_bytes(data[pos + 22:pos + 24], "little")
        if chunk == b"data":
            payload = data[pos + 8:]
            if bits != 16 or rate is None:
                raise RuntimeError(f"espeak-ng WAV: expected 16-bit PCM, got {bits} bits")
            return np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2"), rate
        pos += 8 + size
    raise RuntimeError("espeak-ng WAV: no data chunk")


def synthesise(text: str, voice: str, pitch: float, speed: float, executable: str = "espeak-ng"):
    """Speak ``text`` with espeak-ng; returns (float64 samples in [-1, 1), sample rate)."""
    cmd = [executable, "-v", voice, "-p", str(int(round(pitch))), "-s", str(int(round(speed))), "-z",
           "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=True)
    samples, rate = _parse_wav(result.stdout)
    return samples.astype(np.float64) / 32768.0, rate


def _pink_noise(n, rng):
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(f), n)
    return noise / max(np.sqrt(np.mean(noise * noise)), 1e-12)


def plan(config: DigitsConfig = DigitsConfig()) -> list:
    """One dict per sample (index order: speaker, repetition, word) with every random choice made."""
    items = []
    index = 0
    for s, spk in enumerate(SPEAKERS):
        for rep in range(config.repetitions):
            for label, word in enumerate(WORDS):
                rng = np.random.default_rng([config.seed, index])
                german = label >= len(WORDS_EN)
                items.append(dict(
                    index=index, speaker=s, label=label, repetition=rep, text=word,
                    voice=("de" if german else spk.english_voice) + "+" + spk.variant,
                    pitch=float(np.clip(spk.pitch * np.exp(rng.normal(0, config.pitch_sd)), 0, 99)),
                    speed=float(np.clip(spk.speed * np.exp(rng.normal(0, config.speed_sd)), 80, 450)),
                    vtl=float(spk.vtl * np.exp(rng.normal(0, config.vtl_sd))),
                    onset_s=float(rng.uniform(0, config.onset_max_ms) * 1e-3),
                    tail_s=float(rng.uniform(*config.tail_ms) * 1e-3),
                    snr_db=float(rng.uniform(*config.snr_db)),
                    level_db=float(rng.normal(0, config.level_sd_db)),
                    noise_seed=int(rng.integers(2**63)), spike_seed=int(rng.integers(2**63)),
                ))
                index += 1
    return items


def render(item: dict, cochlea: CochleaConfig = CochleaConfig(), return_sound=False):
    """Synthesise one planned utterance and run it through the front end.

    Returns (ticks, units) int64 arrays (ticks of ``cochlea.time_step_s``), and the prepared
    sound at ``cochlea.fs_hz`` when ``return_sound``.
    """
    speech, rate = synthesise(item["text"], item["voice"], item["pitch"], item["speed"])
    # vocal-tract scale: play the sound faster by vtl (formants and pitch up), at the model rate
    from scipy.signal import resample_poly

    fs = cochlea.fs_hz
    up, down = int(round(fs)), int(round(rate * item["vtl"]))
    g = np.gcd(up, down)
    speech = resample_poly(speech, up // g, down // g)
    nz = np.flatnonzero(np.abs(speech) > 1e-4)
    if nz.size:
        speech = speech[nz[0]:nz[-1] + 1]
    active_rms = float(np.sqrt(np.mean(speech * speech))) if speech.size else 1.0
    n_on, n_tail = int(round(item["onset_s"] * fs)), int(round(item["tail_s"] * fs))
    sound = np.concatenate([np.zeros(n_on), speech, np.zeros(n_tail)])
    noise_rng = np.random.default_rng(item["noise_seed"])
    sound += _pink_noise(sound.size, noise_rng) * active_rms * 10 ** (-item["snr_db"] / 20)
    x = prepare_sound(sound, fs, cochlea) * 10 ** (item["level_db"] / 20)
    ticks, units = cochlea_spikes(x, fs, cochlea, prepared=True, seed=item["spike_seed"])
    if return_sound:
        return ticks, units, x
    return ticks, units


def _render_worker(args):
    position, item, cochlea = args
    ticks, units = render(item, cochlea)
    return position, ticks.astype(np.int32), units.astype(np.int16)


def generate(config: DigitsConfig = DigitsConfig(), processes=None, progress=None):
    """Generate the whole dataset; returns a :class:`~onlinedelay.datasets.frozen.FrozenEvents`.

    Parameters
    ----------
    config : DigitsConfig
    processes : worker processes (default: all cores); 1 runs in this process
    progress : optional callable(done, total)
    """
    from .frozen import FrozenEvents, encode

    version = espeak_version()
    items = plan(config)
    results = [None] * len(items)
    processes = processes or os.cpu_count() or 1
    jobs = [(position, item, config.cochlea) for position, item in enumerate(items)]
    if processes == 1:
        iterator = map(_render_worker, jobs)
        pool = None
    else:
        # fork where it exists: spawn would re-run an unguarded ``python -m`` entry point in every worker
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(processes)
        iterator = pool.imap_unordered(_render_worker, jobs, chunksize=4)
    try:
        for done, (position, ticks, units) in enumerate(iterator, 1):
            results[position] = (ticks, units)
            if progress:
                progress(done, len(items))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    counts, ticks = encode(results, config.cochlea.n_channels)
    speakers = np.array([it["speaker"] for it in items])
    split = np.isin(speakers, TEST_SPEAKERS).astype(np.int64)
    attrs = dict(generator="onlinedelay.datasets.digits", generator_version=GENERATOR_VERSION, seed=config.seed,
                 espeak_ng_version=version, config=config.to_dict(),
                 description="synthetic spoken digits in the SHD layout")
    speaker_meta = dict(gender=np.array([s.gender for s in SPEAKERS]),
                        voice=np.array([f"{s.english_voice}+{s.variant}" for s in SPEAKERS]),
                        pitch=np.array([s.pitch for s in SPEAKERS], dtype=np.float32),
                        speed=np.array([s.speed for s in SPEAKERS], dtype=np.float32),
                        vtl=np.array([s.vtl for s in SPEAKERS], dtype=np.float32))
    return FrozenEvents(counts, ticks, [it["label"] for it in items], speakers, split, ["train", "test"],
                        CLASS_NAMES, config.cochlea.time_step_s, attrs, speaker_meta)
