"""An independent discrete-time interpreter of NIR graphs in plain NumPy (not onlinedelay's kernels
nor its export code): what a consumer of our documented NIR mapping would run.

Per step t, nodes in topological order of the graph without its back edges (found by a depth-first
walk from the Input); an edge closing a cycle carries its source's value of step t - 1 (zero at
t = 0).  A node with several inputs gets their sum.  Nodes:

* Input: the step's input vector; Output: its input.
* Linear ``W x``, Affine ``W x + b``; a Linear whose metadata holds a 2-D ``delay_steps`` matrix D
  computes ``sum_i W_ji x_i[t - D_ji]``.
* Delay: ``x[t - k]`` elementwise, k = delay / dt steps (a FIFO; zero before the start).
* LIF (Euler at dt): ``v[t] = v[t-1] + dt/tau (v_leak - v[t-1] + r I[t])``, spike ``v >= v_threshold``;
  reset "hard" (NIR's: v[t-1] replaced by v_reset after a spike) or "soft" (``- v_threshold z[t-1]``
  after the leak), read from the node's metadata, else the graph's, else hard.
* LI: ``v[t] = v[t-1] + dt/tau (v_leak - v[t-1] + r I[t])``.
"""

from __future__ import annotations

import numpy as np


def _order(nodes, edges):
    """(topological order, set of back edges) from a depth-first walk starting at the Input nodes."""
    succ = {name: [] for name in nodes}
    for src, dst in edges:
        succ[src].append(dst)
    state, order, back = {}, [], set()
    roots = [n for n, node in nodes.items() if type(node).__name__ == "Input"] + list(nodes)
    for root in roots:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = "open"
        while stack:
            name, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[name] = "done"
                order.append(name)
                stack.pop()
            elif state.get(nxt) == "open":
                back.add((name, nxt))
            elif nxt not in state:
                state[nxt] = "open"
                stack.append((nxt, iter(succ[nxt])))
    return order[::-1], back


class Interpreter:
    """Run a ``nir.NIRGraph`` step by step on a batch: ``run(x)`` with x (T, B, n_in) -> (T, B, n_out)."""

    def __init__(self, graph, dt_s: float | None = None):
        self.graph = graph
        self.meta = dict(graph.metadata or {})
        self.dt = float(self.meta["dt"]) if dt_s is None else float(dt_s)
        self.order, self.back = _order(graph.nodes, graph.edges)
        self.preds = {name: [] for name in graph.nodes}
        for src, dst in graph.edges:
            self.preds[dst].append(src)
        (self.input,) = [n for n, node in graph.nodes.items() if type(node).__name__ == "Input"]
        (self.output,) = [n for n, node in graph.nodes.items() if type(node).__name__ == "Output"]

    def _reset_mode(self, node) -> str:
        return (node.metadata or {}).get("reset", self.meta.get("reset", "hard"))

    def run(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        n_steps, batch = x.shape[:2]
        nodes = self.graph.nodes
        out, prev, state = {}, {}, {}
        result = []
        for t in range(n_steps):
            for name in self.order:
                node = nodes[name]
                kind = type(node).__name__
                if kind == "Input":
                    out[name] = x[t]
                    continue
                total = 0.0
                for src in self.preds[name]:
                    total = total + (prev.get(src, 0.0) if (src, name) in self.back else out[src])
                total = np.broadcast_to(np.asarray(total, np.float64), (batch,) + self._size(node, name)).copy() \
                    if np.ndim(total) == 0 else total
                out[name] = self._node(kind, node, name, total, state, t)
            result.append(out[self.output].copy())
            prev = {k: v.copy() for k, v in out.items()}
        return np.stack(result)

    def _size(self, node, name):
        return tuple(np.asarray(node.input_type["input"]).reshape(-1).astype(int))

    def _node(self, kind, node, name, total, state, t):
        dt = self.dt
        if kind == "Output":
            return total
        if kind in ("Linear", "Affine"):
            w = np.asarray(node.weight, np.float64)
            matrix = (node.metadata or {}).get("delay_steps")
            if matrix is not None and np.ndim(matrix) == 2:
                matrix = np.asarray(matrix).astype(int)
                hist = state.setdefault(name, {})
                hist[t] = total
                y = np.zeros((total.shape[0], w.shape[0]))
                for k in np.unique(matrix):
                    if t - k >= 0:
                        y += hist[t - k] @ np.where(matrix == k, w, 0.0).T
                hist.pop(t - int(matrix.max()), None)
            else:
                y = total @ w.T
            return y + np.asarray(node.bias, np.float64) if kind == "Affine" else y
        if kind == "Delay":
            steps = np.rint(np.asarray(node.delay, np.float64) / dt).astype(int)
            fifo = state.setdefault(name, {})
            fifo[t] = total
            y = np.zeros_like(total)
            for k in np.unique(steps):
                if t - k >= 0:
                    y[:, steps == k] = fifo[t - k][:, steps == k]
            fifo.pop(t - int(steps.max()), None)
            return y
        tau, r, v_leak = (np.asarray(getattr(node, f), np.float64) for f in ("tau", "r", "v_leak"))
        v = state.get(name, {}).get("v", np.zeros_like(total))
        if kind == "LI":
            v = v + dt / tau * (v_leak - v + r * total)
            state[name] = {"v": v}
            return v
        if kind == "LIF":
            theta, v_reset = np.asarray(node.v_threshold, np.float64), np.asarray(node.v_reset, np.float64)
            z_prev = state.get(name, {}).get("z", np.zeros_like(total))
            if self._reset_mode(node) == "soft":
                v = v + dt / tau * (v_leak - v + r * total) - theta * z_prev
            else:
                v = np.where(z_prev > 0, v_reset, v)
                v = v + dt / tau * (v_leak - v + r * total)
            z = (v >= theta).astype(np.float64)
            state[name] = {"v": v, "z": z}
            return z
        raise NotImplementedError(f"node {name!r} ({kind})")
