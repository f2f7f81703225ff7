"""The papers' reference MoA and SMoA code against our moa and smoa presets, on one llama-server.

Their code is loaded at run time from checkouts you pass; nothing of it is copied here:

    git clone https://github.com/togethercomputer/MoA /tmp/ref/MoA
    git clone https://github.com/David-Li0406/SMoA /tmp/ref/SMoA
    git -C /tmp/ref/MoA log -1 --format=%H   # the commits measured (printed too, for clones)
    python benchmarks/reference_compare.py --moa-repo /tmp/ref/MoA --smoa-repo /tmp/ref/SMoA

- ref-moa: MoA's AlpacaEval generator, ``generate_for_alpaca_eval.process_fn`` (``rounds``
  proposer rounds, each proposer reading the last round's answers, then the aggregator);
- ref-smoa: SMoA's ``run_mmau.process_fn`` as ``run_all.sh`` runs it (``--add_role
  --moderate_end --moderate_select``), with the ``math_understand`` prompts and roles;
- moa, smoa: our presets (n proposers, smoa k of them selected, ``--layers`` proposer layers).

Both send their proposers one after another (MoA's ``bot.py`` and ``advanced-moa.py`` run them
in parallel) and give the aggregator call no ``max_tokens``: their default, 2048, applies, up to
the server's slot context; we keep that. Their scripts run items in parallel processes
(``num_proc``); here every system answers one item at a time. Their ``requests.post`` goes to
our server and counts calls and the server's usage. All four systems answer each of ``--items``
seeded GSM8K items one after another, in an order rotated per item, on one embedded
llama-server (SmolLM2-135M, a slot per proposer); the server's CPU seconds per run are printed
too. Another llama-server busy on the same cores inflates wall and CPU time alike (beside one,
our moa took 184.7 s on one item in one smoke run, 11.9 s in the next): measure on an idle
machine. ``--json`` gets the rows after every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import requests

from smoa_graph import SMoAConfig, build_smoa_graph
from smoa_graph.bench.datasets import load_dataset
from smoa_graph.local_server import MODEL_ALIAS, LocalServer

SYSTEMS = ("ref-moa", "moa", "ref-smoa", "smoa")
GOALS = {"moa": ("ref-moa", 1.0), "smoa": ("ref-smoa", 0.5)}
"""Ours: (reference, largest ratio of wall times that meets the goal)."""
STUBBED = ("datasets", "fire", "together", "transformers", "huggingface_hub")
SMOA_PROMPTS = "math_understand"


class OutOfTime(BaseException):
    """The run's time is up (a BaseException: their retry loops catch Exception)."""


@dataclass
class Tally:
    """Calls and server usage of the reference code since the last :meth:`Redirect.take`."""

    calls: int = 0
    tokens: int = 0
    cached_tokens: int = 0
    max_tokens: Counter[Any] = field(default_factory=Counter)


def usage_of(body: Mapping[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, cached) tokens of a chat completion; cached from
    ``usage.prompt_tokens_details.cached_tokens``, else llama-server's ``timings.cache_n``."""
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens", (body.get("timings") or {}).get("cache_n", 0))
    return usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached or 0


class Redirect:
    """Stands in for ``requests`` in their modules: ``post`` goes to our server and is counted."""

    def __init__(self, base_url: str, timeout: float, deadline: float, post: Any = None) -> None:
        self.url, self.timeout, self.deadline = f"{base_url}/chat/completions", timeout, deadline
        self._post = post or requests.post
        self.tally = Tally()

    def post(self, url: str, json: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise OutOfTime
        body = {**(json or {}), "model": MODEL_ALIAS}
        self.tally.calls += 1
        self.tally.max_tokens[body.get("max_tokens")] += 1
        res = self._post(self.url, json=body, **{**kwargs, "timeout": min(self.timeout, left)})
        with contextlib.suppress(ValueError):
            prompt, completion, cached = usage_of(res.json())
            self.tally.tokens += prompt + completion
            self.tally.cached_tokens += cached
        return res

    def take(self) -> Tally:
        """The tally so far; the next call starts a new one."""
        tally, self.tally = self.tally, Tally()
        return tally


class WordTokenizer:
    """SMoA counts tokens with a Hugging Face tokenizer; we read the server's usage instead."""

    def tokenize(self, text: object) -> list[str]:
        return str(text).split()


def _module(name: str, **attrs: Any) -> ModuleType:
    module = ModuleType(name)
    vars(module).update(attrs)
    return module


def _stand_ins() -> dict[str, ModuleType]:
    """What their scripts import but do not use here: no network, no model downloads."""
    client = SimpleNamespace
    tokenizers = SimpleNamespace(from_pretrained=lambda *a, **k: WordTokenizer())
    return {
        "datasets": _module("datasets"),
        "fire": _module("fire", Fire=lambda *a, **k: None),
        "together": _module("together", Together=client, AsyncTogether=client),
        "transformers": _module("transformers", AutoTokenizer=tokenizers),
        "huggingface_hub": _module("huggingface_hub", login=lambda *a, **k: None),
    }


def load_reference(repo: Path, script: str) -> tuple[ModuleType, ModuleType]:
    """Import ``script`` of ``repo`` with stand-ins; (the script, the ``utils`` it imported).

    Both repositories have a top-level ``utils``: each import gets its own. No ``__pycache__``
    is written into the checkout.
    """
    saved = {name: sys.modules.pop(name, None) for name in (*STUBBED, "utils")}
    sys.modules.update(_stand_ins())
    sys.path.insert(0, str(repo))
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        return importlib.import_module(script), sys.modules["utils"]
    finally:
        sys.dont_write_bytecode = bytecode
        sys.path.remove(str(repo))
        for name, module in saved.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds process ``pid`` has used (/proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commit_of(repo: Path) -> str:
    """The checkout's commit, or a note when it is not a git checkout."""
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "-1", "--format=%H"], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


class References:
    """The two reference implementations, their HTTP redirected to our server."""

    def __init__(self, args: argparse.Namespace, redirect: Redirect) -> None:
        self.args, self.redirect = args, redirect
        self.moa, moa_utils = load_reference(args.moa_repo, "generate_for_alpaca_eval")
        self.smoa, smoa_utils = load_reference(args.smoa_repo, "run_mmau")
        vars(moa_utils)["requests"] = vars(smoa_utils)["requests"] = redirect
        folder = args.smoa_repo / "prompt" / SMOA_PROMPTS
        roles = json.loads((folder / "role_description.json").read_text())
        if len(roles) < args.n:  # their code would generate roles and write them into the file
            raise SystemExit(f"{folder}/role_description.json: {len(roles)} roles, fewer than n")
        self.models = [MODEL_ALIAS] * args.n
        self.smoa_args = argparse.Namespace(  # run_mmau's flags; prompts read as its main does
            dataset=SMOA_PROMPTS, model=MODEL_ALIAS, reference_models=self.models,
            rounds=args.layers, num_select_response=args.k, temperature=0.7,
            max_tokens=args.max_tokens, add_role=True, moderate_end=True, moderate_select=True,
            moderator_system_prompt=(folder / "moderator_system_prompt_v2.txt").read_text(),
            aggreagator_system_prompt=(folder / "aggreagator_system_prompt.txt").read_text(),
            role_generation_prompt=(folder / "role_generation_prompt_v2.txt").read_text(),
            task=(folder / "task.txt").read_text(),
        )  # fmt: skip

    def ref_moa(self, question: str) -> dict[str, Any]:
        out = self.moa.process_fn(
            {"instruction": question}, model=MODEL_ALIAS, reference_models=self.models,
            temperature=0.7, max_tokens=self.args.max_tokens, rounds=self.args.layers,
        )  # fmt: skip
        return {"answer": out["output"], "rounds": self.args.layers}

    def ref_smoa(self, question: str) -> dict[str, Any]:
        a = self.smoa_args
        with contextlib.chdir(self.args.smoa_repo):  # it reads prompt/<dataset>/ relative to cwd
            out = self.smoa.process_fn(
                {"question": question}, model=MODEL_ALIAS, args=a, reference_models=self.models,
                temperature=a.temperature, max_tokens=a.max_tokens,
                tokenizer_dict={MODEL_ALIAS: WordTokenizer()}, rounds=a.rounds,
            )  # fmt: skip
        answer = json.loads(out["response"])["choices"][0]["message"]["content"]
        return {"answer": answer, "rounds": out["total_round"] + 1}

    def run(self, system: str, question: str) -> dict[str, Any]:
        """One item through ``ref-moa`` or ``ref-smoa``: figures from the redirect."""
        self.redirect.take()
        start = time.perf_counter()
        detail = (self.ref_moa if system == "ref-moa" else self.ref_smoa)(question)
        wall = time.perf_counter() - start
        t = self.redirect.take()
        caps = ", ".join(f"{cap}x{count}" for cap, count in t.max_tokens.items())
        return {
            "wall_s": wall, "calls": t.calls, "tokens": t.tokens, "cached_tokens": t.cached_tokens,
            "max_tokens": caps, **detail,
        }  # fmt: skip


async def run_ours(graph: Any, question: str, deadline: float) -> dict[str, Any]:
    """One item through our compiled graph: figures from ``summary.total``."""
    start = time.perf_counter()
    try:
        state = await asyncio.wait_for(
            graph.ainvoke({"prompt": question}), deadline - time.monotonic()
        )
    except TimeoutError:
        if time.monotonic() < deadline:
            raise  # not ours: a failed run
        raise OutOfTime from None
    total = state["summary"]["total"]
    return {
        "wall_s": time.perf_counter() - start, "calls": total["calls"],
        "tokens": total["total_tokens"], "cached_tokens": total["cached_input_tokens"],
        "answer": state["answer"], "rounds": len(state.get("layers", [])),
        "finished_by": state["summary"].get("finished_by"),
    }  # fmt: skip


def _span(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def _ratio_row(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], goal: float) -> str:
    """Cells of one ours/reference row over the items both answered; wall checked on ``goal``."""

    def of_medians(key: str) -> float:
        ours, ref = (statistics.median(pair[i][key] for pair in pairs) for i in (0, 1))
        return float(ours / ref)

    per_item = statistics.median(a["wall_s"] / b["wall_s"] for a, b in pairs)
    walls = [
        f"{w:.3f} ({'met' if w <= goal else 'not met'})" for w in (of_medians("wall_s"), per_item)
    ]
    others = [f"{of_medians(key):.3f}" for key in ("server_cpu_s", "calls", "tokens")]
    return " | ".join([str(len(pairs)), *walls, *others])


def table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per system: median wall s (range), server CPU s, calls, tokens, cached tokens; then the
    ours/reference ratios."""
    ok = [r for r in rows if not r.get("error")]
    lines = [
        "| system | items | wall s, median (min-max) | server CPU s | calls | tokens "
        "| cached tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system in SYSTEMS:
        mine = [r for r in ok if r["system"] == system]
        if mine:
            med = [
                statistics.median(r[key] for r in mine)
                for key in ("server_cpu_s", "calls", "tokens", "cached_tokens")
            ]
            lines.append(
                f"| {system} | {len(mine)} | {_span([r['wall_s'] for r in mine])} | "
                + " | ".join(f"{m:.1f}" if i == 0 else f"{m:g}" for i, m in enumerate(med))
                + " |"
            )
    lines += [
        "",
        "| ours / reference | items | wall: ratio of medians | wall: median of per-item ratios "
        "| server CPU | calls | tokens | goal (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for ours, (ref, goal) in GOALS.items():
        by_item = {r["item"]: r for r in ok if r["system"] == ref}
        pairs = [
            (r, by_item[r["item"]]) for r in ok if r["system"] == ours and r["item"] in by_item
        ]
        cells = _ratio_row(pairs, goal) if pairs else "0 | n/a | n/a | n/a | n/a | n/a"
        lines.append(f"| {ours} / {ref} | {cells} | <= {goal:g} |")
    return lines


def sample_items(count: int, seed: int, skip: int) -> list[tuple[str, str]]:
    """(id, question) of ``count`` GSM8K items drawn with ``seed`` from those after ``skip``."""
    items = load_dataset("gsm8k")[skip:]
    return [(i.id, i.prompt) for i in random.Random(seed).sample(items, count)]


def progress(row: Mapping[str, Any]) -> str:
    """One run's figures, or its error."""
    if row.get("error"):
        return str(row["error"])
    return (
        f"{row['wall_s']:.1f} s (server CPU {row['server_cpu_s']:.1f} s), {row['calls']} calls, "
        f"{row['tokens']} tokens ({row['cached_tokens']} cached), rounds {row.get('rounds')}"
    )


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60 * args.max_minutes
    rows: list[dict[str, Any]] = []
    items = sample_items(args.items, args.seed, args.skip)
    with LocalServer(parallel=args.n, max_tokens=args.max_tokens, threads=args.threads) as server:
        os.environ["SMOA_LOCAL_BASE_URL"] = server.base_url
        redirect = Redirect(server.base_url, args.call_timeout, deadline)
        refs = References(args, redirect)
        common: dict[str, Any] = dict(
            n_proposers=args.n, max_layers=args.layers, max_tokens=args.max_tokens, model="local",
            request_timeout_s=args.call_timeout,
        )  # fmt: skip
        graphs = {
            "moa": build_smoa_graph(SMoAConfig(preset="moa", **common)).compile(),
            "smoa": build_smoa_graph(SMoAConfig(preset="smoa", k=args.k, **common)).compile(),
        }
        print(f"server: {' '.join(server.command()[5:])}\nMoA {commit_of(args.moa_repo)}, SMoA "
              f"{commit_of(args.smoa_repo)}; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs", file=sys.stderr)  # fmt: skip
        redirect.post("", json={"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 1})
        try:
            for index, (item_id, question) in enumerate(items):
                shift = index % len(SYSTEMS)
                for system in SYSTEMS[shift:] + SYSTEMS[:shift]:
                    row: dict[str, Any] = {"item": item_id, "system": system}
                    cpu = cpu_s(server.pid)
                    try:
                        if system in graphs:
                            row |= await run_ours(graphs[system], question, deadline)
                        else:
                            row |= refs.run(system, question)
                    except Exception as exc:  # one failed run must not lose the others
                        row["error"] = f"{type(exc).__name__}: {exc}"
                    row["server_cpu_s"] = cpu_s(server.pid) - cpu
                    rows.append(row)
                    label = f"item {index + 1}/{len(items)} {item_id} {system}"
                    print(f"{label}: {progress(row)}", file=sys.stderr)
                    if args.json:
                        args.json.write_text(json.dumps(rows, indent=2))
        except OutOfTime:
            print(f"stopped: --max-minutes {args.max_minutes:g} reached", file=sys.stderr)
    print(
        f"\n{len(items)} GSM8K items (seed {args.seed}), n={args.n}, k={args.k}, {args.layers} "
        f"layers, max_tokens {args.max_tokens} (the reference aggregators: their default 2048)\n"
    )
    print("\n".join(table(rows)))
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moa-repo", type=Path, required=True, help="MoA checkout")
    parser.add_argument("--smoa-repo", type=Path, required=True, help="SMoA checkout")
    parser.add_argument("--items", type=int, default=10, help="GSM8K items")
    parser.add_argument("--seed", type=int, default=0, help="seed of the item sample")
    parser.add_argument("--skip", type=int, default=20, help="leave out the first N (smoa bench's)")
    parser.add_argument("--max-tokens", type=int, default=256, help="output cap per call")
    parser.add_argument("-n", type=int, default=4, help="proposers")
    parser.add_argument("-k", type=int, default=2, help="responses selected per layer (smoa)")
    parser.add_argument("--layers", type=int, default=2, help="proposer layers (their rounds)")
    parser.add_argument("--call-timeout", type=float, default=300, help="seconds per HTTP call")
    parser.add_argument("--max-minutes", type=float, default=40, help="stop the run after this")
    parser.add_argument("--threads", type=int, help="llama-server threads (default: min(4, CPUs))")
    parser.add_argument("--json", type=Path, help="write the per-item rows here")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
