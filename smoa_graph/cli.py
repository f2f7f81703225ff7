"""The ``smoa`` command: ask a question, manage the local model server, print the graph.

Flags of ``smoa ask`` are generated from ``SMoAConfig`` (names and help come from its fields),
so the CLI, the Studio form and the Python API always agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import types
import typing
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from pydantic import ValidationError

from smoa_graph._compat import error_handler_name
from smoa_graph.attempts import is_model_error
from smoa_graph.checkpoints import CheckpointDBError, database_errors, open_persistence
from smoa_graph.config import SMoAConfig, config_problems
from smoa_graph.errors import AllProposersFailedError, InvalidInputError
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import (
    ModelConfigError,
    ModelFactory,
    describe_error,
    is_final_answer,
    redact,
)
from smoa_graph.paths import cache_dir
from smoa_graph.resume import SelectionError, aprepare_resume, aselect

EXIT_USAGE = 2
EXIT_RUNTIME = 1


class CLIError(Exception):
    """A failure to report as one line and a non-zero exit, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


# -- flags from the config model ---------------------------------------------------------------


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse keyword arguments for one config field's type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0]
        args = list(typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(args)}
    if origin is list:
        return {"nargs": "+", "metavar": "VALUE"}
    return {"type": annotation}


_ALIASES = {"n_proposers": ["-n"], "k": ["-k"], "max_layers": ["--layers"]}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per ``SMoAConfig`` field, help from its description."""
    group = parser.add_argument_group("configuration (fields left unset take the preset's value)")
    for name, field in SMoAConfig.model_fields.items():
        flags = [*_ALIASES.get(name, []), "--" + name.replace("_", "-")]
        group.add_argument(
            *flags,
            dest=name,
            default=None,
            help=field.description,
            **_flag_kwargs(field.annotation),
        )


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields from ``--config FILE`` overlaid with every flag the user set."""
    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            raise CLIError(
                f"--config {path}: cannot read a JSON object ({exc})", EXIT_USAGE
            ) from None
        if not isinstance(values, dict):
            raise CLIError(f"--config {path}: expected a JSON object of config fields", EXIT_USAGE)
    values.update(
        {n: getattr(args, n) for n in SMoAConfig.model_fields if getattr(args, n) is not None}
    )
    return values


def validated(build: Any, *args: Any) -> Any:
    """Call a config-building function; turn pydantic errors into one CLI line."""
    try:
        return build(*args)
    except ValidationError as exc:
        raise CLIError(f"invalid configuration: {config_problems(exc)}", EXIT_USAGE) from None


def read_question(text: str, max_chars: int) -> str:
    """The question from the argument, or from stdin when it is ``-`` (read up to a bound)."""
    if text != "-":
        return text
    limit = 4 * max_chars  # UTF-8 takes at most 4 bytes per character
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise CLIError(
            f"stdin: more than max_prompt_chars={max_chars} characters; shorten the question or "
            "raise --max-prompt-chars",
            EXIT_USAGE,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(
            f"stdin is not valid UTF-8 (byte {exc.start}); convert it, e.g. with iconv",
            EXIT_USAGE,
        ) from None


# -- ask ---------------------------------------------------------------------------------------

THREADS = ("smoa_graph", "threads")
"""Store namespace of each checkpointed thread's configuration (for ``--resume``)."""


def default_checkpoint_db() -> Path:
    """``checkpoints.sqlite`` in the cache folder (``$SMOA_CACHE_DIR``, else ~/.cache)."""
    return cache_dir() / "checkpoints.sqlite"


def _progress(update: dict[str, Any], started: float) -> str | None:
    """One human line for a node update, or None."""
    clock = f"[{time.perf_counter() - started:6.1f}s]"
    for node, value in update.items():
        if not isinstance(value, dict):
            continue
        if node in ("propose", error_handler_name("propose")):
            calls = value["calls"]
            call = calls[-1]
            retries = f" after {len(calls) - 1} failed attempt(s)" if len(calls) > 1 else ""
            status = (
                f"{call['output_tokens']} tokens, {call['latency_s']:.1f}s{retries}"
                if call["ok"]
                else f"FAILED{retries}: {call['error']}"
            )
            return f"{clock} layer {call['layer']}: proposer {call['index']} done ({status})"
        if node in ("judge", error_handler_name("judge")) and value.get("layers"):
            record = value["layers"][0]
            judge = record["judge"]
            method = judge.get("method", "judge" if judge["called"] else "all")
            if method == "kept":
                return f"{clock} layer {record['layer']}: {judge['fallback']}"
            how = {"all": "all kept", "vote": "vote"}.get(method, method)
            note = f" (fallback: {judge['fallback']})" if judge["fallback"] else ""
            return f"{clock} layer {record['layer']}: selected {judge['selected']} by {how}{note}"
        if node in ("moderator", error_handler_name("moderator")):
            decision = value["decisions"][0]
            verb = "stop" if decision["stop"] else "continue"
            return (
                f"{clock} moderator after layer {decision['layer']}: {verb} ({decision['reason']})"
            )
        if node == "aggregator":
            return f"{clock} answer: {value['summary']['finished_by']}"
    return None


async def stream_run(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    inputs: dict[str, Any] | None,
    run_config: RunnableConfig | None,
    *,
    stream: bool,
    quiet: bool,
) -> tuple[dict[str, Any], float]:
    """Run (or resume, with ``inputs=None``) the graph; progress to stderr, tokens to stdout."""
    started = time.perf_counter()
    final: dict[str, Any] = {}
    streamed = False
    chunk: Any
    async for namespace, mode, chunk in graph.astream(
        inputs,
        run_config,
        stream_mode=["updates", "messages", "values"],
        subgraphs=True,
    ):
        if mode == "values" and not namespace:
            final = chunk
        elif mode == "updates" and not quiet:
            line = _progress(chunk, started)
            if line:
                print(line, file=sys.stderr, flush=True)
        elif mode == "messages" and stream:
            message, metadata = chunk
            if is_final_answer(metadata) and message.text:
                print(message.text, end="", flush=True)
                streamed = True
    if stream:
        # An answer that no call wrote (a vote, an agreed response) is printed whole.
        print("" if streamed else final.get("answer", ""))
    return final, time.perf_counter() - started


@dataclass
class Outcome:
    """What ``smoa ask`` ran: final state, config, wall time, and the thread if checkpointed."""

    state: dict[str, Any]
    config: SMoAConfig
    wall_s: float
    thread_id: str | None = None
    paused_before: tuple[str, ...] = ()


async def run_checkpointed(
    args: argparse.Namespace, values: dict[str, Any], question: str | None
) -> Outcome:
    """Run a new question, or resume (``question=None``), on a thread of the checkpoint DB."""
    db = args.checkpoint_db or default_checkpoint_db()
    thread_id = args.thread_id or uuid.uuid4().hex[:12]
    run_config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    async with open_persistence(db) as (saver, store):
        if question is None:
            stored = await store.aget(THREADS, thread_id)
            if stored is None:
                raise CLIError(f"--resume: no run under thread {thread_id!r} in {db}", EXIT_USAGE)
            values = {**stored.value["config"], **values}
        config = validated(SMoAConfig.model_validate, values)
        review = ["aggregator"] if args.review and question is not None else None
        graph = build_smoa_graph(config, model_factory=args.model_factory).compile(
            checkpointer=saver, interrupt_before=review
        )
        if question is None:
            if args.select:
                try:
                    await aselect(graph, run_config, args.select)
                except SelectionError as exc:
                    raise CLIError(
                        f"--select: {exc} (start it with --review)", EXIT_USAGE
                    ) from None
            if not await aprepare_resume(graph, run_config):
                state = (await graph.aget_state(run_config)).values
                if not state.get("answer"):
                    raise CLIError(f"--resume: thread {thread_id!r} has no run", EXIT_USAGE)
                return Outcome(state, config, 0.0, thread_id)  # finished already: no model call
        elif (await graph.aget_state(run_config)).next:
            raise CLIError(
                f"thread {thread_id!r} has an unfinished run: continue it with --resume, or use "
                "another --thread-id",
                EXIT_USAGE,
            )
        await store.aput(THREADS, thread_id, {"config": config.model_dump(mode="json")})
        inputs = None if question is None else {"prompt": question}
        state, wall_s = await stream_run(
            graph, inputs, run_config, stream=args.stream and not args.json, quiet=args.quiet
        )
        paused = (await graph.aget_state(run_config)).next
    return Outcome(state, config, wall_s, thread_id, paused)


def trace_json(outcome: Outcome) -> dict[str, Any]:
    """The machine-readable result: answer, whole trace, accounting (no secrets, no objects)."""
    keys = ("question", "answer", "roles", "layers", "decisions", "selected", "calls", "summary")
    data = {
        **{k: outcome.state.get(k) for k in keys},
        "wall_s": round(outcome.wall_s, 3),
        "config": outcome.config.model_dump(),
    }
    if outcome.thread_id is not None:
        data.update(thread_id=outcome.thread_id, paused_before=list(outcome.paused_before))
    return data


def format_summary(state: dict[str, Any], wall_s: float) -> str:
    """A short human trace summary printed after the answer."""
    summary = state["summary"]
    total = summary["total"]
    lines = [
        "",
        f"-- {summary['layers_run']} layer(s); stopped: {summary['stop_reason']}; "
        f"answer: {summary['finished_by']}",
        f"-- {total['calls']} calls ({total['failed_calls']} failed), "
        f"{total['input_tokens']} in + {total['output_tokens']} out = {total['total_tokens']} "
        f"tokens, wall {wall_s:.1f}s",
    ]
    for role, bucket in summary["by_role"].items():
        lines.append(
            f"   {role:<10} {bucket['calls']:>3} calls {bucket['total_tokens']:>7} tokens "
            f"{bucket['latency_s']:>7.1f}s model time"
        )
    return "\n".join(lines)


def format_review(outcome: Outcome, args: argparse.Namespace) -> str:
    """What a run paused by ``--review`` selected, and how to go on."""
    record = outcome.state["layers"][-1]
    selected = record["judge"]["selected"]
    lines = [f"paused before the aggregator; layer {record['layer']} candidates:"]
    for c in record["candidates"]:
        mark = "*" if c["index"] in selected else " "
        text = " ".join(c["text"].split())[:160] if c["ok"] else f"FAILED: {c['error']}"
        lines.append(f" {mark} proposer {c['index']}: {text}")
    db = f" --checkpoint-db {redact(args.checkpoint_db)}" if args.checkpoint_db else ""
    lines.append(
        f"(* = selected) go on with: smoa ask --resume --thread-id {outcome.thread_id}{db} "
        "[--select PROPOSER ...]"
    )
    return "\n".join(lines)


def cmd_ask(args: argparse.Namespace) -> int:
    """``smoa ask``: answer one question, or resume a checkpointed one."""
    values = config_values(args)
    if args.resume:
        if not args.thread_id or args.question is not None:
            raise CLIError(
                "--resume continues a stored run: give --thread-id ID and no question", EXIT_USAGE
            )
        outcome = asyncio.run(run_checkpointed(args, values, None))
    else:
        if args.question is None:
            raise CLIError("a question is required (or --resume --thread-id ID)", EXIT_USAGE)
        if args.select:
            raise CLIError("--select goes with --resume (after a --review pause)", EXIT_USAGE)
        config = validated(SMoAConfig.model_validate, values)
        question = read_question(args.question, config.max_prompt_chars)
        if args.thread_id or args.review:
            outcome = asyncio.run(run_checkpointed(args, values, question))
        else:
            graph = build_smoa_graph(config, model_factory=args.model_factory).compile()
            state, wall_s = asyncio.run(
                stream_run(
                    graph,
                    {"prompt": question},
                    None,
                    stream=args.stream and not args.json,
                    quiet=args.quiet,
                )
            )
            outcome = Outcome(state, config, wall_s)
    if args.json:
        print(json.dumps(trace_json(outcome), indent=1, ensure_ascii=False))
        return 0
    if outcome.paused_before:
        print(format_review(outcome, args))
        return 0
    if not args.stream:
        print(outcome.state["answer"])
    summary = format_summary(outcome.state, outcome.wall_s)
    print(summary, file=sys.stderr if args.quiet else sys.stdout)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``smoa bench``: presets side by side on a dataset; results, table and plot in --out."""
    from smoa_graph.bench.datasets import DatasetError, load_dataset
    from smoa_graph.bench.report import write_report
    from smoa_graph.bench.runner import parse_variant, run_bench

    base = config_values(args)
    base.pop("preset", None)
    variants = [validated(parse_variant, text, base) for text in args.variants]
    try:
        items = load_dataset(args.dataset, args.limit, args.split)
    except (DatasetError, ValueError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    if not items:
        raise CLIError(f"dataset {args.dataset!r} has no items", EXIT_USAGE)
    out = Path(args.out)
    rubric = args.rubric_model or variants[0].config.model
    rows = asyncio.run(
        run_bench(
            variants,
            items,
            out,
            concurrency=args.concurrency,
            model_factory=args.model_factory,
            rubric_model=rubric,
            checkpoint_db=args.checkpoint_db,
        )
    )
    names = [v.name for v in variants]
    split = f" ({args.split})" if args.split else ""
    title = f"{args.dataset}{split}: {len(items)} items, model {variants[0].config.model}"
    from smoa_graph.local_server import local_server_rss_mb

    server = {"rss_mb": local_server_rss_mb(), "peak_rss_mb": local_server_rss_mb(peak=True)}
    presets = {v.name: v.config.preset for v in variants}
    write_report(rows, names, out, title, server, presets)
    print((out / "summary.md").read_text(encoding="utf-8"))
    failed = len(items) * len(names) - len(rows)
    print(
        f"results: {out / 'results.jsonl'}; table: {out / 'summary.md'}; plot: {out / 'plot.png'}"
    )
    if failed:
        print(f"{failed} run(s) failed; rerun the same command to retry them", file=sys.stderr)
    return 1 if failed else 0


# -- serve -------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """``smoa serve``: the OpenAI-compatible HTTP server (docs/serving.md)."""
    try:
        from smoa_graph.server import ServerSettings, serve
    except ImportError as exc:
        raise CLIError(
            f"smoa serve needs the server extra: pip install 'smoa-graph[server]' ({exc})",
            EXIT_USAGE,
        ) from None
    values = config_values(args)
    validated(SMoAConfig.model_validate, values)
    settings = ServerSettings(
        max_concurrent_runs=args.max_concurrent_runs,
        max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout_s,
        log_prompts=args.log_prompts,
        trust_request_models=args.trust_request_models,
    )
    serve(values, settings, host=args.host, port=args.port)
    return 0


# -- local server ------------------------------------------------------------------------------


def cmd_serve_local(args: argparse.Namespace) -> int:
    """``smoa serve-local``: start the embedded model server in the background (or reuse it)."""
    from smoa_graph.local_server import serve_detached

    state = serve_detached(
        port=args.port,
        parallel=args.parallel,
        ctx_size=args.ctx_size,
        max_tokens=args.max_tokens,
        cache_ram_mb=args.cache_ram,
    )
    verb = "started" if state["started"] else "already running"
    print(f"local model server {verb}: {state['base_url']} (pid {state['pid']})")
    return 0


def describe_local_status(status: dict[str, Any]) -> str:
    """``smoa local status`` for people: where the server is, its memory, its sizing."""

    def mb(key: str) -> str:
        value = status.get(key)
        return "n/a" if value is None else f"{value:.0f} MB"

    lines = [
        f"local model server: {status['base_url']} (pid {status['pid']}, "
        f"started {status.get('started_at') or 'n/a'})",
        f"memory: RSS {mb('rss_mb')}, peak {mb('peak_rss_mb')}",
    ]
    if "parallel" in status:  # absent in the state of a server started by an older version
        cache = status["cache_ram_mb"]
        cache_text = {0: "off", -1: "unbounded"}.get(cache, f"capped at {cache} MiB")
        lines.append(
            f"slots: {status['parallel']}, context {status['ctx_size']} tokens "
            f"({status['ctx_size'] // status['parallel']} per slot), prompt cache {cache_text}"
        )
    if status.get("log_file"):
        lines.append(f"log: {status['log_file']}")
    return "\n".join(lines)


def cmd_local(args: argparse.Namespace) -> int:
    """``smoa local status|stop``."""
    from smoa_graph.local_server import local_status, stop_local_server

    if args.action == "stop":
        print("stopped" if stop_local_server() else "no local server running")
        return 0
    status = local_status()
    if status is None:
        print("no local server running (start one with `smoa serve-local`)")
        return 3
    print(json.dumps(status, indent=1) if args.json else describe_local_status(status))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """``smoa graph``: print the graph as Mermaid (the layer subgraph expanded)."""
    from smoa_graph.graph import draw_mermaid

    print(draw_mermaid())
    return 0


# -- entry point -------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``smoa`` argument parser."""
    from smoa_graph import local_server as local

    parser = argparse.ArgumentParser(
        prog="smoa", description="Sparse Mixture-of-Agents on LangGraph"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question with SMoA (default: the local model)")
    ask.add_argument("question", nargs="?", help="the question, or - to read it from stdin")
    ask.add_argument("--stream", action="store_true", help="stream the final answer's tokens")
    ask.add_argument("--json", action="store_true", help="print the answer and whole trace as JSON")
    ask.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ask.add_argument("--config", help="JSON file of config fields (flags override it)")
    durable = ask.add_argument_group("checkpoints (resume after a crash, review before the end)")
    durable.add_argument(
        "--thread-id",
        help="checkpoint the run under this id (a later question on it continues the chat)",
    )
    durable.add_argument(
        "--checkpoint-db",
        help="SQLite file or postgresql:// URL of the checkpoints; default: the cache folder",
    )
    durable.add_argument(
        "--resume",
        action="store_true",
        help="continue the run of --thread-id from its last checkpoint (its stored settings, "
        "overridden by any flag given)",
    )
    durable.add_argument(
        "--review",
        action="store_true",
        help="pause before the aggregator and show the selection (continue with --resume)",
    )
    durable.add_argument(
        "--select",
        type=int,
        nargs="+",
        metavar="PROPOSER",
        help="with --resume after --review: aggregate these proposers' responses instead",
    )
    add_config_flags(ask)
    ask.set_defaults(func=cmd_ask)

    bench = sub.add_parser("bench", help="compare presets on a dataset (resumable)")
    bench.add_argument(
        "--dataset",
        default="gsm8k",
        help="gsm8k, mmlu, mtbench, bbq, donotanswer, arith or a JSONL path",
    )
    bench.add_argument("--split", help="only this split's items (arith: tune, test); default all")
    bench.add_argument("--limit", type=int, default=20, help="first N items (of the split)")
    bench.add_argument(
        "--variants",
        nargs="+",
        default=["single", "moa", "smoa"],
        help="presets, or NAME:field=value,... with JSON values (e.g. smoa-k1:preset=smoa,k=1 or "
        "smoa-full-view:preset=smoa,judge_view_chars=null)",
    )
    bench.add_argument("--out", default="bench_results/run", help="output folder (resumes)")
    bench.add_argument("--concurrency", type=int, default=1, help="runs in flight at once")
    bench.add_argument("--rubric-model", help="judge model for open-ended items; default: model")
    bench.add_argument(
        "--checkpoint-db",
        help="SQLite file or postgresql:// URL; default: OUT/checkpoints.sqlite",
    )
    bench.add_argument("--config", help="JSON file of shared config fields (flags override it)")
    add_config_flags(bench)
    bench.set_defaults(func=cmd_bench)

    api = sub.add_parser("serve", help="serve SMoA over an OpenAI-compatible HTTP API")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    api.add_argument("--port", type=int, default=8000, help="port to listen on")
    api.add_argument(
        "--max-concurrent-runs",
        type=positive_int,
        default=8,
        help="runs in flight at once; further requests get 429 with Retry-After",
    )
    api.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=2 * 1024 * 1024,
        help="largest request body; a larger one gets 413 before it is parsed",
    )
    api.add_argument(
        "--drain-timeout-s",
        type=positive_int,
        default=30,
        help="on SIGTERM, wait this long for runs in flight before cancelling them",
    )
    api.add_argument(
        "--log-prompts", action="store_true", help="log each request's question (off: no prompts)"
    )
    api.add_argument(
        "--trust-request-models",
        action="store_true",
        help="let requests choose model specs, endpoints, the API-key variable and the roles "
        "folder (only for trusted clients: a request could send the server's keys anywhere)",
    )
    api.add_argument("--config", help="JSON file of config fields (flags override it)")
    add_config_flags(api)
    api.set_defaults(func=cmd_serve)

    serve = sub.add_parser("serve-local", help="start the embedded model server in the background")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument(
        "--parallel",
        type=int,
        default=None,
        help=f"parallel slots (-np), one per proposer: {local.DEFAULT_PARALLEL}",
    )
    serve.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="output cap of the calls it will answer, sizes the context: "
        f"{local.DEFAULT_MAX_TOKENS}",
    )
    serve.add_argument(
        "--ctx-size",
        type=int,
        default=None,
        help="total context (-c); default: slots x ((slots + 1) x max-tokens + "
        f"{local.PROMPT_ALLOWANCE}), at most {local.MODEL_CONTEXT} per slot",
    )
    serve.add_argument(
        "--cache-ram",
        type=int,
        default=None,
        help=f"host prompt cache cap in MiB (0: off, -1: unbounded): {local.DEFAULT_CACHE_RAM_MB}",
    )
    serve.set_defaults(func=cmd_serve_local)

    manage = sub.add_parser("local", help="status or stop of the background model server")
    manage.add_argument("action", choices=["status", "stop"])
    manage.add_argument("--json", action="store_true", help="status as JSON")
    manage.set_defaults(func=cmd_local)

    show = sub.add_parser("graph", help="print the graph as a Mermaid diagram")
    show.set_defaults(func=cmd_graph)
    return parser


def _describe(exc: BaseException) -> tuple[str, int]:
    """A one-line message and exit code for an expected failure."""
    from smoa_graph.local_server import LocalServerError

    if isinstance(exc, CLIError):
        return str(exc), exc.code
    if isinstance(exc, (InvalidInputError, ModelConfigError)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, CheckpointDBError):
        return str(exc), EXIT_USAGE if exc.usage else EXIT_RUNTIME
    if isinstance(exc, (LocalServerError, AllProposersFailedError)):
        return str(exc), EXIT_RUNTIME
    if is_model_error(exc):
        return f"model endpoint error: {describe_error(exc)}", EXIT_RUNTIME
    if isinstance(exc, (OSError, *database_errors())):
        return describe_error(exc), EXIT_RUNTIME
    raise exc


def main(argv: Sequence[str] | None = None, *, model_factory: ModelFactory | None = None) -> int:
    """Console entry point; ``model_factory`` builds the models (default: from their specs)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.model_factory = model_factory
    thread = getattr(args, "thread_id", None)
    later = f"; the run is checkpointed: go on with --resume --thread-id {thread}" if thread else ""
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed stdout shows here, not at exit
        return code
    except BrokenPipeError:  # stdout closed early (`smoa graph | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as the shell reports a tool stopped by a closed pipe
    except KeyboardInterrupt:
        print(f"smoa: interrupted{later}", file=sys.stderr)
        return 130
    except Exception as exc:
        message, code = _describe(exc)
        hint = later if code == EXIT_RUNTIME and not isinstance(exc, CheckpointDBError) else ""
        print(f"smoa: error: {redact(message)}{hint}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
