"""The report's pictures, drawn with matplotlib (Agg) into PNGs that the page inlines, so it
opens from disk with no server and no network."""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: drawing to files only

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from scenarios.history import FAIL, OK, UNKNOWN
from scenarios.report.results import Scenario

COLOURS = {OK: "#2e7d32", FAIL: "#ef6c00", UNKNOWN: "#c62828"}


def png(figure: Figure) -> str:
    """The figure as a data: URI, and the figure closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def timeline(scenario: Scenario) -> str:
    """Each operation at its call time, its latency on a log scale, coloured by outcome; the
    fault windows shaded and labelled; below, successful operations per second."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True, height_ratios=[3, 1])
    start = min(op.call for op in scenario.ops)
    for outcome, colour in COLOURS.items():
        chosen = [op for op in scenario.ops if op.outcome == outcome and not op.kind.startswith("final")]
        top.scatter(
            [op.call - start for op in chosen],
            [max(0.1, (op.ret - op.call) * 1000) for op in chosen],
            s=4,
            c=colour,
            label=f"{outcome} ({len(chosen)})",
            alpha=0.7,
            linewidths=0,
        )
    top.set_yscale("log")
    top.set_ylabel("latency ms")
    top.legend(loc="upper right", fontsize=8, markerscale=3)
    for begin, end, label in _windows(scenario.events):
        for axis in (top, bottom):
            axis.axvspan(begin - start, end - start, color="#90a4ae", alpha=0.25, linewidth=0)
        top.text(begin - start, top.get_ylim()[1], label, fontsize=7, va="top", rotation=90, color="#37474f")
    per_second = Counter(int(op.ret - start) for op in scenario.ops if op.outcome == OK)
    seconds = sorted(per_second)
    bottom.plot(seconds, [per_second[s] for s in seconds], color="#1565c0", linewidth=1)
    bottom.set_ylabel("ok ops/s")
    bottom.set_xlabel("seconds since the first call")
    top.set_title(f"{scenario.mode} / {scenario.name}", fontsize=10)
    return png(figure)


def _windows(events: Sequence[tuple[float, str]]) -> list[tuple[float, float, str]]:
    """(applied, healthy, fault name) for each fault, from the timeline."""
    windows, applied, name = [], None, ""
    for at, event in sorted(events):
        if event.startswith("apply "):
            applied, name = at, event.removeprefix("apply ")
        elif event == "healthy" and applied is not None:
            windows.append((applied, at, name))
            applied = None
    return windows


def unavailability(rows: Sequence[tuple[str, str, float, float]]) -> str:
    """One chart: write unavailability per fault kind (median bar, worst as a whisker), one
    bar per mode. ``rows`` are (mode, fault kind, median s, worst s)."""
    kinds = sorted({kind for _, kind, _, _ in rows})
    modes = sorted({mode for mode, _, _, _ in rows})
    figure, axis = plt.subplots(figsize=(11, 3.6))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        mine = {kind: (median, worst) for m, kind, median, worst in rows if m == mode}
        xs = [k + i * width for k in range(len(kinds))]
        medians = [mine.get(kind, (0.0, 0.0))[0] for kind in kinds]
        spread = [mine.get(kind, (0.0, 0.0))[1] - mine.get(kind, (0.0, 0.0))[0] for kind in kinds]
        axis.bar(xs, medians, width, yerr=[[0] * len(kinds), spread], capsize=3, label=mode)
    axis.set_xticks([k + width * (len(modes) - 1) / 2 for k in range(len(kinds))], kinds, fontsize=8, rotation=15)
    axis.set_ylabel("write unavailability s\n(median, whisker: worst)")
    axis.legend(fontsize=8)
    return png(figure)


def load_throughput(mode: str, series: Sequence[dict[str, float]]) -> str:
    figure, axis = plt.subplots(figsize=(11, 2.6))
    start = series[0]["t"] if series else 0.0
    axis.plot([p["t"] - start for p in series], [p["rps"] for p in series], label="requests/s", color="#1565c0")
    axis.plot([p["t"] - start for p in series], [p["fails"] for p in series], label="failures/s", color="#c62828")
    axis.set_xlabel("seconds")
    axis.set_title(f"{mode}: load test throughput", fontsize=10)
    axis.legend(fontsize=8)
    return png(figure)
