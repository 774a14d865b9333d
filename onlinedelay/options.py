"""The options of ``onlinedelay train`` (and ``ablate``): the option table, config files and the configs.

``build_configs`` resolves, in order: the architecture preset (``--arch``) or, to resume, the run's
saved ``config.json``; the config file (TOML or JSON; keys are field or option names, ``[[layer]]``
tables describe layers one by one); the options given on the command line.  Errors name the option
or the config key.
"""

from __future__ import annotations

import re

import click


def one_line(err) -> str:
    """The message of ``err`` on one line."""
    return " ".join(str(err).split()) or type(err).__name__


class OptionError(click.ClickException):
    """A bad option value: one line on stderr, exit status 2."""

    exit_code = 2


def field_default(cls, field):
    """The default of ``field`` in the dataclass ``cls``."""
    if field == "learn":                  # --learn sets learn_weights, learn_delays, learn_readout
        return "weights,delays,readout"
    return getattr(cls(), field)


# -- train / eval / info -----------------------------------------------------------------------------
# (option name, section, config field, click type, help)
TRAIN_OPTIONS = [
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


def config_classes():
    from .config import LearningConfig, NetworkConfig, RunConfig

    return {"network": NetworkConfig, "learning": LearningConfig, "run": RunConfig}


def train_options(function):
    from .archs import ARCHS

    classes = config_classes()
    function = click.option("--layers", "layers_option", default=None, metavar="N|SIZES",
                            help="hidden layers: a count (N layers of --hidden neurons) or sizes, e.g. 256,256 "
                                 "[default: 1]")(function)
    function = click.option("--arch", "arch", type=click.Choice(list(ARCHS)), default=None,
                            help="start from a named architecture (see the README); other options override it "
                                 "[default: three-factor]")(function)
    for name, section, field, kind, help_text in reversed(TRAIN_OPTIONS):
        text = f"{help_text} [default: {field_default(classes[section], field)}]"
        if kind is None:
            function = click.option(name, field, default=None, help=text)(function)
        else:
            function = click.option(name, field, type=kind, default=None, help=text)(function)
    return function


def option_name(field: str) -> str | None:
    """The command-line option of a config field (``max_delay_steps`` -> ``--max-delay``), or None."""
    for name, _, f, _, _ in TRAIN_OPTIONS:
        if f == field:
            return name.split("/")[0]
    return None


def name_options(message: str) -> str:
    """A message that starts with ``field=value`` reworded to start with ``--option=value``."""
    match = re.match(r"(\w+)=", message)
    option = option_name(match.group(1)) if match else None
    return option + message[len(match.group(1)):] if option else message


def config_keys() -> dict:
    """{section: {key a config file may use: field}}: field names and option names, - or _."""
    classes = config_classes()
    keys = {section: {} for section in classes}
    for section, cls in classes.items():
        for field in cls.__dataclass_fields__:
            keys[section][field] = keys[section][field.replace("_", "-")] = field
    for name, section, field, _, _ in TRAIN_OPTIONS:
        typed = name.split("/")[0].lstrip("-")
        keys[section][typed] = keys[section][typed.replace("-", "_")] = field
    return keys


def read_config_file(path) -> tuple[dict, dict]:
    """TOML or JSON: sections [network] [learning] [run], or flat keys; a key is a field name
    (``max_delay_steps``) or an option name (``max-delay`` / ``max_delay``).

    Returns ({section: {field: value}}, {field: the key as the file spells it}).
    """
    import difflib
    import json
    from pathlib import Path

    try:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - report any read or parse error as one line
        raise OptionError(f"--config {path}: cannot parse ({one_line(err)})") from None
    if not isinstance(data, dict):
        raise OptionError(f"--config {path}: expected a table of options, got {type(data).__name__}")
    keys = config_keys()
    out, typed = {section: {} for section in keys}, {}
    layers = data.pop("layer", None)                      # [[layer]] tables: one per hidden layer
    if isinstance(data.get("network"), dict) and "layer" in data["network"]:
        layers = data["network"].pop("layer")
    if layers is not None:
        if not isinstance(layers, list) or not all(isinstance(t, dict) for t in layers):
            raise OptionError(f"--config {path}: [[layer]] must be a list of tables, one per hidden layer")
        out["network"]["layers"], typed["layers"] = layers, "[[layer]]"

    def put(section, key, value):
        candidates = [section] if section else [s for s in keys if key in keys[s]]
        if not candidates or key not in keys[candidates[0]]:
            known = sorted(keys[section] if section else {k for s in keys.values() for k in s})
            hint = difflib.get_close_matches(key, known, n=1)
            where = f"[{section}] has no option" if section else "unknown field"
            raise OptionError(f"--config {path}: {where} {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        field = keys[candidates[0]][key]
        if field in typed:
            raise OptionError(f"--config {path}: {key!r} and {typed[field]!r} set the same option")
        out[candidates[0]][field] = value
        typed[field] = key

    for key, value in data.items():
        if key in keys and isinstance(value, dict):
            for k, v in value.items():
                put(key, k, v)
        else:
            put(None, key, value)
    return out, typed


def parse_learn(text: str) -> dict:
    """``--learn weights,delays,readout`` (any subset) as LearningConfig's learn_* booleans."""
    groups = {p.strip() for p in str(text).split(",") if p.strip()}
    unknown = sorted(groups - {"weights", "delays", "readout"})
    if unknown:
        raise OptionError(f"--learn {text!r}: unknown part(s) {', '.join(unknown)}; choose from weights, delays, readout")
    return {f"learn_{g}": g in groups for g in ("weights", "delays", "readout")}


def parse_layers(text: str) -> dict:
    """``--layers``: "N" (N layers) or "A,B,..." (one layer of each size)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise OptionError(f"--layers {text!r}: expected a layer count or comma-separated layer sizes, e.g. 256,256")
    if len(sizes) == 1:
        return {"n_layers": sizes[0], "layers": []}
    return {"n_layers": len(sizes), "layers": [{"n_hidden": n} for n in sizes]}


def parse_range(text: str):
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        raise OptionError(f"--delay-range {text!r}: expected LOW,HIGH in steps, e.g. 10,30") from None
    return [low, high]


def build_configs(config_file, options: dict, saved: dict | None = None, resume_dir=None):
    """(network, learning, run) configs: defaults (or, to resume, the run's ``saved`` config.json),
    then the config file, then the options given on the command line.

    Errors name the option (``--max-delay=-1 ...``) or the config file key.  With ``saved``, an
    option or config value that differs from the saved run (other than epochs, threads and
    checkpoint_every) is a :class:`~onlinedelay.train.ConfigMismatchError`.
    """
    from .archs import arch_values

    classes = config_classes()
    given, labels = {}, {}
    if config_file:
        from_file, typed = read_config_file(config_file)
        for section, fields in from_file.items():
            for field, value in fields.items():
                given[(section, field)] = value
                labels[field] = f"--config {config_file}: {typed[field]}"
    if options.get("layers_option") is not None:
        for field, value in parse_layers(options["layers_option"]).items():
            given[("network", field)] = value
            labels[field] = "--layers"
    if options.get("delay_init_range") is not None:
        options = dict(options, delay_init_range=parse_range(options["delay_init_range"]))
    if options.get("arch") is not None:
        given[("run", "arch")] = options["arch"]
        labels["arch"] = "--arch"
    for name, section, field, _, _ in TRAIN_OPTIONS:
        if options.get(field) is not None:
            given[(section, field)] = options[field]
            labels[field] = name.split("/")[0] if options[field] is not False or "/" not in name \
                else name.split("/")[1]
    if ("learning", "learn") in given:    # --learn (or a config file's learn) sets three booleans
        label = labels.pop("learn")
        for field, value in parse_learn(given.pop(("learning", "learn"))).items():
            given[("learning", field)] = value
            labels[field] = label
    if saved:
        values = {s: dict(saved[s]) for s in classes}
    else:                                 # start from the architecture preset (--arch, or the file's arch)
        arch = given.get(("run", "arch"), "three-factor")
        try:
            values = arch_values(arch)
        except ValueError as err:
            raise OptionError(str(err)) from None
        values["run"] = {"arch": arch}
    if saved:
        from .train import RESUMABLE_CHANGES, ConfigMismatchError

        for (section, field), value in given.items():
            if field not in RESUMABLE_CHANGES and field in values[section] and values[section][field] != value:
                raise ConfigMismatchError(
                    f"--resume: {labels[field]} {value!r} differs from the run in {resume_dir} "
                    f"({values[section][field]!r}); leave it out to continue that run, or train into another --out")
    for (section, field), value in given.items():
        values[section][field] = value
    try:
        return tuple(classes[s](**values[s]) for s in ("network", "learning", "run"))
    except (TypeError, ValueError) as err:
        message = one_line(err)
        match = re.match(r"(\w+)=", message)
        if match and match.group(1) in labels:
            message = labels[match.group(1)] + message[len(match.group(1)):]
        elif isinstance(err, TypeError):
            message = f"bad configuration ({message})"
        raise OptionError(message) from None
