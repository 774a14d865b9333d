"""The ``onlinedelay`` command: parses options, builds configs, calls the library -- no logic here."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onlinedelay")
def main():
    """Online three-factor learning of weights and delays in spiking neural networks."""


@main.command()
def warmup():
    """Compile and cache every numba kernel; prints the time it took."""
    from .warmup import warmup as run_warmup

    seconds = run_warmup()
    click.echo(f"compiled and cached all kernels in {seconds:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
