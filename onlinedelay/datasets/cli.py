"""``onlinedelay data ...``: list, inspect, download and generate datasets (no logic here)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np


@click.group("data")
def data():
    """Datasets: list, info, fetch (SHD/SSC) and generate (the embedded digits)."""


_data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help="Where SHD/SSC files are looked up [default: $ONLINEDELAY_DATA_DIR, "
                                     "else ~/.cache/onlinedelay].")


@data.command("list")
@_data_dir_option
def list_(data_dir):
    """Known datasets, their splits, and whether their files are here."""
    from . import DATASETS, embedded_path
    from .registry import candidate_paths, resolve_data_dir

    click.echo(f"data directory: {resolve_data_dir(data_dir)}")
    for name, info in DATASETS.items():
        if info.embedded:
            status = "embedded" if embedded_path().is_file() else f"missing ({embedded_path()})"
        else:
            found = [s for s in info.splits if any(p.is_file() for p in candidate_paths(name, s, data_dir))]
            status = f"present: {', '.join(found)}" if found else "not downloaded"
        click.echo(f"{name:7s} {'/'.join(info.splits):16s} {info.n_classes:3d} classes  [{status}]  "
                   f"{info.description}")


@data.command()
@click.argument("name")
@click.option("--split", "splits", multiple=True, help="Split(s) to describe [default: all the dataset has].")
@_data_dir_option
@click.option("--verify/--no-verify", default=False, show_default=True, help="Check MD5 against the published one.")
def info(name, splits, data_dir, verify):
    """Samples per split, classes and spike statistics of NAME (a dataset name or an .h5 path)."""
    from . import DATASETS, load_dataset

    if name.lower() in DATASETS:
        splits = splits or DATASETS[name.lower()].splits
    else:
        splits = splits or (None,)
    for split in splits:
        ds = load_dataset(name, split=split or "train", data_dir=data_dir, verify=verify)   # errors: see ../cli.py
        counts = ds.spike_counts
        band = np.arange(ds.n_channels) * 7 // ds.n_channels
        share = np.bincount(band, weights=ds.channel_counts, minlength=7) / max(int(counts.sum()), 1)
        click.echo(f"{ds.name} [{split or 'file'}] {ds.path}")
        click.echo(f"  samples {len(ds)}, classes {ds.n_classes}, channels {ds.n_channels}, "
                   f"speakers {'-' if ds.speakers is None else np.unique(ds.speakers).size}")
        click.echo(f"  spikes/sample mean {counts.mean():.0f}, min {counts.min()}, max {counts.max()}; "
                   f"latest spike {ds.max_time:.3f} s")
        click.echo(f"  share of spikes in 7 channel bands of {ds.n_channels // 7}, base (high frequency) -> apex: "
                   + " ".join(f"{100 * s:.0f}%" for s in share))
        click.echo("  classes: " + ", ".join(ds.class_names))
        per_class = np.bincount(ds.labels, minlength=ds.n_classes)
        click.echo(f"  samples per class: min {per_class.min()}, max {per_class.max()}")


@data.command()
@click.argument("name", type=click.Choice(["shd", "ssc"]))
@click.option("--split", "splits", multiple=True, help="Split(s) to fetch [default: all].")
@_data_dir_option
@click.option("--url", "urls", multiple=True,
              help="Base URL to try instead of the official ones (repeatable; also $ONLINEDELAY_DATASET_URLS).")
@click.option("--timeout", "timeout_s", type=float, default=5.0, show_default=True,
              help="Seconds to wait for a server before giving up.")
def fetch(name, splits, data_dir, urls, timeout_s):
    """Download NAME's .h5.zip files and check their published MD5."""
    from .registry import fetch as do_fetch

    paths = do_fetch(name, splits or None, data_dir, urls=list(urls) or None, timeout_s=timeout_s,   # errors: ../cli.py
                     progress=lambda line: click.echo(line, err=True))
    for path in paths:
        click.echo(f"ok {path}")


@data.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Compact .npz to write [default: the embedded copy, data/digits.npz].")
@click.option("--repetitions", type=click.IntRange(1), default=4, show_default=True,
              help="Utterances per speaker and word (12 speakers x 20 words each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--processes", type=click.IntRange(1), default=None, help="Worker processes [default: all cores].")
def generate(out, repetitions, seed, processes):
    """Rebuild the spoken-digits dataset with espeak-ng (needs the espeak-ng program)."""
    from . import embedded_path
    from .digits import DigitsConfig, espeak_version
    from .digits import generate as run
    from .frozen import save_frozen

    try:
        version = espeak_version()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    out = out or embedded_path()
    config = DigitsConfig(repetitions=repetitions, seed=seed)
    n = 12 * 20 * repetitions
    click.echo(f"espeak-ng {version}: generating {n} samples (seed {seed})", err=True)
    start = time.perf_counter()
    frozen = run(config, processes=processes,
                 progress=lambda done, total: click.echo(f"  {done}/{total}", err=True) if done % 100 == 0 else None)
    seconds = time.perf_counter() - start
    digest = save_frozen(out, frozen)
    out.with_name(out.name + ".md5").write_text(f"{digest}  {out.name}\n")
    counts = frozen.counts.astype(np.int64).sum(axis=1)
    import os

    cores = processes or os.cpu_count() or 1
    click.echo(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB, md5 {digest})")
    click.echo(f"{n} samples in {seconds:.0f} s on {cores} process(es): "
               f"{seconds * cores / n:.2f} s per sample per core")
    click.echo(f"spikes/sample mean {counts.mean():.0f}, min {counts.min()}, max {counts.max()}")
