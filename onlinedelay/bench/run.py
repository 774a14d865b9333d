"""The whole benchmark run: every row of the plan, streaming latency, memory, peers and ratios."""

from __future__ import annotations

import time
from typing import Callable

from ..provenance import load_average, machine_info
from .configs import SPARSE_PAIRS
from .measure import (measure_paired_batches, measure_paired_threads, measure_row, measure_streaming,
                      training_calls)
from .memory import measure_memory
from .peers import measure_peers
from .plan import Plan

SCHEMA = "onlinedelay-bench/1"


def run_bench(plan: Plan, progress: Callable[[str], None] | None = None) -> dict:
    """Measure everything the plan asks for.

    Parameters
    ----------
    plan : Plan, from :func:`make_plan`
    progress : optional callable receiving one line per stage (the CLI sends them to stderr)

    Returns
    -------
    dict (JSON-serialisable)::

        schema, machine (see :func:`onlinedelay.provenance.machine_info`), settings (the plan),
        results: one dict per (config, batch_size, threads) with name, config, description,
            network (its NetworkConfig as a dict), batch_size, threads, steps, synapses,
            synapse_steps_per_batch, input_spikes_per_sample,
            training  {samples_per_s, ns_per_synapse_step, ns_per_synapse_step_over_bound,
                       samples_per_s_over_bound, batch_ms {median, min, max}, hidden_spikes_per_sample},
            inference {samples_per_s, ns_per_synapse_step, batch_ms},
            streaming {latency_us_median, latency_us_p99, latency_us_max, steps_timed, steps_per_s}
                      (batch 1, measured once per config and thread count),
            bound     {trace_arrays, triad_elements, triad_ns_per_element, triad_gb_per_s,
                       ns_per_synapse_step, training_samples_per_s},
            peers     (with --peers) [{peer, training, inference, training_ratio, inference_ratio,
                       paired {training, inference: {rounds, median, min, max}}} or {peer, missing}]
                       -- see :mod:`onlinedelay.bench.peers`,
        memory: {config name: see :func:`measure_memory`},
        derived: sparse_speedup and thread_speedup (training samples/s ratios from this run; a thread
            ratio with ``paired`` {rounds, median, min, max}: the alternated pairs of runs) and
            batch1_slowdown (batch 1's training time per synapse-step over the largest batch's, per
            config and thread count: ``rows_ratio`` from the rows' medians, ``paired`` in alternation),
        wall_s: seconds the whole run took.

    ``machine`` also holds ``load_average_start`` and ``load_average_end``.
    """
    say = progress or (lambda message: None)
    started = time.perf_counter()
    load_start = load_average()
    rows = plan.rows()
    results, streaming = [], {}
    for i, (config, batch, threads) in enumerate(rows, 1):
        name = f"{config.name}/b{batch}/t{threads}"
        say(f"[{i}/{len(rows)}] {name}: training, triad bound, inference")
        row = measure_row(config, batch, threads, plan)
        if (config.name, threads) not in streaming:
            say(f"[{i}/{len(rows)}] {name}: streaming latency (batch 1)")
            streaming[config.name, threads] = measure_streaming(config, threads, plan)
        result = {"name": name, "config": config.name, "description": config.description,
                  "network": config.network_config().to_dict(), "batch_size": batch, "threads": threads,
                  "steps": plan.steps, **row, "streaming": streaming[config.name, threads]}
        if plan.peers:
            say(f"[{i}/{len(rows)}] {name}: peers on the same batch")
            result["peers"] = measure_peers(config, batch, threads, plan, row,
                                            our_calls=lambda: training_calls(config, batch, threads, plan))
        results.append(result)
    paired = []
    for config, batch, threads in (row for row in rows if row[2] > 1 and 1 in plan.threads):
        say(f"{config.name}/b{batch}: {threads} threads against 1, alternated pairs of training runs")
        paired.append({"config": config.name, "batch_size": batch, "threads": threads,
                       **measure_paired_threads(config, batch, threads, plan)})
    paired_batches = []
    big = max(plan.batch_sizes)
    for config, threads in ((c, t) for c in plan.configs for t in plan.threads if 1 in plan.batch_sizes and big > 1):
        say(f"{config.name}/t{threads}: batch 1 against batch {big}, alternated pairs of training runs")
        paired_batches.append({"config": config.name, "batch_size": big, "threads": threads,
                               **measure_paired_batches(config, big, threads, plan)})
    memory = {}
    for config in plan.configs if plan.memory_steps else ():
        say(f"memory: {config.name} at T = {', '.join(map(str, plan.memory_steps))} (fresh process each)")
        memory[config.name] = measure_memory(config, plan.memory_steps, plan.seed)
    machine = machine_info()
    machine["load_average_start"], machine["load_average_end"] = load_start, load_average()
    return {"schema": SCHEMA, "machine": machine, "settings": plan.to_dict(), "results": results,
            "memory": memory, "derived": derived_ratios(results, paired, paired_batches),
            "wall_s": time.perf_counter() - started}


def derived_ratios(results, paired=(), paired_batches=()) -> dict:
    """Side-by-side ratios of training samples/s measured in this run (sparse vs dense, threads, batch 1 against
    the largest batch per synapse-step); a thread ratio also gets its paired measurement (``paired``: from
    :func:`measure_paired_threads`), a batch ratio its own (``paired_batches``: :func:`measure_paired_batches`)."""
    by_key = {(r["config"], r["batch_size"], r["threads"]): r["training"]["samples_per_s"] for r in results}
    sparse = []
    for dense, sparse_name in SPARSE_PAIRS:
        for (name, batch, threads), value in by_key.items():
            if name == dense and (sparse_name, batch, threads) in by_key:
                sparse.append({"dense": dense, "sparse": sparse_name, "batch_size": batch, "threads": threads,
                               "training_speedup": by_key[sparse_name, batch, threads] / value})
    thread = []
    for (name, batch, threads), value in by_key.items():
        if threads == 1:
            for (other, b2, t2), v2 in by_key.items():
                if other == name and b2 == batch and t2 > 1:
                    pair = [{k: p[k] for k in ("rounds", "median", "min", "max")} for p in paired
                            if (p["config"], p["batch_size"], p["threads"]) == (name, batch, t2)]
                    thread.append({"config": name, "batch_size": batch, "threads": t2,
                                   "training_speedup": v2 / value, **({"paired": pair[0]} if pair else {})})
    batch = []
    ns = {(r["config"], r["batch_size"], r["threads"]): r["training"]["ns_per_synapse_step"] for r in results}
    for p in paired_batches:
        key_big, key_one = (p["config"], p["batch_size"], p["threads"]), (p["config"], 1, p["threads"])
        rows = {"rows_ratio": ns[key_one] / ns[key_big]} if key_big in ns and key_one in ns else {}
        batch.append({"config": p["config"], "batch_size": p["batch_size"], "threads": p["threads"], **rows,
                      "paired": {k: p[k] for k in ("rounds", "median", "min", "max")}})
    return {"sparse_speedup": sparse, "thread_speedup": thread, "batch1_slowdown": batch}
