"""The ``export`` and ``import`` commands (added to ``onlinedelay`` in cli.py); thin: the work is in
nir_export.py and nir_import.py."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False), required=True, help="NIR file to write")
@click.option("--format", "out_format", type=click.Choice(["nir"]), default="nir", show_default=True,
              help="output format")
@click.option("--delays-as", type=click.Choice(["branches", "metadata"]), default="branches", show_default=True,
              help="synaptic delays as Linear -> Delay branches (one per delay value), or a delay matrix in "
                   "the Linear's metadata")
def export_command(model, out_path, out_format, delays_as):
    """Write MODEL as a NIR graph (needs onlinedelay[nir])."""
    from ..io import load_model
    from .nir_export import save_nir

    s = save_nir(out_path, load_model(model), delays_as)
    click.echo(f"wrote {s['file']}: {s['nodes']} nodes, {s['edges']} edges, {s['branches']} synaptic-delay "
               f"branches (delays as {delays_as})")


@click.command("import")
@click.argument("graph", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False), required=True, help="model .h5 to write")
@click.option("--dt-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="step of the graph in ms, when its metadata has no dt")
def import_command(graph, out_path, dt_ms):
    """Build a model from the NIR graph GRAPH (our exports, or a plain LIF graph of another framework)."""
    from ..io import save_model
    from .nir_import import read_nir

    loaded, s = read_nir(graph, dt_ms)
    save_model(out_path, loaded.net, loaded.class_names)
    click.echo(f"imported {graph}: {s['nodes']} nodes, {s['edges']} edges, {s['branches']} synaptic-delay "
               f"branches, {s['layers']} layer(s) -> {out_path}")
