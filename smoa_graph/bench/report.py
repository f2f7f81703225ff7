"""Summaries of benchmark rows: a table per variant, paired comparisons, Markdown and a plot.

Every mean quality (accuracy), quality delta and token ratio comes with a 95% paired bootstrap
interval: items are resampled with replacement, the same items for both sides of a comparison
(pairs by item id), from a fixed seed, so a summary is reproducible and shows which differences
are larger than the noise of the items drawn.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smoa_graph.bench.diagnostics import ANSWER_STAGES, has_marker_echo

TOKEN_RATIO_GOAL = 0.55  # SMoA tokens / MoA tokens; the paper reports about 0.6
QUALITY_MARGIN = 0.02  # ... at a quality no more than 2 points below the best of single and MoA
ROLES = ("roles", "proposer", "judge", "moderator", "aggregator")  # in the order of a run
BASELINES = ("moa", "single", "self-consistency")  # the points a method has to beat
# every other variant is compared with each of these that ran; with smoa as shipped, an
# ablation (smoa with one field changed) reads as a paired delta against it
REFERENCES = (*BASELINES, "smoa")
RESAMPLES = 2000
BOOTSTRAP_SEED = 20241105
CONFIDENCE = 0.95

Pairs = list[tuple[dict[str, Any], dict[str, Any]]]


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    *columns: Sequence[float],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float] | None:
    """Percentile interval (``CONFIDENCE``) of ``statistic`` over item resamples.

    ``columns`` are equally long, position i of each is item i; every resample draws the same
    item positions from all of them (paired). ``statistic`` maps resampled columns, each of shape
    (resamples, items), to one value per resample; resamples where it is undefined (a zero
    denominator) are left out. ``None`` without items.
    """
    n = len(columns[0])
    if n == 0:
        return None
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = statistic(*(np.asarray(c, dtype=float)[draws] for c in columns))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def _mean_of(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=1)


def _delta_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b).mean(axis=1)


def _ratio_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.sum(axis=1) / b.sum(axis=1)


def summarize(
    rows: Sequence[dict[str, Any]],
    variants: Sequence[str],
    presets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Per-variant means with intervals, paired comparisons, answer losses and the frontier.

    ``presets`` names each variant's preset (default: a variant named after a preset is it); it
    tells which variants are baselines (no goal check) and self-consistency votes (the
    equal-tokens comparison).
    """
    presets = presets or {}
    table: dict[str, dict[str, Any]] = {}
    losses: dict[str, dict[str, int]] = {}
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        scored = [r["quality"] for r in mine if r.get("quality") is not None]
        echoes = sum(has_marker_echo(r.get("answer") or "") for r in mine)
        echoed, read = (sum(r.get("raw_echoes", (0, 0))[i] for r in mine) for i in (0, 1))
        table[name] = {
            "items": len(mine),
            "scored": len(scored),
            "quality": _mean(scored),
            "quality_ci": bootstrap_interval(_mean_of, scored),
            "tokens": _mean([r["tokens"] for r in mine]),
            "cached_tokens": _mean([r.get("cached_tokens", 0) for r in mine]),
            "calls": _mean([r["calls"] for r in mine]),
            "wall_s": _mean([r["wall_s"] for r in mine]),
            "ttft_s": _mean([r.get("ttft_s") for r in mine]),
            "layers": _mean([r["layers"] for r in mine]),
            "echoes": echoes,
            "echo_rate": echoes / len(mine) if mine else None,
            "raw_echo_rate": echoed / read if read else None,
            "tokens_by_role": {
                role: _mean([r.get("tokens_by_role", {}).get(role, 0) for r in mine])
                for role in ROLES
            },
        }
        paths = [r["answer_path"] for r in mine if r.get("answer_path")]
        if paths:
            losses[name] = {"items": len(paths)} | {
                stage: sum(p[stage] for p in paths) for stage in ANSWER_STAGES
            }
    ratios: dict[str, Any] = {}
    for reference in REFERENCES:
        if not table.get(reference, {}).get("items"):
            continue
        for name, stats in table.items():
            if name != reference and stats["items"]:
                ratios[f"{name}/{reference}"] = compare(paired(rows, name, reference))
    return {
        "variants": table,
        "ratios": ratios,
        "goals": goal_checks(table, ratios, presets),
        "answer_path": losses,
        "frontier": pareto_frontier(table),
        "equal_tokens": against_votes_at_equal_tokens(rows, table, presets),
        "token_ratio_goal": TOKEN_RATIO_GOAL,
        "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "confidence": CONFIDENCE},
    }


def goal_checks(
    table: dict[str, dict[str, Any]], ratios: dict[str, Any], presets: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Per variant: is it cheap enough against MoA and as good as the best of single and MoA?

    The goal of a sparse variant: tokens <= TOKEN_RATIO_GOAL x MoA's (paired items) and quality
    >= max(single, moa) - QUALITY_MARGIN. Baselines and variants of their presets (a larger
    vote) have none. Empty unless both single and moa ran.
    """
    baselines = [table.get(b, {}).get("quality") for b in ("single", "moa")]
    if None in baselines:
        return {}
    best = max(q for q in baselines if q is not None)
    checks: dict[str, dict[str, Any]] = {}
    for name, stats in table.items():
        vs_moa = ratios.get(f"{name}/moa")
        if presets.get(name, name) in BASELINES or vs_moa is None or stats["quality"] is None:
            continue
        margin = round(stats["quality"] - best, 4)
        checks[name] = {
            "tokens_vs_moa": vs_moa["tokens"],
            "tokens_met": vs_moa["tokens"] is not None and vs_moa["tokens"] <= TOKEN_RATIO_GOAL,
            "quality_vs_best": margin,
            "quality_met": margin >= -QUALITY_MARGIN,
        }
    return checks


def against_votes_at_equal_tokens(
    rows: Sequence[dict[str, Any]], table: dict[str, dict[str, Any]], presets: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Each method against the largest self-consistency vote that spends no more tokens than it.

    Self-consistency is the cheap baseline that multi-agent methods often fail to beat at equal
    cost: run it with more samples (``sc-8:preset=self-consistency,n_proposers=8``) to match a
    method's tokens. ``winner`` is the side whose paired quality delta interval excludes zero,
    else None (a tie within the noise).
    """
    votes = {
        name: s["tokens"]
        for name, s in table.items()
        if presets.get(name, name) == "self-consistency" and s["tokens"] is not None
    }
    matches: dict[str, dict[str, Any]] = {}
    for name, stats in table.items():
        if name in votes or presets.get(name, name) == "single" or stats["tokens"] is None:
            continue
        affordable = [vote for vote, tokens in votes.items() if tokens <= stats["tokens"]]
        if not affordable:
            continue
        vote = max(affordable, key=lambda v: votes[v])
        result = compare(paired(rows, name, vote))
        low, high = result["quality_delta_ci"] or (0.0, 0.0)
        winner = name if low > 0 else vote if high < 0 else None
        matches[name] = {"vote": vote, **result, "winner": winner}
    return matches


def paired(rows: Sequence[dict[str, Any]], a: str, b: str) -> Pairs:
    """Rows of variants a and b on the same items (by id), so ratios compare like with like."""
    by_b = {r["item_id"]: r for r in rows if r["variant"] == b}
    return [(r, by_b[r["item_id"]]) for r in rows if r["variant"] == a and r["item_id"] in by_b]


def compare(pairs: Pairs) -> dict[str, Any]:
    """Variant a against b on paired items: ratios of totals, mean quality delta, intervals."""
    scored = [
        (a["quality"], b["quality"])
        for a, b in pairs
        if None not in (a.get("quality"), b.get("quality"))
    ]
    top, bottom = [a["tokens"] for a, _ in pairs], [b["tokens"] for _, b in pairs]
    return {
        "items": len(pairs),
        "tokens": _ratio(pairs, "tokens"),
        "tokens_ci": bootstrap_interval(_ratio_of, top, bottom),
        "calls": _ratio(pairs, "calls"),
        "wall_s": _ratio(pairs, "wall_s"),
        "quality_delta": round(statistics.fmean(a - b for a, b in scored), 4) if scored else None,
        "quality_delta_ci": bootstrap_interval(
            _delta_of, [a for a, _ in scored], [b for _, b in scored]
        ),
    }


def _ratio(pairs: Pairs, key: str) -> float | None:
    top = sum(a[key] for a, _ in pairs)
    bottom = sum(b[key] for _, b in pairs)
    return round(top / bottom, 3) if pairs and bottom else None


def pareto_frontier(table: dict[str, dict[str, Any]]) -> list[str]:
    """Variants no other variant beats on quality at no more tokens, cheapest first.

    A variant is dominated when another has tokens <= and quality >= with one of them strictly
    better; point estimates decide (the intervals show how firm the order is).
    """
    points = {
        name: (s["tokens"], s["quality"])
        for name, s in table.items()
        if s["tokens"] is not None and s["quality"] is not None
    }

    def dominated(t: float, q: float) -> bool:
        return any(u <= t and r >= q and (u, r) != (t, q) for u, r in points.values())

    kept = [name for name, (t, q) in points.items() if not dominated(t, q)]
    return sorted(kept, key=lambda name: points[name])


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _with_ci(value: float | None, interval: list[float] | None, digits: int = 3) -> str:
    """``0.417 [0.300, 0.533]``: a figure with its 95% interval."""
    if value is None:
        return "-"
    if interval is None:
        return _fmt(value, digits)
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


_STAGE_HEADERS = {
    "first_candidates": "right in layer-1 responses",
    "first_selected": "kept by layer-1 selection",
    "last_candidates": "right in last layer's responses",
    "last_selected": "kept by last selection",
    "final": "final answer right",
}


def to_markdown(summary: dict[str, Any], title: str) -> str:
    """The summary as Markdown tables: per variant, tokens by role, comparisons, answer losses."""
    boot = summary["bootstrap"]
    lines = [
        f"## {title}",
        "",
        f"Intervals: {boot['confidence']:.0%} paired bootstrap over items ({boot['resamples']}"
        f" resamples, seed {boot['seed']}).",
        "",
        "| variant | items | quality [95% CI] | tokens/query | of them cached | calls/query "
        "| wall s/query | TTFT s | layers | answers echoing markers | raw echo rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary["variants"].items():
        lines.append(
            f"| {name} | {s['items']} | {_with_ci(s['quality'], s['quality_ci'])} | "
            f"{_fmt(s['tokens'], 0)} | {_fmt(s.get('cached_tokens'), 0)} | "
            f"{_fmt(s['calls'], 1)} | {_fmt(s['wall_s'], 1)} | "
            f"{_fmt(s['ttft_s'], 1)} | {_fmt(s['layers'], 2)} | {s['echoes']} "
            f"({_fmt(s['echo_rate'], 2)}) | {_fmt(s.get('raw_echo_rate'), 2)} |"
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
            f"| ratio (paired items) | items | tokens [95% CI] (x/moa goal <= "
            f"{summary['token_ratio_goal']}) | calls | wall time | quality delta [95% CI] |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in summary["ratios"].items():
            lines.append(
                f"| {name} | {r['items']} | {_with_ci(r['tokens'], r['tokens_ci'])} | "
                f"{_fmt(r['calls'], 3)} | {_fmt(r['wall_s'], 3)} | "
                f"{_with_ci(r['quality_delta'], r['quality_delta_ci'])} |"
            )
    if summary.get("goals"):
        lines += [
            "",
            f"| goal: tokens <= {summary['token_ratio_goal']}x moa, quality >= best of single "
            f"and moa - {QUALITY_MARGIN * 100:.0f} pts | tokens/moa | | quality - best | |",
            "|---|---:|---|---:|---|",
        ]
        for name, g in summary["goals"].items():
            lines.append(
                f"| {name} | {_fmt(g['tokens_vs_moa'], 3)} | {_met(g['tokens_met'])} | "
                f"{g['quality_vs_best']:+.3f} | {_met(g['quality_met'])} |"
            )
    if summary.get("equal_tokens"):
        lines += [
            "",
            "| at equal or fewer tokens: against the largest self-consistency vote that costs no "
            "more | vote | tokens x the vote's [95% CI] | quality - the vote's [95% CI] | wins |",
            "|---|---|---:|---:|---|",
        ]
        for name, m in summary["equal_tokens"].items():
            lines.append(
                f"| {name} | {m['vote']} | {_with_ci(m['tokens'], m['tokens_ci'])} | "
                f"{_with_ci(m['quality_delta'], m['quality_delta_ci'])} | "
                f"{m['winner'] or 'neither (within the interval)'} |"
            )
    if summary["answer_path"]:
        lines += [
            "",
            "| where answers are lost (items) | runs | "
            + " | ".join(_STAGE_HEADERS[stage] for stage in ANSWER_STAGES)
            + " |",
            "|---|---:|" + "---:|" * len(ANSWER_STAGES),
        ]
        for name, counts in summary["answer_path"].items():
            cells = " | ".join(str(counts[stage]) for stage in ANSWER_STAGES)
            lines.append(f"| {name} | {counts['items']} | {cells} |")
    if summary["frontier"]:
        lines += [
            "",
            "Quality/tokens frontier (no other variant is better at no more tokens), cheapest"
            f" first: {', '.join(summary['frontier'])}.",
        ]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    """PNG: quality (95% interval bars) against tokens per query, the frontier marked; wall time.

    Each variant has its own colour and marker (a dozen ablation rows stay apart), the legend
    sits below the points, and the wall-time bars are horizontal so long names stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    names = list(summary["variants"])
    stats = [summary["variants"][n] for n in names]
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colors = [palette(i % palette.N) for i in range(len(names))]
    markers = "os^Dv<>pPX*h"
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 5 + 0.12 * len(names)), gridspec_kw={"width_ratios": (3, 2)}
    )
    for i, (name, s) in enumerate(zip(names, stats, strict=True)):
        if s["tokens"] is None or s["quality"] is None:
            continue
        low, high = s["quality_ci"] or (s["quality"], s["quality"])
        yerr = [[s["quality"] - low], [high - s["quality"]]]
        left.errorbar(
            s["tokens"],
            s["quality"],
            yerr=yerr,
            fmt=markers[i % len(markers)],
            color=colors[i],
            capsize=4,
            label=name,
        )
    frontier = [summary["variants"][n] for n in summary["frontier"]]
    if frontier:
        left.plot(
            [s["tokens"] for s in frontier],
            [s["quality"] for s in frontier],
            "k--",
            marker="o",
            markerfacecolor="none",
            markersize=13,
            alpha=0.6,
            label="frontier",
        )
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small")
    tokens = [s["tokens"] for s in stats if s["tokens"]]
    if tokens and max(tokens) >= 10 * min(tokens):  # single vs ensembles: spread them out
        left.set_xscale("log")
        left.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        left.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        left.xaxis.set_minor_formatter(ticker.NullFormatter())
    left.set_xlabel("tokens per query")
    left.set_ylabel("quality (accuracy or rubric 1-5), 95% CI")
    left.set_title("quality vs tokens")
    left.grid(alpha=0.3)
    right.barh(names, [s["wall_s"] or 0 for s in stats], color=colors)
    right.invert_yaxis()  # the first variant on top, as in the tables
    right.set_xlabel("wall time per query (s)")
    right.set_title("wall time")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(
    rows: Sequence[dict[str, Any]],
    variants: Sequence[str],
    out_dir: Path,
    title: str,
    server: dict[str, float | None] | None = None,
    presets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write summary.json, summary.md and plot.png into ``out_dir``; return the summary.

    ``server``: the local model server's memory after the run (``rss_mb``, ``peak_rss_mb``);
    ``presets``: each variant's preset (see :func:`summarize`).
    """
    summary = summarize(rows, variants, presets)
    markdown = to_markdown(summary, title)
    if server and server.get("rss_mb") is not None:
        summary["local_server"] = server
        markdown += (
            f"\nLocal model server after the run: RSS {server['rss_mb']:.0f} MB "
            f"(peak {server.get('peak_rss_mb') or 0:.0f} MB).\n"
        )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    plot(summary, out_dir / "plot.png", title)
    return summary
