"""Figures for ablation reports and the walkthrough notebook (matplotlib, an optional extra).

Every function draws into ``ax`` when one is given (e.g. from ``plt.subplots()`` in a notebook)
and otherwise into a new :class:`matplotlib.figure.Figure` built without pyplot, so the library
never touches pyplot's global figure list; it returns the figure.  Install matplotlib with
``pip install 'onlinedelay[plots]'``; without it every function raises ``ImportError`` saying so.
"""

from __future__ import annotations

import numpy as np

__all__ = ["require_matplotlib", "spike_raster", "learning_curve", "delay_histogram", "pruning_curves",
           "accuracy_by_config", "pareto_front", "pareto_accuracy_footprint", "bit_budget_heatmap"]

INSTALL_HINT = "pip install 'onlinedelay[plots]'"


def require_matplotlib():
    """Import matplotlib or raise ``ImportError`` naming the extra that provides it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401 - checks the OO API is importable
    except ImportError as err:
        raise ImportError(f"plots need matplotlib, which is not installed ({err}); {INSTALL_HINT}") from None
    return matplotlib


def _axes(ax, figsize):
    if ax is not None:
        return ax
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").add_subplot()


def spike_raster(times_s, units, ax=None, title=None):
    """Dot raster of one sample's events.

    Parameters
    ----------
    times_s : ndarray, shape (n,), float, seconds
    units : ndarray, shape (n,), int, channel ids
    ax : matplotlib Axes or None
    title : str or None
    """
    ax = _axes(ax, (7, 3.5))
    ax.scatter(np.asarray(times_s) * 1000.0, units, s=1, c="k", marker=".", linewidths=0)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("channel")
    if title:
        ax.set_title(title)
    return ax.figure


def learning_curve(metrics, ax=None, title=None):
    """Train and validation accuracy per epoch (and the training loss on a second axis).

    metrics : list of dicts, one per epoch, as in a run's ``metrics.jsonl``.
    """
    ax = _axes(ax, (6, 3.5))
    epochs = [m["epoch"] for m in metrics]
    ax.plot(epochs, [m["train_accuracy"] for m in metrics], "o-", label="train accuracy")
    valid = [m.get("valid_accuracy") for m in metrics]
    if any(v is not None for v in valid):
        ax.plot(epochs, [np.nan if v is None else v for v in valid], "s-", label="validation accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    loss_ax = ax.twinx()
    loss_ax.plot(epochs, [m["train_loss"] for m in metrics], "--", color="grey", label="train loss")
    loss_ax.set_ylabel("loss")
    lines = ax.get_legend_handles_labels()
    more = loss_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize="small")
    if title:
        ax.set_title(title)
    return ax.figure


def delay_histogram(delays, max_delay_steps, ax=None, title=None):
    """Histograms of delays (steps), one outline per entry of ``delays``.

    delays : dict of label -> ndarray of delays in steps
    max_delay_steps : int, right edge of the bins (one bin per step)
    """
    ax = _axes(ax, (6, 3.5))
    bins = np.arange(0, max_delay_steps + 2) - 0.5
    drawn = False
    for label, values in delays.items():
        values = np.asarray(values, np.float64)
        if values.size:
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, density=True, label=label)
            drawn = True
    ax.set_xlabel("delay (steps)")
    ax.set_ylabel("fraction of delays")
    if drawn:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax.figure


def pruning_curves(curves, ax=None, title=None):
    """Accuracy against the fraction of delays set to zero, one line per pruning order.

    curves : dict of order -> (fractions (K,), accuracy mean (K,), accuracy std (K,) or None)
    """
    ax = _axes(ax, (6, 3.5))
    for order, (fractions, mean, std) in curves.items():
        x = 100.0 * np.asarray(fractions, np.float64)
        mean = np.asarray(mean, np.float64)
        ax.plot(x, mean, "o-", markersize=3, label=order)
        if std is not None:
            std = np.asarray(std, np.float64)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("delays set to zero (%)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax.figure


def accuracy_by_config(names, accuracies, ax=None, title=None, ylabel="test accuracy"):
    """Mean accuracy per configuration as bars with a ± std error bar and one dot per seed.

    names : list of str
    accuracies : list of 1-D arrays (one value per seed; NaN for a missing or diverged run)
    """
    ax = _axes(ax, (max(4.0, 1.1 * len(names) + 1.5), 3.5))
    x = np.arange(len(names))
    means, stds = [], []
    for values in accuracies:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        means.append(v.mean() if v.size else np.nan)
        stds.append(v.std(ddof=1) if v.size > 1 else 0.0)
    ax.bar(x, means, yerr=stds, capsize=4, color="#9ecae1", edgecolor="#3182bd")
    for i, values in enumerate(accuracies):
        v = np.asarray(values, np.float64)
        ax.plot(np.full(v.size, i), v, "k.", markersize=4)
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    return ax.figure


def pareto_front(footprints, accuracies) -> list:
    """Indices of the points no other point beats (smaller or equal footprint and higher accuracy),
    by increasing footprint.  NaN accuracies are never on the front."""
    points = sorted((f, -a, i) for i, (f, a) in enumerate(zip(footprints, accuracies)) if np.isfinite(a))
    front, best = [], -np.inf
    for _, neg_acc, i in points:
        if -neg_acc > best:
            front.append(i)
            best = -neg_acc
    return front


def pareto_accuracy_footprint(names, footprint_bits, accuracies, ax=None, title=None):
    """Mean test accuracy against the memory footprint (bits, log axis), one labelled point per
    configuration with a ± std bar, and the Pareto front as a step line.

    names : list of str; footprint_bits : (n,) bits; accuracies : list of 1-D arrays (one per seed)
    """
    ax = _axes(ax, (6.5, 4.2))
    means = np.array([np.nanmean(a) if np.isfinite(np.asarray(a, float)).any() else np.nan for a in accuracies])
    stds = np.array([np.nanstd(a, ddof=1) if np.isfinite(np.asarray(a, float)).sum() > 1 else 0.0 for a in accuracies])
    fp = np.asarray(footprint_bits, np.float64)
    ax.errorbar(fp, means, yerr=stds, fmt="o", color="#3182bd", capsize=3)
    for name, x, y in zip(names, fp, means):
        if np.isfinite(y):
            ax.annotate(name, (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    front = pareto_front(fp, means)
    if front:
        ax.step(fp[front], means[front], where="post", color="#e6550d", label="Pareto front")
        ax.legend(fontsize="small", loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("memory footprint (bits)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    return ax.figure


def bit_budget_heatmap(weight_labels, delay_labels, accuracy, footprint_bits, ax=None, title=None):
    """Mean test accuracy over weight precision (columns) x delay precision (rows), each cell
    annotated with its accuracy and footprint (kbit).

    accuracy, footprint_bits : (len(delay_labels), len(weight_labels)) arrays (NaN: no result)
    """
    ax = _axes(ax, (1.2 * len(weight_labels) + 2.5, 0.9 * len(delay_labels) + 1.8))
    acc = np.asarray(accuracy, np.float64)
    image = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for r in range(acc.shape[0]):
        for c in range(acc.shape[1]):
            text = "–" if not np.isfinite(acc[r, c]) else f"{acc[r, c]:.2f}\n{footprint_bits[r][c] / 1000:.1f} kbit"
            ax.text(c, r, text, ha="center", va="center", fontsize="x-small",
                    color="white" if not np.isfinite(acc[r, c]) or acc[r, c] < 0.6 else "black")
    ax.set_xticks(np.arange(len(weight_labels)), weight_labels)
    ax.set_yticks(np.arange(len(delay_labels)), delay_labels)
    ax.set_xlabel("weight precision")
    ax.set_ylabel("delays")
    ax.figure.colorbar(image, ax=ax, label="test accuracy")
    if title:
        ax.set_title(title)
    return ax.figure
