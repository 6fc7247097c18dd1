"""One PNG per benchmark, drawn with matplotlib's Agg backend (no display needed).

matplotlib is the `bench` extra; if it is missing, the tables still print and the chart is
skipped with one line saying how to get it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report

Draw = Callable[[Any, dict[str, Any]], None]


def _save(path: Path, draw: Draw, result: dict[str, Any], figsize: tuple[float, float],
          rows: int = 1) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(chart {path.name} skipped: matplotlib is missing; pip install -e '.[bench]')")
        return
    fig, ax = plt.subplots(rows, 1, figsize=figsize, sharex=True)
    try:
        draw(ax, result)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    print(f"Chart: {path}")


def turn_time(result: dict[str, Any], path: Path) -> None:
    def draw(ax: Any, r: dict[str, Any]) -> None:
        by_turn: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for s in r["samples"]:
            by_turn[s["turn"]].append(s)
        turns = sorted(by_turn)
        for key, label, style in (("bot", "bot time (median)", "-"),
                                  ("cpu", "bot CPU (median)", ":"),
                                  ("server", "fake model's handling (median, excluded)", "--")):
            ax.plot(turns, [report.median([x[key] for x in by_turn[t]]) * 1000 for t in turns],
                    style, label=label)
        ax.plot(turns, [report.p95([x["bot"] for x in by_turn[t]]) * 1000 for t in turns],
                "-", alpha=0.4, label="bot time (p95)")
        ax.axhline(50, color="red", linewidth=0.8, label="target at turn 60: 50 ms")
        for c in r["checkpoints"]:
            ax.axvline(c["turn"], color="grey", linewidth=0.5)
        ax.set_xlabel("turn")
        ax.set_ylabel("ms per turn")
        ax.set_title(f"Bot time per turn ({r['sessions']} sessions, 2K JPEG, zero-latency model)")
        ax.set_ylim(0, None)
        ax.legend(fontsize=8, loc="upper left", ncol=3)

    _save(path, draw, result, (9, 5))


def request_size(result: dict[str, Any], path: Path) -> None:
    def draw(axes: Any, r: dict[str, Any]) -> None:
        size, tokens = axes
        rows = r["rows"]
        turns = [x["turn"] for x in rows]
        size.plot(turns, [x["full_bytes"] / report.MB for x in rows], "--", label="full replay")
        size.plot(turns, [x["bytes"] / report.MB for x in rows], "-", label="sent")
        size.axhline(r["request_limit_bytes"] / report.MB, color="red", linewidth=0.8,
                     label="20 MB per request")
        size.set_ylabel("request MB")
        size.legend(fontsize=8, loc="upper left")
        size.set_title(f"Request size per turn, {r['model']} 2K: sent vs full replay")
        tokens.plot(turns, [x["full_tokens"] / 1000 for x in rows], "--", label="full replay")
        tokens.plot(turns, [x["tokens"] / 1000 for x in rows], "-", label="sent")
        tokens.axhline(r["token_limit"] / 1000, color="red", linewidth=0.8,
                       label=f"model limit {r['token_limit']:,}")
        tokens.set_ylabel("input tokens (thousands)")
        tokens.set_xlabel("turn")
        tokens.legend(fontsize=8, loc="upper left")

    _save(path, draw, result, (9, 7), rows=2)


def throughput(result: dict[str, Any], path: Path) -> None:
    def draw(ax: Any, r: dict[str, Any]) -> None:
        xs, ys = _in_flight(r["calls"])
        ax.plot(xs, ys, label="model calls in flight")
        ax.axhline(r["concurrency"], color="red", linewidth=0.8,
                   label=f"cap {r['concurrency']}")
        ax.axvline(r["ideal_s"], color="green", linestyle="--", label=f"ideal {r['ideal_s']:.1f} s")
        ax.axvline(r["wall_s"], color="black", linestyle=":", label=f"wall {r['wall_s']:.1f} s")
        ax.set_xlabel("seconds since the first submit")
        ax.set_ylabel("calls in flight")
        ax.set_title(f"Throughput: {r['sessions']} sessions x {r['turns']} turns, "
                     f"{r['latency_s']:g} s model, wall/ideal {r['ratio']:.3f}")
        ax.legend(fontsize=8, loc="lower center")

    _save(path, draw, result, (9, 5))


def memory(result: dict[str, Any], path: Path) -> None:
    def draw(ax: Any, r: dict[str, Any]) -> None:
        for p in r["phases"]:
            ax.plot([t for t, _, _ in p["timeline"]], [m for _, m, _ in p["timeline"]], ".-",
                    markersize=2, label=f"max concurrency {p['cap']} (peak {p['peak_mb']:.0f} MB)")
        ax.axhline(200, color="red", linewidth=0.8, label="target 200 MB")
        ax.set_xlabel("seconds since ready")
        ax.set_ylabel("VmRSS MB")
        ax.set_title(f"Playground RSS: {r['stored']:,} stored sessions, {r['active']} turns under way")
        ax.legend(fontsize=8)

    _save(path, draw, result, (9, 5))


def startup(result: dict[str, Any], path: Path) -> None:
    def draw(ax: Any, r: dict[str, Any]) -> None:
        labels = [f"ready: {k}" for k in r["to_ready_s"]] + [
            f"import: {k.split(' (')[0]}" for k in r["import_s"]] + ["python -c pass"]
        values = [v["median"] for v in r["to_ready_s"].values()] + list(r["import_s"].values()) + [
            r["python_start_s"]]
        ax.barh(labels, values)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f} s", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.15)
        ax.set_xlabel("seconds (median)")
        ax.set_title("Start-up to ready, and import times")

    _save(path, draw, result, (9, 4))


def _in_flight(calls: list[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """A step line of model calls in flight over time, from each call's start and end."""
    events = sorted([(c["t_start"], 1) for c in calls] + [(c["t_end"], -1) for c in calls])
    xs, ys, level = [0.0], [0], 0
    for t, step in events:
        xs += [t, t]
        ys.append(level)
        level += step
        ys.append(level)
    return xs, ys


def fleet(result: dict[str, Any], path: Path) -> None:
    if "blocked" in result:
        print(f"(chart {path.name} skipped: the fleet benchmark was blocked)")
        return

    def draw(ax: Any, r: dict[str, Any]) -> None:
        for t in r["throughput"]:
            xs, ys = _in_flight(t["calls"])
            ax.plot(xs, ys, label=f"{t['workers']} worker(s): wall {t['wall_s']:.1f} s "
                                  f"({t['ratio']:.2f}x ideal)")
        first = r["throughput"][0]
        ax.axhline(r["cap"], color="red", linewidth=0.8, label=f"fleet cap {r['cap']}")
        ax.axvline(first["ideal_s"], color="green", linestyle="--", label=f"ideal {first['ideal_s']:.1f} s")
        ax.set_xlabel("seconds since the first turn was recorded")
        ax.set_ylabel("model calls in flight (whole fleet)")
        ax.set_title(f"Fleet throughput on PostgreSQL: {first['sessions']} sessions x {first['turns']} "
                     f"turns, {first['latency_s']:g} s model")
        ax.legend(fontsize=8, loc="lower center")

    _save(path, draw, result, (9, 5))
