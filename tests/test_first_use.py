"""First use as a new user meets it: one-line errors, resume, spelling-free class names, notices."""

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import onlinedelay
from onlinedelay import evaluate
from onlinedelay.atomic import atomic_path, remove_stale_temporaries
from onlinedelay.cli import main, usable_cores
from onlinedelay.config import LearningConfig, NetworkConfig, RunConfig
from onlinedelay.datasets import embedded_path
from onlinedelay.evaluate import map_labels, normalise_class_name, predict
from onlinedelay.io import load_model, save_model
from onlinedelay.network import Network
from onlinedelay.train import Trainer, read_metrics

from test_cli import SMALL, _write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_use")
    return {"train": _write(root / "toy_train.h5", 48, 0), "test": _write(root / "toy_test.h5", 24, 1),
            "junk": _junk(root / "junk.h5"), "notes": _notes(root / "notes.txt"), "root": root}


def _junk(path):
    path.write_bytes(b"not a model at all")
    return path


def _notes(path):
    path.write_text("shopping: milk, eggs\n")
    return path


@pytest.fixture(scope="module")
def run(toy):
    """A finished 2-epoch run of the toy task (shared by the tests that only read it)."""
    out = toy["root"] / "run"
    _cli("train", "--dataset", str(toy["train"]), "--out", str(out), "--quiet", *SMALL)
    return out


def _cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def _one_error_line(result, code, needle):
    """Exit status ``code``, no unhandled exception, and exactly one line saying what is wrong, last."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    assert needle in errors[0], errors[0]


# -- every command: bad input is one line and status 2 ---------------------------------------------
BAD_INPUT = [
    (["train", "--dataset", "{train}", "--pool", "3"], "--pool=3 does not divide the 700 channels of"),
    (["train", "--dataset", "{notes}"], "notes.txt: not a readable HDF5 file"),
    (["train", "--dataset", "{train}", "--loss-start-step", "200"], "--loss-start-step=200 leaves no step"),
    (["train", "--hidden", "0"], "--hidden=0 is not allowed"),
    (["train", "--resume"], "no run in"),
    (["eval", "{junk}"], "junk.h5: not an HDF5 file"),
    (["eval"], "missing the model file"),
    (["info", "{junk}"], "junk.h5: not an HDF5 file"),
    (["info", "--model", "{junk}"], "junk.h5: not an HDF5 file"),
    (["data", "info", "{notes}"], "notes.txt: not a readable HDF5 file"),
    (["data", "fetch", "mnist"], "'mnist' is not one of"),
    (["stream", "{junk}", "--input", "{notes}"], "junk.h5: not an HDF5 file"),
    (["stream", "--model", "{junk}", "--input", "{notes}", "--every", "0"], "--every"),
    (["ablate", "no-such-grid", "--dataset", "{train}"], "no-such-grid"),
    (["bench", "--config", "no-such-config", "--quick"], "no-such-config"),
    (["warmup", "--fast"], "No such option '--fast'"),
]


@pytest.mark.parametrize("args,needle", BAD_INPUT, ids=[" ".join(a[:2]) for a, _ in BAD_INPUT])
def test_every_command_answers_bad_input_with_one_line_and_status_2(toy, tmp_path, args, needle):
    args = [a.format(**toy) for a in args]
    out = tmp_path / "out"
    if args[0] in ("train", "ablate"):
        args += ["--out", str(out)]
    _one_error_line(CliRunner().invoke(main, args), 2, needle)
    if args[0] == "train":
        assert not out.exists() or not any(out.iterdir()), "a failed start left files behind"


def test_a_missing_file_is_status_1_and_an_internal_error_is_one_line_too(toy, tmp_path, monkeypatch):
    result = CliRunner().invoke(main, ["train", "--dataset", str(tmp_path / "nope.h5"), "--out", str(tmp_path)])
    _one_error_line(result, 1, "nope.h5")

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("onlinedelay.evaluate.model_info", broken)
    _one_error_line(CliRunner().invoke(main, ["info", str(toy["junk"])]), 1, "internal error (KeyError")


def test_the_package_errors_for_bad_input_are_the_valueerror_family():
    """The CLI maps ValueError to status 2; every package error class for bad input must be one."""
    from onlinedelay import ablate, bench, io, stream
    from onlinedelay.datasets import hdf5, registry
    from onlinedelay.errors import OnlineDelayError
    from onlinedelay.train import ConfigMismatchError

    for cls in (OnlineDelayError, io.ModelFileError, hdf5.DatasetFormatError, registry.ChecksumError,
                stream.StreamError, stream.StreamOptionError, ablate.AblationError, ConfigMismatchError,
                bench.OptionError):
        assert issubclass(cls, ValueError), cls
    assert issubclass(ConfigMismatchError, OnlineDelayError)


def test_a_real_process_prints_no_traceback(toy, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onlinedelay", "train", "--dataset", str(toy["train"]),
                           "--pool", "3", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: --pool=3")
    assert not (tmp_path / "out").exists()


# -- resume --------------------------------------------------------------------------------------
def _train_toy(toy, out, *extra):
    return _cli("train", "--dataset", str(toy["train"]), "--out", str(out), "--quiet", "--json", *SMALL, *extra)


def test_out_and_resume_alone_continue_a_run_with_its_own_configuration(toy, tmp_path):
    _train_toy(toy, tmp_path / "full", "--delays", "axonal", "--epochs", "3")
    _train_toy(toy, tmp_path / "part", "--delays", "axonal", "--epochs", "2")
    metrics = tmp_path / "part" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines + [lines[-1].replace('"epoch": 2', '"epoch": 3'), '{"epoch": 4, "trai']))
    stale = tmp_path / "part" / ".checkpoint.h5.k2x9_a1q.tmp"      # as left by a kill during a write
    stale.write_bytes(b"half")
    other = tmp_path / "part" / ".notes.tmp"
    other.write_text("not ours")
    result = _cli("train", "--out", tmp_path / "part", "--resume", "--epochs", "3")
    assert "resuming at epoch 3" in result.stderr
    assert not stale.exists() and other.exists()
    assert [m["epoch"] for m in read_metrics(metrics)] == [1, 2, 3]
    assert len(metrics.read_text().splitlines()) == 3
    config = json.loads((tmp_path / "part" / "config.json").read_text())
    assert config["network"]["n_hidden"] == 16 and config["network"]["input_delays"] == "axonal"
    full = load_model(tmp_path / "full" / "last.h5").net.params
    resumed = load_model(tmp_path / "part" / "last.h5").net.params
    for a, b in ((full.input.weight, resumed.input.weight), (full.input.delay, resumed.input.delay),
                 (full.w_out, resumed.w_out)):
        np.testing.assert_array_equal(a, b)


def test_resuming_a_finished_run_says_so_and_exits_0(run):
    before = (run / "metrics.jsonl").read_text()
    result = _cli("train", "--out", run, "--resume")
    assert "has already finished its 2 epochs; nothing to do" in result.output
    assert (run / "metrics.jsonl").read_text() == before
    summary = json.loads(_cli("train", "--out", run, "--resume", "--json", "--quiet").stdout)
    assert summary["finished_already"] and summary["epochs_done"] == 2


def test_resume_refuses_a_truncated_checkpoint_in_one_line(toy, tmp_path):
    _train_toy(toy, tmp_path / "run", "--epochs", "1")
    checkpoint = tmp_path / "run" / "checkpoint.h5"
    checkpoint.write_bytes(checkpoint.read_bytes()[:3000])
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2"])
    _one_error_line(result, 2, "checkpoint.h5")


def test_resume_refuses_options_that_differ_from_the_saved_run(run):
    result = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--max-delay", "9"])
    _one_error_line(result, 2, "--max-delay 9 differs from the run in")


def test_ctrl_c_prints_the_resume_command_and_exits_130(toy, tmp_path, monkeypatch):
    from onlinedelay import train

    out = tmp_path / "my run"

    def interrupted_in_epoch_2(learner, x, labels):
        if (out / "checkpoint.h5").exists():      # the first batch after epoch 1's checkpoint
            raise KeyboardInterrupt
        return run_batch(learner, x, labels)

    run_batch = train.run_batch
    monkeypatch.setattr(train, "run_batch", interrupted_in_epoch_2)
    result = CliRunner().invoke(main, ["train", "--dataset", str(toy["train"]), "--out", str(out), *SMALL,
                                       "--valid-fraction", "0"])
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert f"onlinedelay train --out '{out}' --resume" in result.stderr


# -- what a run reports ----------------------------------------------------------------------------
def test_best_model_is_the_epoch_with_the_highest_validation_accuracy(toy, tmp_path, monkeypatch):
    from onlinedelay import train

    scripted = iter([0.9, 0.4, 0.6, 0.5])

    def fake_validation(net, x, labels, start):
        return {"accuracy": next(scripted)}

    monkeypatch.setattr(train, "evaluate_arrays", fake_validation)
    summary = json.loads(_train_toy(toy, tmp_path / "run", "--epochs", "4", "--lr-weights", "0.01").stdout)
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    valid = [m["valid_accuracy"] for m in metrics]
    train_acc = [m["train_accuracy"] for m in metrics]
    assert valid == [0.9, 0.4, 0.6, 0.5]
    assert int(np.argmax(train_acc)) != 0, "training accuracy must peak elsewhere for the test to tell them apart"
    assert load_model(tmp_path / "run" / "best.h5").training["epoch"] == 1
    assert summary["best"] == {"epoch": 1, "accuracy": 0.9, "measure": "valid_accuracy"}


def test_without_a_validation_split_the_best_training_epoch_is_reported_as_such(toy, tmp_path):
    result = _cli("train", "--dataset", toy["train"], "--out", tmp_path / "run", *SMALL, "--valid-fraction", "0",
                  "--epochs", "3", "--lr-weights", "0.01")
    assert "best validation accuracy" not in result.output
    assert "no validation split" in result.stderr and "best training accuracy" in result.stdout
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    best_epoch = int(np.argmax([m["train_accuracy"] for m in metrics])) + 1
    assert load_model(tmp_path / "run" / "best.h5").training["epoch"] == best_epoch
    assert all(m["valid_accuracy"] is None for m in metrics)


def test_clipped_delays_are_counted_per_epoch_not_warned(toy, tmp_path):
    events = []
    net = NetworkConfig(n_hidden=12, input_delays="synaptic", max_delay_steps=2)
    run = RunConfig(dataset=str(toy["train"]), n_steps=40, batch_size=8, epochs=2, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(net, LearningConfig(lr_delays=1.0), run, tmp_path, progress=events.append).run()
    assert not [w for w in caught if "clipped" in str(w.message)]
    delays = load_model(tmp_path / "last.h5").net.params.input.delay
    at_limits = int(((delays == 0) | (delays == 2)).sum())
    assert 0 < at_limits < delays.size
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert epochs[-1]["delays_at_limits"] == at_limits and epochs[-1]["n_delays"] == delays.size
    assert [m["delays_at_limits"] for m in read_metrics(tmp_path / "metrics.jsonl")] == \
        [e["delays_at_limits"] for e in epochs]


def test_train_prints_a_parameter_table_notices_and_caps_threads(toy, tmp_path):
    result = _cli("train", "--dataset", toy["train"], "--out", tmp_path / "run", *SMALL, "--n-steps", "20",
                  "--threads", "999", "--epochs", "1")
    cores = usable_cores()
    assert f"--threads 999 is more than the {cores} cores here; using {cores}" in result.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["threads"] == cores
    from onlinedelay.datasets import load_dataset

    ds = load_dataset(toy["train"])
    n_long = sum(float(ds.events(i)[0].max()) >= 0.2 for i in range(len(ds)))
    assert 0 < n_long < len(ds)
    assert f"{n_long} of the 48 samples in the training split last longer than --n-steps 20" in result.stderr
    test = load_dataset(toy["test"])
    n_long_test = sum(float(test.events(i)[0].max()) >= 0.2 for i in range(len(test)))
    evaluated = _cli("eval", tmp_path / "run" / "last.h5", "--dataset", toy["test"]).stdout
    assert f"note: {n_long_test} of the 24 samples in the test split last longer than --n-steps 20" in evaluated
    table = result.stdout.split("parameters:\n")[1].splitlines()
    counts = load_model(tmp_path / "run" / "last.h5").net.parameter_counts()
    assert table[-1].split() == ["total", f"{sum(counts.values()):,}"]
    assert ["input", "weights", f"{counts['input_weights']:,}"] in [row.split() for row in table]


def test_compile_notice_only_when_warming_takes_long(monkeypatch):
    from onlinedelay import train

    monkeypatch.setattr(train, "COMPILE_NOTICE_S", 0.05)
    said = []
    with train._CompileNotice(said.append):
        time.sleep(0.3)
    assert [e["message"].split(" in ")[0] for e in said] == ["compiling kernels (first run only)...",
                                                             "kernels compiled"]
    said.clear()
    with train._CompileNotice(said.append):
        pass
    time.sleep(0.1)
    assert said == []


# -- config files take the option names ------------------------------------------------------------
def test_config_files_take_option_names_and_errors_name_the_key(toy, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'hidden = 9\nmax-delay = 7\n[learning]\nlr-delays = 0.05\nsigma = 2.0\n'
                   f'[run]\ndataset = "{toy["train"]}"\nn-steps = 40\nepochs = 1\nbatch_size = 16\n')
    _cli("train", "--config", cfg, "--out", tmp_path / "run", "--quiet")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["network"]["n_hidden"] == 9 and config["network"]["max_delay_steps"] == 7
    assert config["learning"]["lr_delays"] == 0.05 and config["learning"]["sigma_steps"] == 2.0
    assert config["run"]["n_steps"] == 40
    for text, needle in (("max_delay = -1\n", f"--config {cfg}: max_delay=-1 is not allowed"),
                         ("hidden = 3\nn_hidden = 4\n", "'n_hidden' and 'hidden' set the same option"),
                         ("hiden = 3\n", "unknown field 'hiden' (did you mean 'hidden'?)"),
                         ("[network]\nsigma = 2.0\n", "[network] has no option 'sigma'")):
        cfg.write_text(text)
        _one_error_line(CliRunner().invoke(main, ["train", "--config", str(cfg), "--out", str(tmp_path / "x")]),
                        2, needle)


# -- eval --------------------------------------------------------------------------------------------
def test_class_names_match_despite_spelling_and_by_index_on_request(toy, tmp_path):
    german = ["fünf", "Zwei", "Straße"]
    _write(tmp_path / "de_train.h5", 48, 0, names=german)
    _write(tmp_path / "de_test.h5", 24, 1, names=german)
    _cli("train", "--dataset", tmp_path / "de_train.h5", "--out", tmp_path / "run", "--quiet", *SMALL)
    model = tmp_path / "run" / "last.h5"

    def evaluate_json(path, *extra):
        return json.loads(_cli("eval", model, "--dataset", path, "--json", *extra).stdout)

    exact = evaluate_json(tmp_path / "de_test.h5")
    spelled = evaluate_json(_write(tmp_path / "spelled.h5", 24, 1, names=["FUENF", "zwei", "strasse"]))
    assert spelled["confusion"] == exact["confusion"] and spelled["class_names"] == german
    renamed = _write(tmp_path / "renamed.h5", 24, 1, names=["a", "b", "c"])
    result = CliRunner().invoke(main, ["eval", str(model), "--dataset", str(renamed)])
    _one_error_line(result, 2, "--classes by-index")
    assert evaluate_json(renamed, "--classes", "by-index")["confusion"] == exact["confusion"]


def test_map_labels_rules():
    labels = np.array([0, 1, 2, 1])
    assert normalise_class_name(" Fünf ") == normalise_class_name("fuenf") == "fuenf"
    assert normalise_class_name("STRASSE") == normalise_class_name("straße") == "strasse"
    assert normalise_class_name("café") == "cafe" and normalise_class_name("Ö") == "oe"
    np.testing.assert_array_equal(map_labels(labels, ["b", "a", "c"], ["a", "b", "c"], "f"), [1, 0, 2, 0])
    np.testing.assert_array_equal(map_labels(labels, ["x", "y", "z"], ["a", "b", "c"], "f", "by-index"), labels)
    with pytest.raises(ValueError, match="2 classes, the model has 3"):
        map_labels(labels[:2], ["x", "y"], ["a", "b", "c"], "f", "by-index")
    with pytest.raises(ValueError, match="two names match one class"):
        map_labels(labels, ["Fünf", "fuenf", "c"], ["fünf", "b", "c"], "f")


def test_eval_text_shows_the_confusion_matrix_and_model_may_be_positional(run, toy):
    by_option = _cli("eval", "--model", run / "best.h5", "--dataset", toy["test"], "--json").stdout
    positional = _cli("eval", run / "best.h5", "--dataset", toy["test"], "--json").stdout
    assert json.loads(by_option)["confusion"] == json.loads(positional)["confusion"]
    confusion = json.loads(positional)["confusion"]
    text = _cli("eval", run / "best.h5", "--dataset", toy["test"]).stdout.splitlines()
    start = text.index("confusion matrix (rows: true class, columns: predicted class):")
    assert text[start + 1].split() == ["0", "1", "2"]
    for k, name in enumerate(["alpha", "beta", "gamma"]):
        assert text[start + 2 + k].split() == [str(k), name, *map(str, confusion[k])]
    result = CliRunner().invoke(main, ["eval", str(run / "best.h5"), "--model", str(run / "last.h5")])
    _one_error_line(result, 2, "two models given")


def test_stream_takes_the_model_as_an_argument(tmp_path):
    path = tmp_path / "tiny.h5"
    save_model(path, Network(NetworkConfig(n_inputs=140, n_hidden=4, n_outputs=2), seed=0), class_names=["a", "b"],
               training={"run": RunConfig(pool=5).to_dict()})
    feed = tmp_path / "feed.txt"
    feed.write_text("0.001 10\n0.015 20\nend\n")
    result = _cli("stream", path, "--input", feed, "--quiet")
    assert json.loads(result.stdout.splitlines()[0])["step"] == 0


# -- the prediction rule and the pieces ------------------------------------------------------------
def test_predict_sums_softmax_from_loss_start_step():
    y = np.zeros((3, 2, 1))
    y[0, 0, 0] = 10.0                     # step 0: class 0, sure
    y[1:, 1, 0] = 1.0                     # steps 1, 2: class 1, mildly
    assert predict(y, 0)[0] == 0 and predict(y, 1)[0] == 1
    with pytest.raises(ValueError, match="loss_start_step=3 leaves no step"):
        predict(y, 3)
    net = Network(NetworkConfig(n_inputs=6, n_hidden=5, n_outputs=3), seed=2)
    x = np.random.default_rng(0).poisson(0.5, (12, 4, 6))
    readouts = net.run(x).transpose(0, 2, 1)
    np.testing.assert_array_equal(evaluate.infer(net, x, 4)[0], predict(readouts, 4))


def test_stale_temporaries_of_named_files_only_are_removed(tmp_path):
    with atomic_path(tmp_path / "a.h5") as tmp:
        tmp.write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]
    mine = [tmp_path / ".a.h5.abc_x12y.tmp", tmp_path / ".b.json.q1w2e3r4.tmp"]
    others = [tmp_path / ".c.h5.abcdefgh.tmp", tmp_path / "a.h5.tmp", tmp_path / ".a.h5.tmpx"]
    for p in mine + others:
        p.write_text("left over")
    assert remove_stale_temporaries(tmp_path, ["a.h5", "b.json"]) == sorted(mine)
    assert all(p.exists() for p in others) and (tmp_path / "a.h5").read_text() == "x"


def test_the_embedded_dataset_is_package_data():
    package = Path(onlinedelay.__file__).resolve().parent
    assert embedded_path().resolve().parent == package / "datasets" / "data" and embedded_path().is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"onlinedelay.datasets" = ["data/digits.npz", "data/digits.npz.md5"]' in pyproject


def test_no_issue_numbers_in_help_or_readme():
    assert "issue" not in _cli("bench", "--help").output
    assert "issue 5" not in (ROOT / "README.md").read_text() and "issue-5" not in (ROOT / "README.md").read_text()
