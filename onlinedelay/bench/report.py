"""The benchmark report as text (what ``onlinedelay bench`` prints) and as a JSON file."""

from __future__ import annotations

import json
import math

from ..atomic import atomic_path


def write_json(report: dict, path) -> None:
    """Write ``report`` to ``path`` atomically (temporary file in the same directory, then os.replace)."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(report, fh, indent=2, allow_nan=False)
        fh.write("\n")


def _fmt(value, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, no exponent for everyday magnitudes."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = int(math.floor(math.log10(abs(value))))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def _table(header, rows) -> list:
    """Aligned text table: first column left, the others right."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    align = ["<" if i == 0 else ">" for i in range(len(header))]
    line = lambda cells: "  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(cells, align, widths))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_report(report: dict) -> str:
    """The report as a readable text table (what ``onlinedelay bench`` prints)."""
    m, s = report["machine"], report["settings"]
    lines = [f"onlinedelay {m['package_version']} bench -- {m['date']}",
             f"machine: {m['cpu_model']}, {m['cores_usable']}/{m['cores']} cores, "
             + ", ".join(f"{k} {v}" for k, v in m["caches"].items())
             + f"; numpy {m['numpy_version']}, numba {m['numba_version']}"
             + (f" (threading layer {m['numba_threading_layer']})" if m.get("numba_threading_layer") else ""),
             f"load average (1, 5, 15 min) at start {m.get('load_average_start')}, at end {m.get('load_average_end')}"
             " -- other work on the machine slows every figure",
             f"T = {s['steps']} steps, {s['input_spikes_per_step'] * s['steps']:,.0f} input spikes per sample, "
             f"medians of {s['repeats']} repeat(s) after warm-up"
             + ("  [--quick: smoke test, not a measurement]" if s["quick"]
                else f", more where they fill under {s.get('timed_s', 0):g} s"),
             ""]
    header = ["config", "B", "thr", "synapses", "train/s", "ns/syn-step", "bound ns", "x bound",
              "infer/s", "step med us", "step p99 us"]
    rows = []
    for r in report["results"]:
        tr, inf, st, bd = r["training"], r["inference"], r["streaming"], r["bound"]
        rows.append([r["config"], r["batch_size"], r["threads"], f"{r['synapses']:,}", _fmt(tr["samples_per_s"]),
                     _fmt(tr["ns_per_synapse_step"]), _fmt(bd["ns_per_synapse_step"]),
                     _fmt(tr["ns_per_synapse_step_over_bound"]), _fmt(inf["samples_per_s"]),
                     _fmt(st["latency_us_median"]), _fmt(st["latency_us_p99"])])
    lines += _table(header, rows)
    lines += ["",
              "train/s, infer/s: samples per second (batch of B, one learner.run_sample / net.run per batch); "
              "ns/syn-step: training time per synapse x step x sample;",
              "bound ns: triad a = b + s*c over arrays of synapses x B x trace arrays (2 without delays, 4 with), "
              "ns per element x trace arrays; x bound = ns/syn-step / bound ns;",
              "step med/p99 us: single-sample streaming net.step latency at batch 1."]
    if report["memory"]:
        steps = next(iter(report["memory"].values()))["steps"]
        header = (["config"] + [f"T={t} MB" for t in steps] + [f"T={steps[-1]}/T={steps[0]}"]
                  + [f"+run T={t}" for t in steps] + [f"input T={steps[-1]}"])
        rows = [[name] + [_fmt(v, 4) for v in mem["peak_rss_mb"]] + [_fmt(mem["peak_rss_ratio"], 4)]
                + [_fmt(v, 2) for v in mem["sample_growth_mb"]] + [_fmt(mem["input_mb"][-1], 2)]
                for name, mem in report["memory"].items()]
        lines += ["", "peak resident memory, MB (a fresh process per T; batch 1, 1 thread, one training sample of T steps):"]
        lines += _table(header, rows)
        lines += ["T=... MB: the process's peak (VmHWM); +run: what running the sample added to the resident "
                  "memory it had before (input already drawn); input: the uint8 sample itself."]
    if any("peers" in r for r in report["results"]):
        lines += ["", _PEERS_HEAD] + _peer_lines(report["results"])
    derived = report["derived"]
    slowdowns = derived.get("batch1_slowdown", [])
    peer_pairs = [(r, p) for r in report["results"] for p in r.get("peers", ()) if "paired" in p]
    if derived["sparse_speedup"] or derived["thread_speedup"] or slowdowns or peer_pairs:
        lines += ["", "training speed ratios measured in this run:"]
        for r, p in peer_pairs:
            lines.append(f"  {r['config']} B={r['batch_size']} {r['threads']} thr: ours vs {p['peer']}, alternated "
                         f"pairs of runs: training {_pair(p['paired']['training'])}, inference "
                         f"{_pair(p['paired']['inference'])} over {p['paired']['training']['rounds']} rounds")
        for d in derived["sparse_speedup"]:
            lines.append(f"  {d['sparse']} vs {d['dense']} (B={d['batch_size']}, {d['threads']} thr): "
                         f"{_fmt(d['training_speedup'])}x")
        for d in derived["thread_speedup"]:
            pair = d.get("paired")
            paired = (f" (alternated pairs of runs: median {_fmt(pair['median'])}x, {_fmt(pair['min'])}-"
                      f"{_fmt(pair['max'])}x over {pair['rounds']} rounds)") if pair else ""
            lines.append(f"  {d['config']} B={d['batch_size']}: {d['threads']} threads vs 1: "
                         f"{_fmt(d['training_speedup'])}x{paired}")
        for d in slowdowns:
            pair = d["paired"]
            rows = f"{_fmt(d['rows_ratio'])}x from the rows; " if "rows_ratio" in d else ""
            lines.append(f"  {d['config']} {d['threads']} thr: batch 1 vs batch {d['batch_size']} per synapse-step: "
                         f"{rows}alternated pairs of runs: median {_fmt(pair['median'])}x, {_fmt(pair['min'])}-"
                         f"{_fmt(pair['max'])}x over {pair['rounds']} rounds")
    lines += ["", f"wall time {report['wall_s']:.0f} s"]
    return "\n".join(lines)


def _pair(stats: dict) -> str:
    return f"median {_fmt(stats['median'])}x ({_fmt(stats['min'])}-{_fmt(stats['max'])}x)"


_PEERS_HEAD = ("peers on the same batches at the same thread count (samples/s, medians; ratio = ours / peer, "
               "above 1: we are faster):")


def _peer_lines(results) -> list:
    header = ["config", "B", "thr", "peer", "train/s", "peer train/s", "ratio", "infer/s", "peer infer/s", "ratio"]
    rows, notes = [], []
    for r in results:
        for p in r.get("peers", ()):
            if "missing" in p:
                notes.append(f"  {r['config']}: {p['peer']} skipped, {p['missing']} not installed "
                             "(pip install 'onlinedelay[peers]')")
                continue
            rows.append([r["config"], r["batch_size"], r["threads"], p["peer"], _fmt(r["training"]["samples_per_s"]),
                         _fmt(p["training"]["samples_per_s"]), f"{_fmt(p['training_ratio'])}x",
                         _fmt(r["inference"]["samples_per_s"]), _fmt(p["inference"]["samples_per_s"]),
                         f"{_fmt(p['inference_ratio'])}x"])
    if not rows and not notes:
        return ["  (no configuration of this run has a peer: peers need one dense hidden layer without "
                "recurrence, and no delays or synaptic delays)"]
    return (_table(header, rows) if rows else []) + notes
