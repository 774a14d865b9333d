"""The ``onlinedelay`` command: parses options, builds configs, calls the library -- no logic here.

Errors: every command's failures end in one line on stderr, never a traceback (:func:`_exit_status`):
exit status 2 for bad input (options, config files, datasets, model files, stream records: the
package's ``ValueError`` family, :class:`~onlinedelay.errors.OnlineDelayError` first), 1 for a
failure at run time (a missing file, a failed download, divergence, a full disk, or a bug), 130
after Ctrl-C.
"""

from __future__ import annotations

import os
import shlex

import click

from ._version import __version__
from .datasets.cli import data
from .export.commands import export_command, import_command
from .options import OptionError, build_configs, name_options, one_line, train_options
from .quantize import format_footprint




def _exit_status(err) -> int | None:
    """2 for bad input, 1 for a failure at run time, None for anything else (a bug).

    Bad input is the ``ValueError`` family: ``OnlineDelayError`` and the package's other error
    classes for bad input -- ``ModelFileError``, ``DatasetFormatError``, ``ChecksumError``,
    ``StreamError``, ``StreamOptionError``, ``AblationError``, ``ConfigMismatchError``, bench's
    ``OptionError`` -- are all ``ValueError`` subclasses (tests/test_first_use.py checks it).
    Run-time failures: ``OSError`` (missing files, a full disk), ``RuntimeError`` (divergence,
    downloads), ``MemoryError``.
    """
    if isinstance(err, ValueError):
        return 2
    if isinstance(err, (OSError, RuntimeError, MemoryError)):
        return 1
    return None


class Failure(click.ClickException):
    """One line on stderr (``Error: ...``) and the given exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class _Main(click.Group):
    """The command group; turns every subcommand's exceptions into one line and an exit status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except Exception as err:  # noqa: BLE001 - the one place where errors become a line and a status
            if os.environ.get("ONLINEDELAY_DEBUG") == "1":
                raise
            status = _exit_status(err)
            if status is not None:
                raise Failure(one_line(err), status) from None
            raise Failure(f"internal error ({type(err).__name__}: {one_line(err)}); please report it with the "
                          f"command (ONLINEDELAY_DEBUG=1 shows the traceback)", 1) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onlinedelay")
def main():
    """Online three-factor learning of weights and delays in spiking neural networks."""
    from .kernels._jit import configure_threading

    configure_threading()


@main.command()
def warmup():
    """Compile and cache every numba kernel; prints the time it took."""
    from .warmup import warmup as run_warmup

    click.echo("compiling every kernel (a few minutes on a cold cache, seconds when cached)...", err=True)
    seconds = run_warmup()
    click.echo(f"compiled and cached all kernels in {seconds:.1f} s")


# -- shared helpers ----------------------------------------------------------------------------------
def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cap_threads(threads: int, option: str = "--threads") -> int:
    """``threads``, capped at the usable cores with a one-line warning."""
    cores = usable_cores()
    if threads > cores:
        click.echo(f"warning: {option} {threads} is more than the {cores} cores here; using {cores}", err=True)
        return cores
    return threads


def _model_argument(function):
    """MODEL as a positional argument, or --model MODEL (the same)."""
    function = click.option("--model", "model_option", type=click.Path(exists=True, dir_okay=False), default=None,
                            help="model .h5 file (the same as giving MODEL)")(function)
    return click.argument("model", type=click.Path(exists=True, dir_okay=False), required=False)(function)


def _model_path(model, model_option) -> str:
    if model and model_option and model != model_option:
        raise click.UsageError(f"two models given ({model} and --model {model_option}); give one")
    if not (model or model_option):
        raise click.UsageError("missing the model file: give MODEL (or --model MODEL)")
    return model or model_option


def parameter_table(counts: dict) -> str:
    """Parameter counts as aligned lines with a total (rows with no parameters left out)."""
    rows = [(name.replace("_", " "), int(n)) for name, n in counts.items() if n]
    rows.append(("total", int(sum(counts.values()))))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {n:>10,}" for name, n in rows)


class _Progress:
    """Per-epoch progress: a bar on a terminal, plain lines otherwise, nothing when quiet."""

    def __init__(self, quiet: bool):
        import sys

        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, event):
        if self.quiet:
            return
        kind = event["kind"]
        if kind == "info":
            click.echo(event["message"], err=True)
        elif kind == "batch" and self.tty:
            done = event["batch"] / event["batches"]
            bar = "#" * int(24 * done) + "." * (24 - int(24 * done))
            click.echo(f"\repoch {event['epoch']}/{event['epochs']} [{bar}] {event['batch']}/{event['batches']} "
                       f"{event['samples_per_s']:.0f} samples/s  loss {event['loss']:.3f}  acc {event['accuracy']:.3f}",
                       nl=False, err=True)
        elif kind == "epoch":
            valid = event["valid_accuracy"]
            at_limits = event.get("delays_at_limits")
            click.echo(("\n" if self.tty else "") +
                       f"epoch {event['epoch']}: loss {event['train_loss']:.4f}  train acc {event['train_accuracy']:.3f}"
                       f"  valid acc {'-' if valid is None else f'{valid:.3f}'}  {event['samples_per_s']:.1f} samples/s"
                       f"  {event['seconds']:.1f} s"
                       + (f"  ({at_limits} of {event['n_delays']} delays clipped to 0 or {event['max_delay_steps']} "
                          f"steps)" if at_limits else ""),
                       err=True)


def _train_summary(summary: dict) -> str:
    """The lines ``train`` prints at the end."""
    last, best, test_acc = summary["last"], summary["best"], summary["test_accuracy"]
    if best["measure"] == "valid_accuracy":
        best_text = f"best validation accuracy {best['accuracy']:.3f} (epoch {best['epoch']})"
    else:
        best_text = f"best training accuracy {best['accuracy']:.3f} (epoch {best['epoch']}; no validation split)"
    lines = [f"trained {summary['n_train']} samples x {summary['epochs']} epochs -> {summary['out_dir']}",
             f"  final train accuracy {last['train_accuracy']:.3f}, {best_text}, test accuracy "
             f"{'n/a' if test_acc is None else f'{test_acc:.3f}'}",
             f"  {last['samples_per_s']:.1f} samples/s in the last epoch",
             "parameters:", parameter_table(summary["parameters"])]
    if summary.get("footprint"):
        lines.insert(3, "  " + format_footprint(summary["footprint"]).splitlines()[-1])
    if summary.get("test_note"):
        lines.insert(2, f"  ({summary['test_note']})")
    return "\n".join(lines)


@main.command()
@train_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="output folder (config, metrics, checkpoints, models)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TOML or JSON file of options (option or field names); command-line options override it")
@click.option("--resume", is_flag=True,
              help="continue the run in --out from its checkpoint, with its own config.json (options given override)")
@click.option("--quiet", is_flag=True, help="print nothing but errors (and --json)")
@click.option("--json", "as_json", is_flag=True, help="print the final summary as JSON")
@click.pass_context
def train(ctx, out_dir, config_file, resume, quiet, as_json, **options):
    """Train a network online (weights, and delays unless --delays none)."""
    import json
    from pathlib import Path

    from .errors import OnlineDelayError
    from .evaluate import evaluate_model
    from .train import Trainer, load_run_config

    saved = load_run_config(out_dir) if resume else None
    net_cfg, learn_cfg, run_cfg = build_configs(config_file, options, saved, out_dir)
    run_cfg = run_cfg.replace(threads=cap_threads(run_cfg.threads))
    trainer = Trainer(net_cfg, learn_cfg, run_cfg, out_dir, progress=_Progress(quiet))
    try:
        summary = trainer.run(resume=resume)
    except KeyboardInterrupt:
        if (Path(out_dir) / "checkpoint.h5").is_file():
            hint = f"continue with: onlinedelay train --out {shlex.quote(str(out_dir))} --resume"
        else:
            hint = "no checkpoint was written yet: run the same command again to start over"
        click.echo(f"\ninterrupted; {hint}", err=True)
        ctx.exit(130)
    except OnlineDelayError as err:
        raise Failure(name_options(one_line(err)), 2) from None
    if summary["finished_already"]:
        if as_json:
            click.echo(json.dumps(summary))
        elif not quiet:
            click.echo(f"the run in {out_dir} has already finished its {summary['epochs_done']} epochs; nothing "
                       f"to do (give a larger --epochs to train on)")
        return
    from .datasets import DATASETS

    summary["test_accuracy"] = None
    if run_cfg.dataset.lower() in DATASETS:
        try:
            summary["test_accuracy"] = evaluate_model(f"{out_dir}/best.h5", split="test", metrics=False)["accuracy"]
        except (FileNotFoundError, ValueError) as err:
            summary["test_note"] = f"no test accuracy: {one_line(err)}"
    else:
        summary["test_note"] = "a file has no test split: run 'onlinedelay eval MODEL --dataset TEST_FILE'"
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        click.echo(_train_summary(summary))


def _confusion_table(confusion, names) -> str:
    """Rows: true class (index and name); columns: predicted class index."""
    k, index_width = len(names), len(str(len(names) - 1))
    width = max(index_width, max((len(str(n)) for row in confusion for n in row), default=1))
    labels = [f"{i:>{index_width}} {name}" for i, name in enumerate(names)]
    label_width = max(len(label) for label in labels)
    head = " " * (label_width + 4) + " ".join(f"{j:>{width}}" for j in range(k))
    rows = [f"  {label:<{label_width}}  " + " ".join(f"{n:>{width}}" for n in row)
            for label, row in zip(labels, confusion)]
    return "\n".join(["confusion matrix (rows: true class, columns: predicted class):", head, *rows])


@main.command("eval")
@_model_argument
@click.option("--dataset", default=None, help="dataset name or path [default: the one the model was trained on]")
@click.option("--split", default="test", show_default=True, help="split to evaluate")
@click.option("--data-dir", default=None, help="folder with downloaded datasets")
@click.option("--classes", type=click.Choice(["by-name", "by-index"]), default="by-name", show_default=True,
              help="match the file's classes to the model's by name (case, accents and umlauts aside) or by index")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--no-metrics", is_flag=True, help="leave out the NeuroBench-style metrics")
def evaluate(model, model_option, dataset, split, data_dir, classes, as_json, no_metrics):
    """Accuracy, per-class accuracy, confusion matrix, spikes, synaptic operations and metrics of MODEL."""
    import json

    from .evaluate import evaluate_model
    from .metrics import format_metrics

    result = evaluate_model(_model_path(model, model_option), dataset, split, data_dir, classes, not no_metrics)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['data_file']} ({split}): accuracy {result['accuracy']:.4f} on {result['n_samples']} samples")
    if result["note"]:
        click.echo(f"note: {result['note']}")
    click.echo(f"mean spikes per hidden neuron per sample {result['mean_spikes_per_neuron']:.2f}; "
               f"synaptic operations per sample {result['synops_per_sample']:.0f}")
    click.echo("per-class accuracy:")
    for name, acc in zip(result["class_names"], result["per_class_accuracy"]):
        click.echo(f"  {name:>12s}  {'-' if acc is None else f'{acc:.3f}'}")
    click.echo(_confusion_table(result["confusion"], result["class_names"]))
    click.echo(format_footprint(result["footprint"]).splitlines()[-1])
    if "metrics" in result:
        click.echo(format_metrics(result["metrics"]))


@main.command()
@_model_argument
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def info(model, model_option, as_json):
    """Architecture, parameter counts, memory footprint and delay statistics of MODEL."""
    import json

    from .evaluate import model_info

    result = model_info(_model_path(model, model_option))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(result["architecture"])
    click.echo("parameters:\n" + parameter_table(result["parameters"]))
    bits = result["stored_bits"]
    click.echo(f"memory: {bits['weights']} bits of weights + {bits['delays']} bits of delays at "
               f"{bits['precision_bits']}-bit precision; delays need {result['integer_delay_bits']['per_delay']} "
               f"bits each as integers ({result['integer_delay_bits']['total']} bits)")
    for name, st in result["delay_stats"].items():
        click.echo(f"{name} delays ({st['mode']}): mean {st['mean']:.2f}, std {st['std']:.2f}, "
                   f"min {st['min']:.2f}, max {st['max']:.2f} steps")
    click.echo(format_footprint(result["footprint"]))


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="also write every number and the machine info to this JSON file (atomically)")
@click.option("--quick", is_flag=True, help="smoke test: T = 20, 1 repeat, two configurations, batch 1, 1 thread")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="timed repeats per figure at least; fast ones repeat to fill 0.3 s [default: 5; --quick: 1]")
@click.option("--config", "configs", multiple=True, metavar="NAME",
              help="named configuration, repeatable or comma-separated [default: all but tiny]")
@click.option("--batch", "batch_sizes", type=click.IntRange(min=1), multiple=True, help="batch size, repeatable [default: 1 and 32]")
@click.option("--threads", type=click.IntRange(min=1), multiple=True, help="thread count, repeatable [default: 1 and 2]")
@click.option("--memory/--no-memory", default=True, show_default=True, help="measure peak memory at T = 100, 1000, 10000")
@click.option("--peers", is_flag=True,
              help="also time PyTorch BPTT (and DCLS delays) on the same batches, with ratios; needs onlinedelay[peers]")
def bench(json_path, quick, repeats, configs, batch_sizes, threads, memory, peers):
    """Training / inference speed, streaming latency and peak memory against the machine's triad bound."""
    from . import bench as bench_lib

    if peers and bench_lib.missing_message():
        raise OptionError(bench_lib.missing_message())          # one line, before anything is measured
    try:
        plan = bench_lib.make_plan(configs, batch_sizes, threads, repeats, quick, memory, json_path=json_path,
                                   peers=peers)
    except bench_lib.OptionError as err:
        raise click.BadParameter(str(err), param_hint=f"'--{err.option}'") from None
    report = bench_lib.run_bench(plan, progress=lambda line: click.echo(line, err=True))
    click.echo(bench_lib.format_report(report))
    if json_path:
        bench_lib.write_json(report, json_path)
        click.echo(f"wrote {json_path}")


@main.command()
@_model_argument
@click.option("--input", "source", required=True,
              help="'-' (stdin), tcp:PORT (listen on --host), or a file: text, binary records or SHD-layout .h5")
@click.option("--format", "input_format", type=click.Choice(["auto", "text", "binary", "hdf5"]), default="auto",
              show_default=True, help="input format (auto: HDF5 by signature, binary by its magic, else text)")
@click.option("--time-unit", type=click.Choice(["s", "ms"]), default="s", show_default=True,
              help="unit of the times in text lines and --labels")
@click.option("--sample", type=click.IntRange(min=0), default=None, help="replay only this HDF5 sample [default: all]")
@click.option("--output", type=click.Choice(["json", "table"]), default="json", show_default=True,
              help="JSON lines or a compact table")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="steps per output line (probabilities averaged over the window)")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="print the k most probable classes [default: all]")
@click.option("--adapt", is_flag=True, help="keep learning online from labels (label lines/records, HDF5 labels, --labels)")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="label file: lines 'TIME LABEL' (label from that time on)")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), default=None,
              help="write the adapted model here (atomically) at the end [default with --save-every: MODEL.adapted.h5]")
@click.option("--save-every", type=click.IntRange(min=1), default=None, help="also save every N steps (needs --adapt)")
@click.option("--update-every", "update_every_steps", type=click.IntRange(min=1), default=None,
              help="steps between updates when adapting [default: the model's online n, else its n_steps]")
@click.option("--reset-on-gap", "reset_on_gap_ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="reset the neuron state after this much silence (ms) [default: never]")
@click.option("--realtime", is_flag=True, help="pace a file replay at wall-clock speed")
@click.option("--on-backwards", type=click.Choice(["drop", "fail"]), default="drop", show_default=True,
              help="events going back in time: drop and count them, or stop the stream")
@click.option("--origin", type=click.Choice(["zero", "first"]), default="zero", show_default=True,
              help="time 0 of a sample: 0, or its first event (for absolute clocks)")
@click.option("--max-jump-s", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True,
              help="reject events this far (s) ahead of the clock")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address the tcp: listener binds (another than loopback exposes it)")
@click.option("--clients", "max_clients", type=click.IntRange(min=1), default=None,
              help="stop after this many TCP clients [default: never]")
@click.option("--accept-timeout", "accept_timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="stop when no TCP client connects for this many seconds [default: wait]")
@click.option("--recv-timeout", "recv_timeout_s", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="disconnect a TCP client that sends nothing for this many seconds")
@click.option("--pad-to-steps", type=click.IntRange(min=0), default=None,
              help="pad an ended sample with silent steps to this many, as eval runs it "
                   "[default: the model's n_steps; 0: no padding]")
@click.option("--max-silent-steps", type=click.IntRange(min=0), default=None,
              help="steps run of a stretch without events, the rest are skipped "
                   "[default: the model's n_steps; 0: run them all]")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="threads for the synapse kernels")
@click.option("--quiet", is_flag=True, help="no summary on stderr")
def stream(model, model_option, source, quiet, **options):
    """Run MODEL on a live spike feed, one prediction per step; optionally keep learning online."""
    import sys

    from . import stream as stream_lib

    model_path = _model_path(model, model_option)
    options["threads"] = cap_threads(options["threads"])
    try:
        summary = stream_lib.run_stream(model_path, source, sys.stdout, log=lambda line: click.echo(line, err=True),
                                        **options)
    except stream_lib.StreamOptionError as err:
        raise click.BadParameter(str(err), param_hint=f"'--{err.option.replace('_', '-')}'") from None
    if not quiet:
        click.echo(stream_lib.format_summary(summary), err=True)
    if summary["error"]:
        raise click.ClickException(summary["error"])


# -- ablate -----------------------------------------------------------------------------------------
@main.command()
@click.argument("grids", nargs=-1, metavar="GRID...")
@train_options
@click.option("--list", "list_grids", is_flag=True, help="list the grids, one line each, and exit")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="seeds per configuration: --seed, --seed + 1, ...")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="runs in parallel (processes)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/ablate", show_default=True,
              help="folder of the ablation: <grid>/<config>/seed<s>/ runs, results.csv, results.md, plots")
@click.option("--scheduler", default=None,
              help="address of a Dask scheduler (tcp://host:8786) to send the runs to; needs onlinedelay[dask]")
@click.option("--test-dataset", default=None,
              help="file to test on when --dataset is a file [default: the dataset's test split]")
@click.option("--plots/--no-plots", default=True, show_default=True, help="write PNG plots (needs onlinedelay[plots])")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TOML or JSON file of base options; command-line options override it")
@click.option("--quiet", is_flag=True, help="no line per run")
def ablate(grids, list_grids, seeds, jobs, out_dir, scheduler, test_dataset, plots, config_file, quiet, **options):
    """Run named ablation grids over seeds (resumable, parallel); writes a CSV, Markdown tables and plots."""
    from . import ablate as ablate_lib

    if list_grids:
        for name, summary in ablate_lib.GRID_SUMMARIES.items():
            click.echo(f"{name:<18s}{summary}")
        return
    net_cfg, learn_cfg, run_cfg = build_configs(config_file, options)
    run_cfg = run_cfg.replace(threads=cap_threads(run_cfg.threads))

    def progress(event):
        line = ablate_lib.format_event(event)
        if line and not quiet:
            click.echo(line, err=True)

    try:
        report = ablate_lib.run_ablation(grids, net_cfg, learn_cfg, run_cfg, seeds=seeds, jobs=jobs, out=out_dir,
                                         scheduler=scheduler, test_dataset=test_dataset, plots=plots,
                                         progress=progress)
    except ablate_lib.AblationError as err:
        raise OptionError(str(err)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; run the same command again to continue (finished runs are kept)", err=True)
        raise click.exceptions.Exit(130) from None
    click.echo(f"{len(report['results'])} runs done; tables in {report['files']['results.md']}")
    if report["failed"]:
        raise click.ClickException(f"{len(report['failed'])} run(s) failed (run the same command again to retry): "
                                   + "; ".join(f"{k}: {v}" for k, v in report["failed"].items()))


main.add_command(data)
main.add_command(export_command)
main.add_command(import_command)

if __name__ == "__main__":  # pragma: no cover
    main()
