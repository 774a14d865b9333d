"""The ``onlinedelay`` command: parses options, builds configs, calls the library -- no logic here."""

from __future__ import annotations

import click

from ._version import __version__
from .datasets.cli import data


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onlinedelay")
def main():
    """Online three-factor learning of weights and delays in spiking neural networks."""
    from .kernels._jit import configure_threading

    configure_threading()


@main.command()
def warmup():
    """Compile and cache every numba kernel; prints the time it took."""
    from .warmup import warmup as run_warmup

    seconds = run_warmup()
    click.echo(f"compiled and cached all kernels in {seconds:.1f} s")


# -- train / eval / info -----------------------------------------------------------------------------
class OptionError(click.ClickException):
    """A bad option value: one line on stderr, exit status 2."""

    exit_code = 2


def _default(cls, field):
    if field == "learn":                  # --learn sets learn_weights, learn_delays, learn_readout
        return "weights,delays,readout"
    return getattr(cls(), field)


# (option name, section, config field, click type, help)
_TRAIN_OPTIONS = [
    ("--dataset", "run", "dataset", str, "digits (embedded), shd, ssc, or a path to an SHD-layout file"),
    ("--data-dir", "run", "data_dir", str, "folder with downloaded datasets (else $ONLINEDELAY_DATA_DIR, then the user cache)"),
    ("--delays", "network", "input_delays", click.Choice(["none", "synaptic", "axonal"]), "delays of the input projection"),
    ("--hidden", "network", "n_hidden", int, "LIF neurons per hidden layer"),
    ("--density", "network", "density", float, "fraction of input synapses present (0, 1]"),
    ("--recurrent", "network", "recurrent", click.Choice(["none", "dense", "sparse", "conv"]), "recurrence of every hidden layer"),
    ("--recurrent-delays", "network", "recurrent_delays", click.Choice(["none", "synaptic", "axonal"]), "delays of the recurrent projections"),
    ("--recurrent-density", "network", "recurrent_density", float, "fraction of recurrent synapses present (--recurrent sparse)"),
    ("--kernel-size", "network", "kernel_size", int, "taps of a conv recurrence along the neuron axis (odd)"),
    ("--hidden-delays", "network", "hidden_delays", click.Choice(["none", "synaptic", "axonal"]), "delays of the projections between hidden layers"),
    ("--readout", "network", "readout", click.Choice(["last", "all"]), "the readout reads the last hidden layer or every layer"),
    ("--max-delay", "network", "max_delay_steps", int, "largest delay in steps"),
    ("--dt-ms", "network", "dt_ms", float, "time step (ms), also the input bin width"),
    ("--tau-mem-ms", "network", "tau_mem_ms", float, "membrane time constant (ms)"),
    ("--tau-out-ms", "network", "tau_out_ms", float, "readout time constant (ms)"),
    ("--threshold", "network", "threshold", float, "firing threshold"),
    ("--reset", "network", "reset", click.Choice(["soft", "hard"]), "reset after a spike"),
    ("--delay-init", "network", "delay_init", click.Choice(["uniform", "zero", "range"]), "initial delays: U(0, max), 0, or U(--delay-range)"),
    ("--delay-range", "network", "delay_init_range", str, "LOW,HIGH steps of --delay-init range"),
    ("--weight-bits", "network", "weight_bits", click.Choice(["32", "8", "4", "2", "ternary"]), "precision of the hidden weights (the readout stays float32)"),
    ("--ternary-scales", "network", "ternary_scales", click.Choice(["fixed", "learned"]), "ternary scales alpha, beta: recomputed each update or learned"),
    ("--delay-step", "network", "delay_step", float, "delay quantization step in steps (0: real-valued delays)"),
    ("--delay-offset", "network", "delay_offset", float, "offset of the delay grid (steps)"),
    ("--delay-offset-mode", "network", "delay_offset_mode", click.Choice(["fixed", "learned"]), "the delay grid's offset is fixed or learned"),
    ("--delay-l2", "network", "delay_l2", float, "lambda of the delay penalty lambda sum d^2"),
    ("--learn", "learning", "learn", str, "what learns: any of weights,delays,readout (comma-separated)"),
    ("--pool", "run", "pool", int, "adjacent input channels summed (700 -> 700/pool inputs)"),
    ("--n-steps", "run", "n_steps", int, "steps per sample (longer samples are clipped)"),
    ("--feedback", "learning", "feedback", click.Choice(["symmetric", "random"]), "feedback matrix of the learning signal"),
    ("--update", "learning", "update", click.Choice(["online", "accumulate"]), "apply updates every n steps or once per batch"),
    ("--update-every", "learning", "update_every_steps", int, "n for --update online"),
    ("--optimizer", "learning", "optimizer", click.Choice(["adam", "sgd"]), "optimizer"),
    ("--lr-weights", "learning", "lr_weights", float, "learning rate of input and recurrent weights"),
    ("--lr-delays", "learning", "lr_delays", float, "learning rate of delays (steps)"),
    ("--lr-readout", "learning", "lr_readout", float, "learning rate of readout weights and bias"),
    ("--sigma", "learning", "sigma_steps", float, "width of the Gaussian delay surrogate (steps)"),
    ("--loss-start-step", "learning", "loss_start_step", int, "first step counted in the loss and the prediction"),
    ("--batch-size", "run", "batch_size", int, "samples per batch"),
    ("--epochs", "run", "epochs", int, "passes over the training set"),
    ("--max-samples", "run", "max_samples", int, "cap the training set (quick runs)"),
    ("--valid-fraction", "run", "valid_fraction", float, "fraction held out for validation (by speaker)"),
    ("--seed", "run", "seed", int, "seed of every random draw"),
    ("--threads", "run", "threads", int, "threads for the synapse kernels"),
    ("--checkpoint-every", "run", "checkpoint_every", int, "batches between mid-epoch checkpoints (0: per epoch)"),
]


def _config_classes():
    from .config import LearningConfig, NetworkConfig, RunConfig

    return {"network": NetworkConfig, "learning": LearningConfig, "run": RunConfig}


def _train_options(function):
    from .archs import ARCHS

    classes = _config_classes()
    function = click.option("--layers", "layers_option", default=None, metavar="N|SIZES",
                            help="hidden layers: a count (N layers of --hidden neurons) or sizes, e.g. 256,256 "
                                 "[default: 1]")(function)
    function = click.option("--arch", "arch", type=click.Choice(list(ARCHS)), default=None,
                            help="start from a named architecture (see the README); other options override it "
                                 "[default: three-factor]")(function)
    for name, section, field, kind, help_text in reversed(_TRAIN_OPTIONS):
        default = _default(classes[section], field)
        text = f"{help_text} [default: {default}]"
        if kind is None:
            function = click.option(name, field, default=None, help=text)(function)
        else:
            function = click.option(name, field, type=kind, default=None, help=text)(function)
    return function


def _read_config_file(path) -> dict:
    """TOML or JSON: sections [network] [learning] [run], or flat field names."""
    import json
    from pathlib import Path

    text = Path(path).read_text()
    try:
        if str(path).endswith(".toml"):
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - report any parse error as one line
        raise OptionError(f"--config {path}: cannot parse ({err})") from None
    classes = _config_classes()
    fields = {section: {f for f in cls.__dataclass_fields__} for section, cls in classes.items()}
    out = {section: {} for section in classes}
    layers = data.pop("layer", None)
    if isinstance(data.get("network"), dict) and "layer" in data["network"]:
        layers = data["network"].pop("layer")
    if layers is not None:
        if not isinstance(layers, list) or not all(isinstance(t, dict) for t in layers):
            raise OptionError(f"--config {path}: [[layer]] must be a list of tables, one per hidden layer")
        out["network"]["layers"] = layers
    for key, value in data.items():
        if key in classes and isinstance(value, dict):
            for k, v in value.items():
                if k not in fields[key]:
                    raise OptionError(f"--config {path}: [{key}] has no field {k!r}")
                out[key][k] = v
            continue
        owners = [section for section in classes if key in fields[section]]
        if not owners:
            raise OptionError(f"--config {path}: unknown field {key!r}")
        out[owners[0]][key] = value
    return out


def _parse_learn(text: str) -> dict:
    """``--learn weights,delays,readout`` (any subset) as LearningConfig's learn_* booleans."""
    groups = {p.strip() for p in str(text).split(",") if p.strip()}
    unknown = sorted(groups - {"weights", "delays", "readout"})
    if unknown:
        raise OptionError(f"--learn {text!r}: unknown part(s) {', '.join(unknown)}; choose from weights, delays, readout")
    return {f"learn_{g}": g in groups for g in ("weights", "delays", "readout")}


def _parse_layers(text: str) -> dict:
    """``--layers``: "N" (N layers) or "A,B,..." (one layer of each size)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise OptionError(f"--layers {text!r}: expected a layer count or comma-separated layer sizes, e.g. 256,256")
    if len(sizes) == 1:
        return {"n_layers": sizes[0]}
    return {"n_layers": len(sizes), "layers": [{"n_hidden": n} for n in sizes]}


def _parse_range(text: str):
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        raise OptionError(f"--delay-range {text!r}: expected LOW,HIGH in steps, e.g. 10,30") from None
    return [low, high]


def build_configs(config_file, options: dict):
    """Architecture preset (``--arch``), then the config file, then the options given on the command line."""
    from .archs import arch_values

    classes = _config_classes()
    from_file = _read_config_file(config_file) if config_file else {s: {} for s in classes}
    arch = options.get("arch") or from_file["run"].pop("arch", None) or from_file["network"].pop("arch", None) \
        or "three-factor"
    try:
        values = arch_values(arch)
    except ValueError as err:
        raise OptionError(str(err)) from None
    values["run"] = {}
    for section in classes:
        values[section].update(from_file[section])
    if options.get("layers_option") is not None:
        values["network"].pop("layers", None)
        values["network"].update(_parse_layers(options["layers_option"]))
    if options.get("delay_init_range") is not None:
        options = dict(options, delay_init_range=_parse_range(options["delay_init_range"]))
    for _, section, field, _, _ in _TRAIN_OPTIONS:
        if options.get(field) is not None and field != "learn":
            values[section][field] = options[field]
    if options.get("learn") is not None:
        values["learning"].update(_parse_learn(options["learn"]))
    values["run"]["arch"] = arch
    try:
        return tuple(classes[s](**values[s]) for s in ("network", "learning", "run"))
    except (TypeError, ValueError) as err:
        raise OptionError(str(err)) from None


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
            click.echo(("\n" if self.tty else "") +
                       f"epoch {event['epoch']}: loss {event['train_loss']:.4f}  train acc {event['train_accuracy']:.3f}"
                       f"  valid acc {'-' if valid is None else f'{valid:.3f}'}  {event['samples_per_s']:.1f} samples/s"
                       f"  {event['seconds']:.1f} s", err=True)


@main.command()
@_train_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="output folder (config, metrics, checkpoints, models)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TOML or JSON file of options; command-line options override it")
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint")
@click.option("--quiet", is_flag=True, help="print nothing but errors (and --json)")
@click.option("--json", "as_json", is_flag=True, help="print the final summary as JSON")
def train(out_dir, config_file, resume, quiet, as_json, **options):
    """Train a network online (weights, and delays unless --delays none)."""
    import json

    from .quantize import format_footprint
    from .train import ConfigMismatchError, DivergenceError, Trainer, evaluate_model

    net_cfg, learn_cfg, run_cfg = build_configs(config_file, options)
    trainer = Trainer(net_cfg, learn_cfg, run_cfg, out_dir, progress=_Progress(quiet))
    try:
        summary = trainer.run(resume=resume)
    except (DivergenceError, ConfigMismatchError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    from .datasets import DATASETS

    summary["test_accuracy"] = None
    if run_cfg.dataset.lower() in DATASETS:
        try:
            summary["test_accuracy"] = evaluate_model(f"{out_dir}/best.h5", split="test")["accuracy"]
        except (FileNotFoundError, ValueError) as err:
            summary["test_note"] = str(err).splitlines()[0]
    else:
        summary["test_note"] = "a file has no test split: run 'onlinedelay eval --model ... --dataset TEST_FILE'"
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        last = summary["last"]
        test_acc = summary["test_accuracy"]
        click.echo(f"trained {summary['n_train']} samples x {summary['epochs']} epochs -> {summary['out_dir']}\n"
                   f"  final train accuracy {last['train_accuracy']:.3f}, best validation accuracy "
                   f"{summary['best_valid_accuracy']:.3f}, test accuracy "
                   f"{'n/a' if test_acc is None else f'{test_acc:.3f}'}\n"
                   f"  {last['samples_per_s']:.1f} samples/s; parameters {summary['parameters']}\n"
                   + format_footprint(summary["footprint"]).splitlines()[-1])


@main.command("eval")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), required=True, help="model .h5 file")
@click.option("--dataset", default=None, help="dataset name or path [default: the one the model was trained on]")
@click.option("--split", default="test", show_default=True, help="split to evaluate")
@click.option("--data-dir", default=None, help="folder with downloaded datasets")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def evaluate(model_path, dataset, split, data_dir, as_json):
    """Accuracy, per-class accuracy, confusion matrix, spikes and synaptic operations of a model."""
    import json

    from .quantize import format_footprint
    from .train import evaluate_model

    try:
        result = evaluate_model(model_path, dataset, split, data_dir)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['data_file']} ({split}): accuracy {result['accuracy']:.4f} on {result['n_samples']} samples")
    click.echo(f"mean spikes per hidden neuron per sample {result['mean_spikes_per_neuron']:.2f}; "
               f"synaptic operations per sample {result['synops_per_sample']:.0f}")
    for name, acc in zip(result["class_names"], result["per_class_accuracy"]):
        click.echo(f"  {name:>12s}  {'-' if acc is None else f'{acc:.3f}'}")
    click.echo(format_footprint(result["footprint"]).splitlines()[-1])


@main.command()
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def info(model_path, as_json):
    """Architecture, parameter counts, memory footprint and delay statistics of a model."""
    import json

    from .quantize import format_footprint
    from .train import model_info

    try:
        result = model_info(model_path)
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(result["architecture"])
    click.echo(f"parameters: {result['parameters']}")
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
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="timed repeats per figure [default: 5; --quick: 1]")
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
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False), required=True, help="model .h5 file")
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
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="threads for the synapse kernels")
@click.option("--quiet", is_flag=True, help="no summary on stderr")
def stream(model_path, source, quiet, **options):
    """Run a model on a live spike feed, one prediction per step; optionally keep learning online."""
    import sys

    from . import stream as stream_lib

    try:
        summary = stream_lib.run_stream(model_path, source, sys.stdout, log=lambda line: click.echo(line, err=True),
                                        **options)
    except stream_lib.StreamOptionError as err:
        raise click.BadParameter(str(err), param_hint=f"'--{err.option.replace('_', '-')}'") from None
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if not quiet:
        click.echo(stream_lib.format_summary(summary), err=True)
    if summary["error"]:
        raise click.ClickException(summary["error"])


# -- ablate -----------------------------------------------------------------------------------------
@main.command()
@click.argument("grids", nargs=-1, metavar="GRID...")
@_train_options
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
    click.echo(f"{len(report['results'])} runs done; tables in {report['files']['results.md']}")
    if report["failed"]:
        raise click.ClickException(f"{len(report['failed'])} run(s) failed (run the same command again to retry): "
                                   + "; ".join(f"{k}: {v}" for k, v in report["failed"].items()))


main.add_command(data)

if __name__ == "__main__":  # pragma: no cover
    main()
