"""Summaries of benchmark rows: a table per variant, efficiency ratios, Markdown and a plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOKEN_RATIO_GOAL = 0.55  # SMoA tokens / MoA tokens; the paper reports about 0.6
ROLES = ("roles", "proposer", "judge", "moderator", "aggregator")  # in the order of a run


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarize(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """Per-variant means (quality, tokens, by role too, calls, wall, TTFT, layers), ratios."""
    table: dict[str, dict[str, Any]] = {}
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        table[name] = {
            "items": len(mine),
            "scored": sum(r.get("quality") is not None for r in mine),
            "quality": _mean([r.get("quality") for r in mine]),
            "tokens": _mean([r["tokens"] for r in mine]),
            "calls": _mean([r["calls"] for r in mine]),
            "wall_s": _mean([r["wall_s"] for r in mine]),
            "ttft_s": _mean([r.get("ttft_s") for r in mine]),
            "layers": _mean([r["layers"] for r in mine]),
            "tokens_by_role": {
                role: _mean([r.get("tokens_by_role", {}).get(role, 0) for r in mine])
                for role in ROLES
            },
        }
    ratios: dict[str, Any] = {}
    moa = table.get("moa")
    for name, stats in table.items():
        if name == "moa" or moa is None or not moa["tokens"] or stats["tokens"] is None:
            continue
        common = _paired(rows, name, "moa")
        ratios[f"{name}/moa"] = {
            "items": len(common),
            "tokens": _ratio(common, "tokens"),
            "calls": _ratio(common, "calls"),
            "wall_s": _ratio(common, "wall_s"),
            "quality_delta": _delta(common),
        }
    return {"variants": table, "ratios": ratios, "token_ratio_goal": TOKEN_RATIO_GOAL}


def _paired(rows: Sequence[dict[str, Any]], a: str, b: str) -> list[tuple[dict, dict]]:
    """Rows of variants a and b on the same items, so ratios compare like with like."""
    by_b = {r["item_id"]: r for r in rows if r["variant"] == b}
    return [(r, by_b[r["item_id"]]) for r in rows if r["variant"] == a and r["item_id"] in by_b]


def _ratio(pairs: list[tuple[dict, dict]], key: str) -> float | None:
    top = sum(a[key] for a, _ in pairs)
    bottom = sum(b[key] for _, b in pairs)
    return round(top / bottom, 3) if pairs and bottom else None


def _delta(pairs: list[tuple[dict, dict]]) -> float | None:
    scored = [
        (a["quality"], b["quality"])
        for a, b in pairs
        if None not in (a.get("quality"), b.get("quality"))
    ]
    return round(statistics.fmean(a - b for a, b in scored), 4) if scored else None


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_markdown(summary: dict[str, Any], title: str) -> str:
    """The summary as Markdown tables: per variant, tokens by role, ratios against MoA."""
    lines = [
        f"## {title}",
        "",
        "| variant | items | quality | tokens/query | calls/query | wall s/query | TTFT s "
        "| layers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary["variants"].items():
        lines.append(
            f"| {name} | {s['items']} | {_fmt(s['quality'], 3)} | {_fmt(s['tokens'], 0)} | "
            f"{_fmt(s['calls'], 1)} | {_fmt(s['wall_s'], 1)} | {_fmt(s['ttft_s'], 1)} | "
            f"{_fmt(s['layers'], 2)} |"
        )
    roles = [
        role
        for role in ROLES
        if any(s["tokens_by_role"][role] for s in summary["variants"].values())
    ]
    if roles:
        lines += [
            "",
            "| tokens/query by role | " + " | ".join(roles) + " |",
            "|---|" + "---:|" * len(roles),
        ]
        for name, s in summary["variants"].items():
            cells = " | ".join(_fmt(s["tokens_by_role"][role], 0) for role in roles)
            lines.append(f"| {name} | {cells} |")
    if summary["ratios"]:
        lines += [
            "",
            f"| ratio (paired items) | items | tokens (goal <= {summary['token_ratio_goal']}) | "
            "calls | wall time | quality delta |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in summary["ratios"].items():
            lines.append(
                f"| {name} | {r['items']} | {_fmt(r['tokens'], 3)} | {_fmt(r['calls'], 3)} | "
                f"{_fmt(r['wall_s'], 3)} | {_fmt(r['quality_delta'], 3)} |"
            )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    """PNG: quality against tokens per query, and wall time per query, for each variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["variants"])
    stats = [summary["variants"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, s in zip(names, stats, strict=True):
        if s["tokens"] is not None and s["quality"] is not None:
            left.scatter(s["tokens"], s["quality"], s=60, label=name)
    left.legend(loc="best")  # not labels beside the points: close points would overlap them
    left.set_xlabel("tokens per query")
    left.set_ylabel("quality (accuracy or rubric 1-5)")
    left.set_title("quality vs tokens")
    left.grid(alpha=0.3)
    right.bar(names, [s["wall_s"] or 0 for s in stats], color="#8e7cc3")
    right.set_ylabel("wall time per query (s)")
    right.set_title("wall time")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    rows: Sequence[dict[str, Any]], variants: Sequence[str], out_dir: Path, title: str
) -> dict[str, Any]:
    """Write summary.json, summary.md and plot.png into ``out_dir``; return the summary."""
    summary = summarize(rows, variants)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out_dir / "summary.md").write_text(to_markdown(summary, title), encoding="utf-8")
    plot(summary, out_dir / "plot.png", title)
    return summary
