"""The ``smoa`` command: ask a question, manage the local model server, print the graph.

Flags of ``smoa ask`` are generated from ``SMoAConfig`` (names and help come from its fields),
so the CLI, the Studio form and the Python API always agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from smoa_graph.config import SMoAConfig
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import ModelConfigError
from smoa_graph.nodes import AllProposersFailedError, InvalidInputError

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
        except (OSError, json.JSONDecodeError) as exc:
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
        problems = "; ".join(
            ".".join(map(str, e["loc"]))
            + ": " * bool(e["loc"])
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise CLIError(f"invalid configuration: {problems}", EXIT_USAGE) from None


def read_question(text: str) -> str:
    """The question from the argument, or from stdin when it is ``-``."""
    if text != "-":
        return text
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CLIError(
            f"stdin is not valid UTF-8 (byte {exc.start}); convert it, e.g. with iconv",
            EXIT_USAGE,
        ) from None


# -- ask ---------------------------------------------------------------------------------------


def _progress(update: dict[str, Any], started: float) -> str | None:
    """One human line for a node update, or None."""
    clock = f"[{time.perf_counter() - started:6.1f}s]"
    for node, value in update.items():
        if not isinstance(value, dict):
            continue
        if node in ("propose", "__error_handler__propose"):
            call = value["calls"][0]
            status = (
                f"{call['output_tokens']} tokens, {call['latency_s']:.1f}s"
                if call["ok"]
                else f"FAILED: {call['error']}"
            )
            return f"{clock} layer {call['layer']}: proposer {call['index']} done ({status})"
        if node == "judge" and value.get("layers"):
            record = value["layers"][0]
            judge = record["judge"]
            how = "judge" if judge["called"] else "all kept"
            note = f" (fallback: {judge['fallback']})" if judge["fallback"] else ""
            return f"{clock} layer {record['layer']}: selected {judge['selected']} by {how}{note}"
        if node == "moderator":
            decision = value["decisions"][0]
            verb = "stop" if decision["stop"] else "continue"
            return (
                f"{clock} moderator after layer {decision['layer']}: {verb} ({decision['reason']})"
            )
        if node == "aggregator":
            return f"{clock} aggregator done"
    return None


async def run_question(
    question: str, config: SMoAConfig, *, stream: bool, quiet: bool
) -> tuple[dict[str, Any], float]:
    """Run the graph, printing progress to stderr and (with ``stream``) answer tokens to stdout."""
    graph = build_smoa_graph(config).compile()
    started = time.perf_counter()
    final: dict[str, Any] = {}
    chunk: Any
    async for namespace, mode, chunk in graph.astream(
        {"prompt": question},
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
            if "smoa:final" in metadata.get("tags", []):
                print(message.text, end="", flush=True)
    if stream:
        print()
    return final, time.perf_counter() - started


def trace_json(state: dict[str, Any], config: SMoAConfig, wall_s: float) -> dict[str, Any]:
    """The machine-readable result: answer, whole trace, accounting (no secrets, no objects)."""
    keys = ("question", "answer", "roles", "layers", "decisions", "calls", "summary")
    return {
        **{k: state.get(k) for k in keys},
        "wall_s": round(wall_s, 3),
        "config": config.model_dump(),
    }


def format_summary(state: dict[str, Any], wall_s: float) -> str:
    """A short human trace summary printed after the answer."""
    summary = state["summary"]
    total = summary["total"]
    lines = [
        "",
        f"-- {summary['layers_run']} layer(s); stopped: {summary['stop_reason']}",
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


def cmd_ask(args: argparse.Namespace) -> int:
    """``smoa ask``: answer one question."""
    config = validated(SMoAConfig.model_validate, config_values(args))
    question = read_question(args.question)
    state, wall_s = asyncio.run(
        run_question(question, config, stream=args.stream and not args.json, quiet=args.quiet)
    )
    if args.json:
        print(json.dumps(trace_json(state, config, wall_s), indent=1, ensure_ascii=False))
        return 0
    if not args.stream:
        print(state["answer"])
    print(format_summary(state, wall_s), file=sys.stderr if args.quiet else sys.stdout)
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
        items = load_dataset(args.dataset, args.limit)
    except (DatasetError, ValueError) as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    if not items:
        raise CLIError(f"dataset {args.dataset!r} has no items", EXIT_USAGE)
    out = Path(args.out)
    rubric = args.rubric_model or variants[0].config.model
    rows = asyncio.run(
        run_bench(variants, items, out, concurrency=args.concurrency, rubric_model=rubric)
    )
    names = [v.name for v in variants]
    title = f"{args.dataset}: {len(items)} items, model {variants[0].config.model}"
    write_report(rows, names, out, title)
    print((out / "summary.md").read_text(encoding="utf-8"))
    failed = len(items) * len(names) - len(rows)
    print(
        f"results: {out / 'results.jsonl'}; table: {out / 'summary.md'}; plot: {out / 'plot.png'}"
    )
    if failed:
        print(f"{failed} run(s) failed; rerun the same command to retry them", file=sys.stderr)
    return 1 if failed else 0


# -- local server ------------------------------------------------------------------------------


def cmd_serve_local(args: argparse.Namespace) -> int:
    """``smoa serve-local``: start the embedded model server in the background (or reuse it)."""
    from smoa_graph.local_server import serve_detached

    state = serve_detached(port=args.port, parallel=args.parallel, ctx_size=args.ctx_size)
    verb = "started" if state["started"] else "already running"
    print(f"local model server {verb}: {state['base_url']} (pid {state['pid']})")
    return 0


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
    print(json.dumps(status, indent=1))
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    """``smoa graph``: print the graph as Mermaid (the layer subgraph expanded)."""
    from smoa_graph.graph import draw_mermaid

    print(draw_mermaid())
    return 0


# -- entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``smoa`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="smoa", description="Sparse Mixture-of-Agents on LangGraph"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question with SMoA (default: the local model)")
    ask.add_argument("question", help="the question, or - to read it from stdin")
    ask.add_argument("--stream", action="store_true", help="stream the final answer's tokens")
    ask.add_argument("--json", action="store_true", help="print the answer and whole trace as JSON")
    ask.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ask.add_argument("--config", help="JSON file of config fields (flags override it)")
    add_config_flags(ask)
    ask.set_defaults(func=cmd_ask)

    bench = sub.add_parser("bench", help="compare presets on a dataset (resumable)")
    bench.add_argument(
        "--dataset", default="gsm8k", help="gsm8k, mmlu, mtbench, bbq, donotanswer or a JSONL path"
    )
    bench.add_argument("--limit", type=int, default=20, help="first N items of the dataset")
    bench.add_argument(
        "--variants",
        nargs="+",
        default=["single", "moa", "smoa"],
        help="presets, or NAME:field=value,... (e.g. smoa-k1:preset=smoa,k=1)",
    )
    bench.add_argument("--out", default="bench_results/run", help="output folder (resumes)")
    bench.add_argument("--concurrency", type=int, default=1, help="runs in flight at once")
    bench.add_argument("--rubric-model", help="judge model for open-ended items; default: model")
    bench.add_argument("--config", help="JSON file of shared config fields (flags override it)")
    add_config_flags(bench)
    bench.set_defaults(func=cmd_bench)

    serve = sub.add_parser("serve-local", help="start the embedded model server in the background")
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("--parallel", type=int, default=4, help="parallel slots (-np)")
    serve.add_argument("--ctx-size", type=int, default=None, help="total context size")
    serve.set_defaults(func=cmd_serve_local)

    local = sub.add_parser("local", help="status or stop of the background model server")
    local.add_argument("action", choices=["status", "stop"])
    local.set_defaults(func=cmd_local)

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
    if isinstance(exc, (LocalServerError, AllProposersFailedError)):
        return str(exc), EXIT_RUNTIME
    name = type(exc).__name__
    if name in ("APIConnectionError", "APITimeoutError", "ConnectError", "ConnectionError"):
        return f"model endpoint unreachable: {exc}", EXIT_RUNTIME
    if name in ("AuthenticationError", "RateLimitError", "InternalServerError", "APIStatusError"):
        return f"model endpoint error ({name}): {exc}", EXIT_RUNTIME
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("smoa: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message, code = _describe(exc)
        print(f"smoa: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
