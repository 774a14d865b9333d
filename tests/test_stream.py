"""Streaming inference (issue 6): offline equivalence, bad input, snapshots, adaptation, TCP, CLI."""

import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from onlinedelay import LearningConfig, Network, NetworkConfig
from onlinedelay.cli import main
from onlinedelay.config import RunConfig
from onlinedelay.datasets import load_dataset, steps_for
from onlinedelay.datasets.hdf5 import write_events_file
from onlinedelay.io import load_model, save_model
from onlinedelay.stream import (
    BinaryParser,
    SegmentResult,
    StepResult,
    StreamError,
    StreamRunner,
    TcpSource,
    TextParser,
    encode_end,
    encode_events,
    encode_label,
    run_stream,
    softmax,
)
from onlinedelay.train import infer

pytestmark = pytest.mark.filterwarnings("ignore:.*delays were clipped:RuntimeWarning")

NAMES = ["low", "mid", "high"]
DT_MS = 10.0
POOL = 5
N_STEPS = 30                                   # the model's training n_steps: an ended sample is padded to it


def _params(net):
    p = net.params
    return [a.copy() for a in (p.input.weight, p.input.delay, p.w_out, p.b_out)]


def _same_params(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 140-16-3 synaptic-delay model (untrained) and an SHD-layout file of 4 samples, one per band."""
    root = tmp_path_factory.mktemp("stream")
    net = Network(NetworkConfig(n_inputs=140, n_hidden=16, n_outputs=3, max_delay_steps=8), seed=0)
    model = root / "model.h5"
    save_model(model, net, class_names=NAMES, learner=None,
               training={"run": RunConfig(pool=POOL, n_steps=N_STEPS).to_dict()})
    rng = np.random.default_rng(1)
    times, units, labels = [], [], []
    for k in (0, 1, 2, 1):
        times.append(np.sort(rng.uniform(0.0, 0.25, 500)))
        units.append(rng.normal(150 + 200 * k, 40, 500).clip(0, 699).astype(np.uint16))
        labels.append(k)
    times[1][:3] = [0.0, 0.01, 0.03]           # events exactly on step boundaries
    times[1].sort()
    data = write_events_file(root / "data.h5", times, units, labels, NAMES, speakers=np.arange(4))
    return {"root": root, "model": model, "data": data, "ds": load_dataset(data)}


def _offline(files, i):
    """Readout of every step of sample i, evaluated offline (frames -> net.run), padded to N_STEPS."""
    t, _ = files["ds"].events(i)
    x = files["ds"].frames(i, DT_MS, max(N_STEPS, steps_for(t.max(), DT_MS)), POOL)
    return load_model(files["model"]).net.run(x)[:, 0], x


def _steps(results):
    return [r for r in results if isinstance(r, StepResult)]


def _feed(runner, item):
    """Hand one reader item to a runner, as run_stream does."""
    kind = item[0]
    if kind == "events":
        runner.push(item[1], item[2])
    elif kind == "label":
        runner.set_label(item[1])
    elif kind == "tick":
        runner.advance(item[1])
    elif kind == "end":
        runner.end_sample(item[1])
    else:
        runner.count_rejected(item[1], item[2])


def _text(t, u, label=None):
    lines = [] if label is None else [f"label {label}"]
    lines += [f"{ti!r} {ui}" for ti, ui in zip(t.tolist(), u.tolist())]
    return "\n".join(lines) + "\n"


# -- offline equivalence ------------------------------------------------------------------------------
def test_replay_gives_exactly_the_offline_outputs(files):
    for i in range(4):
        ref, x = _offline(files, i)
        t, u = files["ds"].events(i)
        runner = StreamRunner(files["model"])
        runner.push(t, u)
        runner.finish()
        results = runner.poll()
        steps = _steps(results)
        assert len(steps) == ref.shape[0]
        assert np.array_equal(np.stack([s.y for s in steps]), ref)            # bit-identical readouts
        assert np.array_equal(np.stack([s.probs for s in steps]), softmax(ref.T).T)
        assert [s.index for s in steps] == list(range(len(steps)))
        assert [s.n_events for s in steps] == x.sum(axis=1).tolist()
        offline_prediction = infer(load_model(files["model"]).net, x[:, None, :])[0][0]
        assert steps[-1].vote == offline_prediction
        assert isinstance(results[-1], SegmentResult) and results[-1].prediction == offline_prediction


def test_text_binary_hdf5_and_chunking_give_the_same_steps(files):
    t, u = files["ds"].events(1)
    ref, _ = _offline(files, 1)
    out = []
    for data, fmt in ((_text(t, u).encode(), "text"), (encode_events(t, u), "binary")):
        parser = TextParser("s") if fmt == "text" else BinaryParser()
        runner = StreamRunner(files["model"])
        for a in range(0, len(data), 997):                     # chunks split lines and records anywhere
            for item in parser.feed(data[a:a + 997]):
                assert item[0] == "events"
                runner.push(item[1], item[2])
            out.extend(runner.poll())
        assert parser.close() == []
        runner.finish()
        out.extend(runner.poll())
        assert np.array_equal(np.stack([s.y for s in _steps(out)]), ref), fmt
        out.clear()
    one_by_one = StreamRunner(files["model"])
    for ti, ui in zip(t, u):
        one_by_one.push([ti], [ui])
        out.extend(one_by_one.poll() if ui % 3 == 0 else [])
    one_by_one.finish()
    out.extend(one_by_one.poll())
    assert np.array_equal(np.stack([s.y for s in _steps(out)]), ref)
    buf = io.StringIO()
    summary = run_stream(files["model"], str(files["data"]), buf, sample=1)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    probs = np.array([rec["p"] for rec in lines if "step" in rec])
    assert np.allclose(probs, softmax(ref.T).T, atol=1e-6) and summary["steps"] == ref.shape[0]
    assert lines[-1]["summary"]["events_accepted"] == t.size


def test_replay_of_every_sample_resets_between_samples_and_scores_them(files):
    buf = io.StringIO()
    summary = run_stream(files["model"], str(files["data"]), buf, output="table", top_k=2)
    assert summary["segments"] == 4 and summary["labelled_segments"] == 4
    expected = [infer(load_model(files["model"]).net, _offline(files, i)[1][:, None, :])[0][0] for i in range(4)]
    accuracy = np.mean(np.array(expected) == files["ds"].labels)
    assert summary["segment_accuracy"] == pytest.approx(accuracy)
    assert buf.getvalue().count("-- segment") == 4
    lat = summary["latency_us"]
    assert 0 < lat["median"] <= lat["p99"] <= lat["max"]


# -- bad input -----------------------------------------------------------------------------------------
def test_bad_text_input_is_counted_and_never_reaches_the_model(files):
    t, u = files["ds"].events(2)
    clean = _text(t, u)
    good = clean.splitlines()
    half = len(good) // 2
    bad_lines = ["garbage", "1.0 2 3", "0.1 seven", "0.15 700", "0.15 -1", "-0.5 3", "nan 3", "inf 4",
                 "0.0001 5",                       # backwards (the clock is past it)
                 "999999 5",                       # a jump of 11 days: time_jump
                 "0.1 5.5", "label nobody", "x" * 5000, "tick abc", "# a comment", ""]
    dirty = "\n".join(good[:half] + bad_lines + good[half:]) + "\n"
    outs = {}
    for name, text in (("clean", clean), ("dirty", dirty)):
        runner = StreamRunner(files["model"])
        before = _params(runner.net)
        parser = TextParser("s", max_line_bytes=256)
        data = text.encode()
        for a in range(0, len(data), 4096):
            for item in parser.feed(data[a:a + 4096]):
                _feed(runner, item)
        runner.finish()
        outs[name] = (np.stack([s.y for s in _steps(runner.poll())]), runner.summary())
        assert _same_params(before, _params(runner.net))
    assert np.array_equal(outs["clean"][0], outs["dirty"][0])
    rejected = outs["dirty"][1]["events_rejected"]
    assert rejected == {"malformed": 5, "oversized_record": 1, "truncated_record": 0, "nan_time": 2,
                        "negative_time": 1, "unknown_unit": 2, "backwards": 1, "time_jump": 1, "bad_label": 1}
    assert outs["dirty"][1]["events_accepted"] == t.size


def test_bad_binary_input_and_a_client_that_hangs_up_mid_record(files):
    t, u = files["ds"].events(0)
    half = t.size // 2
    header_of_huge = b"ODEV" + (1).to_bytes(2, "little") + bytes(2) + (10 ** 7).to_bytes(4, "little")
    unknown_kind = b"ODEV" + (9).to_bytes(2, "little") + bytes(6)
    stream = (encode_events(t[:half], u[:half]) + b"\x00garbage bytes\xff" + header_of_huge + unknown_kind
              + encode_events([np.nan, -1.0, 0.01, 0.2], [3, 3, 3, 70000]) + encode_events(t[half:], u[half:])
              + encode_events(t[-1:], u[-1:])[:17])                   # disconnect inside a record
    parser = BinaryParser(max_record_events=1000)
    runner = StreamRunner(files["model"])
    before = _params(runner.net)
    for a in range(0, len(stream), 333):
        for item in parser.feed(stream[a:a + 333]):
            _feed(runner, item)
    for item in parser.close():
        _feed(runner, item)
    runner.finish()
    steps = _steps(runner.poll())
    rejected = runner.summary()["events_rejected"]
    assert rejected["malformed"] == 2 and rejected["oversized_record"] == 1
    assert rejected["truncated_record"] == 1 and rejected["nan_time"] == 1 and rejected["negative_time"] == 1
    assert rejected["unknown_unit"] == 1 and rejected["backwards"] == 1              # 0.2 s: the clock is past it
    assert np.array_equal(np.stack([s.y for s in steps]), _offline(files, 0)[0])
    assert _same_params(before, _params(runner.net))
    cut = BinaryParser()                                # a cut EVENTS record keeps its complete events
    assert cut.feed(encode_events([0.1, 0.2, 0.3], [1, 2, 3])[:12 + 2 * 12 + 5]) == []
    items = cut.close()
    assert items[0][0] == "events" and items[0][1].tolist() == [0.1, 0.2] and items[1] == ("reject", "truncated_record", 1)


def test_backwards_policy_fail_stops_with_the_events_before_kept(files):
    runner = StreamRunner(files["model"], on_backwards="fail")
    with pytest.raises(StreamError, match="backwards"):
        runner.push([0.01, 0.05, 0.02, 0.06], [1, 2, 3, 4])
    assert runner.events_accepted == 2 and runner.rejected["backwards"] == 1
    dropper = StreamRunner(files["model"])
    assert dropper.push([0.01, 0.05, 0.02, 0.06], [1, 2, 3, 4]) == 3
    path = files["root"] / "backwards.txt"
    path.write_text("0.01 1\n0.05 2\n0.02 3\n0.06 4\n")
    summary = run_stream(files["model"], str(path), io.StringIO(), on_backwards="fail")
    assert "backwards" in summary["error"] and summary["events_accepted"] == 2


# -- state, gaps, pacing --------------------------------------------------------------------------------
def test_snapshot_restore_resumes_bit_identically_with_adaptation(files):
    lc = LearningConfig(update="online", update_every_steps=3, lr_weights=0.05, lr_delays=0.5, lr_readout=0.05)
    t, u = files["ds"].events(0)
    cut = t.size // 2

    def runner():
        r = StreamRunner(files["model"], adapt=True, learning_config=lc)
        r.set_label("high")
        return r

    straight = runner()
    straight.push(t[:cut], u[:cut])
    first = straight.poll()
    straight.push(t[cut:], u[cut:])
    straight.finish()
    second = straight.poll()

    paused = runner()
    paused.push(t[:cut], u[:cut])
    assert len(paused.poll()) == len(first)
    snap = paused.snapshot()
    paused.push(t[cut:] + 0.5, u[cut:])                # wander off: more events, labels, a reset
    paused.set_label(0)
    paused.end_sample()
    paused.poll()
    for target in (paused, runner()):                  # the same runner, or a fresh one from the model
        target.restore(snap)
        target.push(t[cut:], u[cut:])
        target.finish()
        resumed = target.poll()
        assert len(resumed) == len(second)
        for a, b in zip(resumed, second):
            if isinstance(a, StepResult):
                assert np.array_equal(a.y, b.y) and a.step == b.step and a.index == b.index
            else:
                assert a == b
        assert _same_params(_params(target.net), _params(straight.net))
    assert straight.updates > 0 and not _same_params(_params(straight.net), _params(load_model(files["model"]).net))


def test_reset_on_gap_resets_state_and_skips_the_silence(files):
    t, u = files["ds"].events(1)
    gap_ms = 200.0
    shift = 2.0                                         # the second burst starts 2 s later
    runner = StreamRunner(files["model"], reset_on_gap_ms=gap_ms)
    runner.push(np.concatenate([t, t + shift]), np.concatenate([u, u]))
    runner.finish()
    results = runner.poll()
    segments = [r for r in results if isinstance(r, SegmentResult)]
    assert [s.reason for s in segments] == ["gap", "eof"] and runner.gap_resets == 1
    first = [r for r in _steps(results) if r.segment == 0]
    second = [r for r in _steps(results) if r.segment == 1]
    last_step = int(np.floor(t.max() * 100 + 1e-9))
    assert first[-1].index == int(np.floor((t.max() + gap_ms / 1000) * 100 + 1e-9)) - 1 > last_step
    assert second[0].index == runner.step_of([t[0] + shift])[0] and second[0].segment_step == 0
    k = runner.step_of(t + shift)
    x = np.zeros((max(N_STEPS, k.max() - k.min() + 1), 140), np.int64)     # the eof pads the segment
    np.add.at(x, (k - k.min(), u // POOL), 1)
    assert np.array_equal(np.stack([r.y for r in second]), load_model(files["model"]).net.run(x)[:, 0])


def test_realtime_paces_a_replay_at_wall_clock_speed(files):
    t, _ = files["ds"].events(1)
    now = [0.0]
    emitted_at = []

    class Out(io.StringIO):
        def write(self, s):
            emitted_at.extend([now[0]] * s.count("\n"))
            return super().write(s)

    def sleep(seconds):
        now[0] += seconds

    paced = Out()
    summary = run_stream(files["model"], str(files["data"]), paced, sample=1, realtime=True,
                         clock=lambda: now[0], sleep=sleep)
    plain = io.StringIO()
    run_stream(files["model"], str(files["data"]), plain, sample=1)
    strip = [{k: v for k, v in json.loads(line).items() if k != "summary"} for line in plain.getvalue().splitlines()]
    assert strip[:-1] == [json.loads(line) for line in paced.getvalue().splitlines()][:-1]
    steps = steps_for(t.max(), DT_MS)                               # then the end pads to N_STEPS at once
    assert summary["steps"] == N_STEPS > steps
    assert now[0] == pytest.approx(t.max(), abs=1e-9)               # the feed took its own duration
    assert emitted_at[steps - 2] == pytest.approx((steps - 1) * DT_MS / 1000)   # step k out at its end
    assert emitted_at[N_STEPS - 1] == emitted_at[steps - 1]


# -- adaptation --------------------------------------------------------------------------------------------
def test_adaptation_learns_from_label_lines_and_saves_atomically(files, tmp_path):
    model = tmp_path / "model.h5"
    model.write_bytes(files["model"].read_bytes())
    lc_net = load_model(model).net
    feed = tmp_path / "feed.txt"
    text = "".join(_text(*files["ds"].events(i), label=NAMES[int(files["ds"].labels[i])]) + "end\n" for i in range(4))
    feed.write_text(text * 3)
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("".join(line + "\n" for line in text.splitlines() if not line.startswith("label")))
    out = tmp_path / "adapted.h5"
    summary = run_stream(model, str(unlabelled), io.StringIO(), adapt=True, save_path=out)
    assert summary["adapt"]["updates"] == 0 and _same_params(_params(load_model(out).net), _params(lc_net))
    summary = run_stream(model, str(feed), io.StringIO(), adapt=True, save_path=out, save_every=25)
    assert summary["adapt"]["updates"] >= 12 and summary["saves"] >= 4
    adapted = load_model(out)
    assert adapted.training["stream"]["updates"] == summary["adapt"]["updates"] and adapted.optimizer is not None
    assert not _same_params(_params(adapted.net), _params(lc_net))
    assert _same_params(_params(load_model(model).net), _params(lc_net))               # the input model is kept
    assert not list(tmp_path.glob(".*.tmp"))                                           # no temporary left


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_an_update_that_diverges_is_reverted(files):
    lc = LearningConfig(update="online", update_every_steps=1, lr_weights=3e38, lr_readout=3e38)   # Adam: ~lr a step
    runner = StreamRunner(files["model"], adapt=True, learning_config=lc)
    runner.set_label(2)
    t, u = files["ds"].events(2)
    runner.push(t, u)
    runner.finish()
    with pytest.warns(RuntimeWarning, match="reverted"):
        steps = _steps(runner.poll())
    assert runner.updates_reverted > 0
    assert all(np.isfinite(a).all() for a in _params(runner.net)) and len(steps) > 10


def test_label_file_is_merged_by_time(files, tmp_path):
    t, u = files["ds"].events(0)
    feed = tmp_path / "feed.txt"
    feed.write_text(_text(t, u))
    labels = tmp_path / "labels.txt"
    labels.write_text("# time label\n0.1 high\n")
    buf = io.StringIO()
    run_stream(files["model"], str(feed), buf, labels=labels)
    records = [json.loads(line) for line in buf.getvalue().splitlines() if '"step"' in line]
    assert {r.get("label") for r in records if r["t_s"] <= 0.1} == {None}
    assert {r.get("label") for r in records if r["t_s"] > 0.11} == {2}


# -- TCP ---------------------------------------------------------------------------------------------------
def test_tcp_listener_on_loopback_survives_a_client_hanging_up_mid_record(files):
    t, u = files["ds"].events(1)
    source = TcpSource(port=0, max_clients=2, accept_timeout_s=10)
    host, port = source.address
    assert host == "127.0.0.1"
    payloads = [encode_label(1) + encode_events(t, u) + encode_events(t[-1:] + 1, u[-1:])[:20],
                _text(t, u, label="mid").encode()]

    def clients():
        for data in payloads:
            with socket.create_connection((host, port), timeout=10) as conn:
                conn.sendall(data)

    thread = threading.Thread(target=clients, daemon=True)
    thread.start()
    buf = io.StringIO()
    started = time.monotonic()
    summary = run_stream(files["model"], source, buf)
    thread.join(timeout=10)
    assert time.monotonic() - started < 20 and not thread.is_alive()
    assert summary["clients"] == 2 and summary["segments"] == 2
    assert summary["events_rejected"]["truncated_record"] == 1
    ref = _offline(files, 1)[0]
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    segments = [r for r in records if "segment" in r]
    assert [s["reason"] for s in segments] == ["disconnect", "disconnect"] and {s["label"] for s in segments} == {1}
    for seg in (0, 1):
        probs = np.array([r["p"] for r in records if r.get("seg") == seg])
        assert np.allclose(probs, softmax(ref.T).T, atol=1e-6)


# -- CLI -------------------------------------------------------------------------------------------------
def test_cli_stream_from_stdin_and_files_and_bad_options(files, tmp_path):
    t, u = files["ds"].events(3)
    runner = CliRunner()
    text = _text(t * 1000, u, label="mid")
    result = runner.invoke(main, ["stream", "--model", str(files["model"]), "--input", "-", "--time-unit", "ms",
                                  "--every", "5", "--top-k", "2"], input=text + "tick 400\nbogus line\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["steps"] == 5 and len(r["top"]) == 2 for r in records[:-3])
    summary = records[-1]["summary"]
    assert summary["events_rejected"]["malformed"] == 1 and summary["events_accepted"] + summary["rejected_total"] >= 500
    assert "per-step latency: median" in result.stderr
    binary = tmp_path / "feed.bin"
    binary.write_bytes(encode_events(t, u) + encode_end())
    result = runner.invoke(main, ["stream", "--model", str(files["model"]), "--input", str(binary),
                                  "--output", "table", "--quiet"])
    assert result.exit_code == 0 and result.stdout.splitlines()[0].split()[:3] == ["step", "seg", "t_s"]
    assert result.stderr == ""
    for bad in (["--every", "0"], ["--save-every", "10"], ["--input", "tcp:notaport"], ["--sample", "3"]):
        args = ["stream", "--model", str(files["model"]), "--input", str(binary), *bad]
        if "--input" in bad:
            args = ["stream", "--model", str(files["model"]), *bad]
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (bad, result.output)
        assert "--" in result.output
    silence = "0.001 5\n3.0 5\n"                                     # 299 silent steps between two events
    for options, steps in (([], 1 + N_STEPS + 1), (["--max-silent-steps", "5"], N_STEPS),
                           (["--max-silent-steps", "5", "--pad-to-steps", "0"], 1 + 5 + 1),
                           (["--max-silent-steps", "0"], 301),
                           (["--max-silent-steps", "0", "--pad-to-steps", "400"], 400)):
        result = runner.invoke(main, ["stream", "--model", str(files["model"]), "--input", "-", "--quiet", *options],
                               input=silence)
        summary = json.loads(result.stdout.splitlines()[-1])["summary"]
        assert result.exit_code == 0 and summary["steps"] == steps, (options, summary["steps"])
    result = runner.invoke(main, ["stream", "--model", str(files["model"]), "--input", "-", "--recv-timeout", "0"])
    assert result.exit_code == 2 and "--recv-timeout" in result.output


def test_ticks_complete_steps_labels_and_an_absolute_clock(files):
    runner = StreamRunner(files["model"])
    runner.push([0.005], [350])
    assert runner.poll() == []                          # step 0 is still open
    runner.advance(0.0101)
    assert [r.index for r in runner.poll()] == [0]      # its end has passed
    runner.set_label("high")                            # step 1 holds no event yet: it gets the label
    runner.push([0.012], [351])
    runner.set_label(0)                                 # step 1 has an event: from step 2 on
    runner.advance(0.035)
    assert [(r.index, r.label) for r in runner.poll()] == [(1, 2), (2, 0)]
    assert not runner.set_label("nobody") and runner.rejected["bad_label"] == 1
    epoch = 1.7e9 + np.array([0.0, 0.004, 0.011, 0.027])
    zero = StreamRunner(files["model"])
    assert zero.push(epoch, [1, 2, 3, 4]) == 0 and zero.rejected["time_jump"] == 4
    first = StreamRunner(files["model"], origin="first")
    assert first.push(epoch, [1, 2, 3, 4]) == 4
    first.finish()
    steps = _steps(first.poll())
    assert [s.n_events for s in steps] == [2, 1, 1] + [0] * (N_STEPS - 3)
    assert steps[0].t_end_s == pytest.approx(1.7e9 + 0.01)


def test_snapshot_resume_with_axonal_recurrent_delays(files, tmp_path):
    cfg = NetworkConfig(n_inputs=140, n_hidden=12, n_outputs=3, max_delay_steps=6, input_delays="axonal",
                        recurrent=True, recurrent_delays="synaptic")
    model = tmp_path / "axonal.h5"
    save_model(model, Network(cfg, seed=2), class_names=NAMES, training={"run": RunConfig(n_steps=30).to_dict()})
    lc = LearningConfig(update="online", update_every_steps=4, lr_weights=0.05, lr_delays=0.5)
    t, u = files["ds"].events(2)
    cut = t.size // 3
    runs = []
    for pause in (False, True):
        runner = StreamRunner(model, adapt=True, learning_config=lc)
        runner.set_label(1)
        runner.push(t[:cut], u[:cut])
        runner.poll()
        if pause:
            snap = runner.snapshot()
            runner = StreamRunner(model, adapt=True, learning_config=lc)
            runner.restore(snap)
        runner.push(t[cut:], u[cut:])
        runner.finish()
        runs.append((np.stack([s.y for s in _steps(runner.poll())]), _params(runner.net)))
    assert np.array_equal(runs[0][0], runs[1][0]) and _same_params(runs[0][1], runs[1][1])


# -- issue 14: stream and eval agree, long silences, line and record limits, idle clients -------------------
def test_stream_and_eval_agree_on_the_binned_split(files):
    """An ended sample is padded to the model's n_steps: the stream runs exactly what eval runs."""
    ds, net = files["ds"], load_model(files["model"]).net
    x = ds.frames_batch(np.arange(len(ds)), dt_ms=DT_MS, n_steps=N_STEPS, pool=POOL)     # as load_split bins
    predictions = infer(net, x)[0]
    buf = io.StringIO()
    summary = run_stream(files["model"], str(files["data"]), buf)
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["class"] for r in records if "segment" in r] == predictions.tolist()
    assert summary["segment_accuracy"] == pytest.approx(np.mean(predictions == ds.labels))
    assert summary["steps"] == len(ds) * N_STEPS
    for i in range(len(ds)):
        runner = StreamRunner(files["model"])
        runner.push(*ds.events(i))
        runner.end_sample()
        steps = _steps(runner.poll())
        assert np.array_equal(np.stack([s.y for s in steps]), net.run(x[:, i])[:, 0])
        assert steps[-1].vote == predictions[i]
    unpadded = StreamRunner(files["model"], pad_to_steps=0)          # the sample ends at its last event
    t, u = ds.events(0)
    unpadded.push(t, u)
    unpadded.end_sample()
    assert len(_steps(unpadded.poll())) == steps_for(t.max(), DT_MS) < N_STEPS
    empty = StreamRunner(files["model"])                             # nothing happened: nothing to pad
    empty.end_sample()
    assert empty.poll() == []


def test_a_long_silence_runs_at_most_max_silent_steps(files, tmp_path):
    feed = tmp_path / "hour.txt"
    feed.write_text("0.001 5\n3599 5\n")                             # legal: within max_jump_s
    buf = io.StringIO()
    summary = run_stream(files["model"], str(feed), buf)
    steps = [json.loads(line) for line in buf.getvalue().splitlines() if '"step"' in line]
    assert summary["steps"] == len(steps) == 1 + N_STEPS + 1 and summary["events_accepted"] == 2
    assert summary["skipped_steps"] == 359900 - 1 - N_STEPS
    assert [r["k"] for r in steps] == list(range(N_STEPS + 1)) + [359900]
    assert len(buf.getvalue()) < 20_000
    runner = StreamRunner(files["model"])                            # the skip keeps the state of the last step run
    runner.push([0.001, 3599.0], [5, 6])
    runner.end_sample()
    x = np.zeros((N_STEPS + 2, 140), np.int64)
    x[0, 1] = x[-1, 1] = 1
    ref = load_model(files["model"]).net.run(x)[:, 0]
    assert np.array_equal(np.stack([s.y for s in _steps(runner.poll())]), ref)
    ticking = StreamRunner(files["model"])                           # the bound holds across ticks too
    ticking.push([0.001], [5])
    for k in range(1, 101):
        ticking.advance(k * 0.1)
    ticking.end_sample()
    assert len(_steps(ticking.poll())) == 1 + N_STEPS and ticking.summary()["skipped_steps"] == 1000 - N_STEPS
    unbounded = StreamRunner(files["model"], max_silent_steps=0)
    unbounded.push([0.001, 2.0], [5, 6])
    unbounded.end_sample()
    assert len(_steps(unbounded.poll())) == 201 and unbounded.summary()["skipped_steps"] == 0


@pytest.mark.parametrize("chunk", [1, 7, 100, 1025, 1 << 16])
def test_a_line_over_the_limit_is_rejected_whatever_the_reads(chunk):
    limit = 64
    lines = [b"0.01" + b" " * (limit - 5) + b"5",                     # exactly the limit: accepted
             b"0.02" + b" " * (limit - 4) + b"6",                     # one byte over: rejected
             b"#" * (limit + 1), b" " * (limit + 1), b"label " + b"x" * limit,
             b"0.03 7", b"0.04 " + b"8" * (3 * limit)]
    data = b"\n".join(lines) + b"\n0.05 9"                           # the last line without a newline
    assert [len(line) for line in lines[:2]] == [limit, limit + 1]
    parser = TextParser("s", max_line_bytes=limit)
    items = [item for a in range(0, len(data), chunk) for item in parser.feed(data[a:a + chunk])] + parser.close()
    events = np.concatenate([item[1] for item in items if item[0] == "events"])
    assert events.tolist() == [0.01, 0.03, 0.05]
    assert sum(item[2] for item in items if item[0] == "reject") == 5
    assert {item[1] for item in items if item[0] == "reject"} == {"oversized_record"}


@pytest.mark.parametrize("chunk", [1, 5, 12, 13, 1 << 16])
def test_a_record_whose_count_exceeds_its_payload_ends_at_the_next_header(chunk):
    lying = bytearray(encode_events([0.01, 0.02], [5, 6]))
    lying[8:12] = (3).to_bytes(4, "little")                           # says 3 events, holds 2
    odd = bytearray(encode_events([0.03], [7]) + b"\x01\x02\x03")    # holds 1 event and 3 stray bytes
    odd[8:12] = (9).to_bytes(4, "little")
    long_t = 0.1 + np.arange(1000) * 1e-4                              # a long payload: searched by words
    long = bytearray(encode_events(long_t, np.arange(1000) % 700) + b"\x07" * 5)
    long[8:12] = (1002).to_bytes(4, "little")
    data = (bytes(lying) + encode_events([0.05, 0.06], [7, 8]) + bytes(odd) + encode_label(2) + bytes(long)
            + encode_end())
    parser = BinaryParser()
    items = [item for a in range(0, len(data), chunk) for item in parser.feed(data[a:a + chunk])] + parser.close()
    assert [(k, v[0].tolist(), v[1].tolist()) for k, *v in items if k == "events"] == [
        ("events", [0.01, 0.02], [5, 6]), ("events", [0.05, 0.06], [7, 8]), ("events", [0.03], [7]),
        ("events", long_t.tolist(), (np.arange(1000) % 700).tolist())]
    assert [item for item in items if item[0] != "events"] == [
        ("reject", "truncated_record", 1), ("reject", "truncated_record", 1), ("label", 2),
        ("reject", "truncated_record", 1), ("end", "end")]


def test_an_idle_tcp_client_is_disconnected_after_the_receive_timeout(files):
    t, u = files["ds"].events(1)
    source = TcpSource(port=0, max_clients=2, accept_timeout_s=10, recv_timeout_s=0.5)
    host, port = source.address
    connected, release = threading.Event(), threading.Event()

    def idle():
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(b"0.01 5\n")                                # then nothing, holding the connection
            connected.set()
            release.wait(timeout=20)

    def second():                                                    # queued behind the idle client
        connected.wait(timeout=10)
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(_text(t, u, label="mid").encode())

    threads = [threading.Thread(target=f, daemon=True) for f in (idle, second)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    logged = []
    buf = io.StringIO()
    summary = run_stream(files["model"], source, buf, log=logged.append)
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert time.monotonic() - started < 10 and not any(thread.is_alive() for thread in threads)
    segments = [json.loads(line) for line in buf.getvalue().splitlines() if '"segment"' in line]
    assert summary["clients"] == 2 and [s["reason"] for s in segments] == ["timeout", "disconnect"]
    assert summary["events_accepted"] == 1 + t.size
    assert any("sent nothing for 0.5 s" in line for line in logged)


def test_the_stream_package_reads_no_private_name_of_another_object_or_module():
    """Issue 16: the stream modules talk through public names only (self's own privates excepted)."""
    import ast
    from pathlib import Path

    import onlinedelay.stream as package

    found = []
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []
    assert max(len(path.read_text().splitlines()) for path in Path(package.__file__).parent.glob("*.py")) <= 500


def test_events_exactly_on_step_boundaries_start_their_step(files):
    """Issue 14: 0.29 s * 100 steps/s is 28.999999999999996 in float64; the binning slack puts it in step 29."""
    k = np.arange(1, 100)
    times = k / 100.0
    assert (times * 100.0 < k).sum() == 3                            # 0.29, 0.57, 0.58: the cases that need it
    runner = StreamRunner(files["model"], pad_to_steps=0)
    assert runner.step_of(times).tolist() == k.tolist()
    runner.push(times, np.full(k.size, 5))
    runner.end_sample()
    steps = _steps(runner.poll())
    assert [s.n_events for s in steps] == [0] + [1] * k.size         # one event at the start of each step 1 .. 99
