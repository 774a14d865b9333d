"""Delay pruning: accuracy as a growing share of the input delays is set to zero (no retraining)."""

from __future__ import annotations

import numpy as np

from ..config import LearningConfig
from ..evaluate import evaluate_arrays, load_eval_data

PRUNE_FRACTIONS = tuple(k / 10 for k in range(11))
PRUNE_ORDERS = ("shortest-first", "longest-first", "random")


def prune_delays(net, x, labels, fractions=PRUNE_FRACTIONS, orders=PRUNE_ORDERS, loss_start_step: int = 0,
                 seed: int = 0) -> dict:
    """Accuracy as a growing share of the input delays is set to zero (no retraining).

    Parameters
    ----------
    net : Network with input delays (left as it was on return); quantized delays are set through
        their shadow delays, so a zeroed delay moves to the grid value at 0
    x : (T, N, n_inputs) spike counts; labels : (N,) int
    fractions : shares of the delays set to 0, in [0, 1]
    orders : any of "shortest-first", "longest-first" (by the real delay, ties in index order)
        and "random" (a permutation drawn from ``seed``)

    Returns
    -------
    {order: [accuracy per fraction]}
    """
    delays = net.params.input.delay.astype(np.float64).copy()
    learned = net.params.input.learned_delay.copy()      # the shadow delays of quantized ones
    if delays.size == 0:
        raise ValueError("prune_delays: the network has no input delays (input_delays='none')")
    ranking = {"shortest-first": np.argsort(delays, kind="stable"),
               "longest-first": np.argsort(-delays, kind="stable"),
               "random": np.random.default_rng(seed).permutation(delays.size)}
    curves = {}
    try:
        for order in orders:
            if order not in ranking:
                raise ValueError(f"order={order!r} is unknown; choose from {', '.join(ranking)}")
            accs = []
            for f in fractions:
                pruned = delays.copy()
                pruned[ranking[order][:round(f * delays.size)]] = 0.0
                net.set_delays("input", pruned)
                accs.append(evaluate_arrays(net, x, labels, loss_start_step)["accuracy"])
            curves[order] = accs
    finally:
        net.set_delays("input", learned)
    return curves


def pruning_curve(model_path, test_dataset=None, split="test", data_dir=None, fractions=PRUNE_FRACTIONS,
                  orders=PRUNE_ORDERS, seed: int = 0) -> dict:
    """:func:`prune_delays` on a saved model and its test data.

    Returns {"fractions", "curves": {order: [accuracy]}, "n_delays", "mode", "model"}.
    """
    loaded, x, labels = load_eval_data(model_path, test_dataset, split, data_dir)[:3]
    lc = loaded.learning_config or LearningConfig()
    curves = prune_delays(loaded.net, x, labels, fractions, orders, lc.loss_start_step, seed)
    return {"fractions": list(fractions), "curves": curves, "n_delays": int(loaded.net.params.input.delay.size),
            "mode": loaded.net.config.input_delays, "model": str(model_path)}
