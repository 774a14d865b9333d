"""Results -> text: JSON lines or a compact table per step (or window of steps), and the summary."""

from __future__ import annotations

import json

import numpy as np

from ..errors import check_choice, check_int
from .protocol import StreamOptionError, check_option
from .results import SegmentResult, StepResult

__all__ = ["OutputWriter", "format_summary"]


class OutputWriter:
    """Writes results as JSON lines or a compact table, per step or per window of ``every`` steps.

    Parameters
    ----------
    out : text file object
    class_names : list of str
    output : "json" or "table"
    every : int, steps per output line (probabilities averaged over the window; windows end at resets)
    top_k : int or None, write the k most probable classes instead of every probability
    """

    def __init__(self, out, class_names, output="json", every=1, top_k=None):
        self._dumps = json.dumps
        self.out = out
        self.names = list(class_names)
        self.output = check_option(check_choice, "output", output, ("json", "table"))
        self.every = check_option(check_int, "every", every, 1)
        self.top_k = check_option(check_int, "top_k", top_k, 1, allow_none=True)
        if self.top_k is not None and self.top_k > len(self.names):
            raise StreamOptionError("top_k", f"top_k={top_k} is more than the {len(self.names)} classes")
        self._window = None
        self._header = False

    def write(self, result) -> None:
        if isinstance(result, SegmentResult):
            self.flush()
            self._segment(result)
            return
        if self.every == 1:
            self._step(result, result.probs, 1, result.n_events)
            return
        w = self._window
        if w is None:
            w = self._window = [np.zeros(len(self.names)), 0, 0, None]
        w[0] += result.probs
        w[1] += 1
        w[2] += result.n_events
        w[3] = result
        if w[1] >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write a partial window."""
        w, self._window = self._window, None
        if w is not None and w[1]:
            self._step(w[3], w[0] / w[1], w[1], w[2])

    def _step(self, r: StepResult, probs, n_steps, n_events) -> None:
        k = int(np.argmax(probs))
        if self.output == "json":
            rec = {"step": r.step, "seg": r.segment, "k": r.index, "t_s": round(r.t_end_s, 9), "events": n_events}
            if n_steps > 1 or self.every > 1:
                rec["steps"] = n_steps
            rec.update({"class": k, "name": self.names[k]})
            if r.label >= 0:
                rec["label"] = r.label
            if self.top_k:
                order = np.argsort(-probs, kind="stable")[:self.top_k]
                rec["top"] = [[self.names[i], round(float(probs[i]), 6)] for i in order]
            else:
                rec["p"] = [round(float(p), 6) for p in probs]
            self.out.write(self._dumps(rec) + "\n")
            return
        if not self._header:
            self.out.write(f"{'step':>8} {'seg':>4} {'t_s':>10} {'events':>6} {'class':>5}  {'name':<12} "
                           f"{'p':>6}" + ("  top" if self.top_k else "") + "\n")
            self._header = True
        line = (f"{r.step:>8d} {r.segment:>4d} {r.t_end_s:>10.3f} {n_events:>6d} {k:>5d}  "
                f"{self.names[k][:12]:<12} {probs[k]:>6.3f}")
        if self.top_k:
            order = np.argsort(-probs, kind="stable")[:self.top_k]
            line += "  " + ", ".join(f"{self.names[i]} {probs[i]:.3f}" for i in order)
        self.out.write(line + "\n")

    def _segment(self, s: SegmentResult) -> None:
        name = None if s.prediction is None else self.names[s.prediction]
        if self.output == "json":
            rec = {"segment": s.segment, "steps": s.steps, "class": s.prediction, "name": name, "reason": s.reason}
            if s.label >= 0:
                rec["label"] = s.label
            self.out.write(self._dumps(rec) + "\n")
        else:
            label = f" (label {self.names[s.label]})" if s.label >= 0 else ""
            self.out.write(f"-- segment {s.segment} ({s.reason}): {s.steps} steps, vote {name}{label}\n")

    def summary(self, summary: dict) -> None:
        """The final summary as one JSON line (json output only)."""
        if self.output == "json":
            self.out.write(self._dumps({"summary": summary}) + "\n")


def format_summary(summary: dict) -> str:
    """Human-readable lines of a :func:`run_stream` summary."""
    lat = summary["latency_us"]
    rejected = ", ".join(f"{k} {v}" for k, v in summary["events_rejected"].items() if v) or "none"
    lines = [f"{summary['steps']} steps in {summary['segments']} segments; {summary['events_accepted']} events "
             f"accepted, {summary['rejected_total']} rejected ({rejected})"]
    if summary.get("skipped_steps"):
        lines.append(f"{summary['skipped_steps']} silent steps skipped (stretches longer than --max-silent-steps)")
    if lat["median"] is not None:
        lines.append(f"per-step latency: median {lat['median']:.1f} us, p99 {lat['p99']:.1f} us, "
                     f"max {lat['max']:.1f} us")
    if "wall_s" in summary:
        lines.append(f"{summary['wall_s']:.2f} s wall: {summary['events_per_s']:.0f} events/s, "
                     f"{summary['steps_per_s']:.0f} steps/s")
    if summary.get("segment_accuracy") is not None:
        lines.append(f"segment accuracy {summary['segment_accuracy']:.4f} on {summary['labelled_segments']} "
                     f"labelled segments")
    if summary.get("adapt"):
        a = summary["adapt"]
        lines.append(f"adaptation: {a['updates']} updates ({a['reverted']} reverted) from {a['labelled_steps']} "
                     f"labelled steps; {summary.get('saves', 0)} saves")
    return "\n".join(lines)
