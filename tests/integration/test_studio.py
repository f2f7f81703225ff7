"""``langgraph dev`` (the LangGraph Studio backend) serves both graphs of ``langgraph.json``.

One real dev server per module, started from the project root on 127.0.0.1 and a free port, with
tracing, telemetry, the version check, reload and the browser off; the ``smoa`` graph's local
model is the test session's llama-server. Talks to it only through the official SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from smoa_graph.config import PRESET_DEFAULTS, SMoAConfig

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
STARTUP_TIMEOUT_S = 90.0
LOCAL_RUN_TIMEOUT_S = 300.0
_ANNOUNCED = re.compile(r"API:\s*(?:\x1b\[[0-9;]*m)?(http://127\.0\.0\.1:(\d+))")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class DevServer:
    """``langgraph dev`` in its own process group, stopped as a group."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.requested_port = free_port()
        self.url = ""
        self._handle = log.open("w")
        self.proc = subprocess.Popen(
            [
                str(LANGGRAPH),
                "dev",
                "--no-browser",
                "--no-reload",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.requested_port),
            ],
            cwd=ROOT,  # langgraph.json's paths are relative; .langgraph_api/ is written here
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> str:
        """The URL the server announced (it moves silently when the port is busy), once /ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"langgraph dev exited ({self.proc.returncode}):\n{self.tail()}")
            if not self.url and (match := _ANNOUNCED.search(self.log.read_text(errors="replace"))):
                self.url = match.group(1)
            if self.url and ok(self.url):
                return self.url
            time.sleep(0.25)
        raise TimeoutError(f"langgraph dev not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace")
        return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the group, SIGKILL what is left after ``grace`` seconds."""
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + grace
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self._handle.close()


@pytest.fixture(scope="module")
def studio(local_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a ``langgraph dev`` server; checks at teardown that nothing is left."""
    if not LANGGRAPH.is_file():
        pytest.skip("langgraph CLI not installed: pip install 'smoa-graph[studio]'")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LANGSMITH_", "LANGCHAIN_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        SMOA_LOCAL_BASE_URL=local_base_url,
    )
    server = DevServer(tmp_path_factory.mktemp("studio") / "langgraph-dev.log", env)
    try:
        url = server.wait_ready(STARTUP_TIMEOUT_S)
        yield url
    finally:
        server.stop()
    assert server.proc.returncode is not None
    assert not group_alive(server.proc.pid), "langgraph dev left processes behind"
    if server.url:
        assert not ok(server.url), "the dev server still answers after stop"


async def assistants(url: str) -> dict[str, dict[str, Any]]:
    client = get_client(url=url)
    found = await client.assistants.search(limit=50)
    return {a["graph_id"]: a for a in found}


def test_server_announces_the_port_it_serves(studio: str) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", studio)
    assert ok(studio)


async def test_both_graphs_have_assistants(studio: str) -> None:
    found = await assistants(studio)
    assert {"smoa", "smoa_demo"} <= set(found)


@pytest.mark.parametrize("graph_id", ["smoa", "smoa_demo"])
async def test_context_schema_is_the_studio_form(studio: str, graph_id: str) -> None:
    client = get_client(url=studio)
    assistant = (await assistants(studio))[graph_id]
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    properties = schemas["context_schema"]["properties"]
    assert set(properties) == set(SMoAConfig.model_fields)
    for name, field in SMoAConfig.model_fields.items():
        assert field.description and properties[name]["description"] == field.description, name
    assert properties["preset"]["anyOf"][0]["enum"] == list(PRESET_DEFAULTS)
    assert all(field.get("default") is None for field in properties.values())  # all optional
    assert "prompt" in schemas["input_schema"]["properties"]


async def test_demo_graph_streams_with_subgraphs(studio: str) -> None:
    client = get_client(url=studio)
    assistant = (await assistants(studio))["smoa_demo"]
    thread = await client.threads.create()
    events: list[tuple[str, Any]] = []

    async def consume() -> None:
        async for part in client.runs.stream(
            thread["thread_id"],
            assistant["assistant_id"],
            input={"prompt": "What is 6 * 7?"},
            context={"model": "fake", "n_proposers": 3, "k": 2, "max_layers": 2},
            stream_mode="updates",
            stream_subgraphs=True,
        ):
            events.append((part.event, part.data))

    await asyncio.wait_for(consume(), timeout=60)
    assert not [data for event, data in events if event == "error"], events
    top = {node for event, data in events if event == "updates" for node in data}
    inner = {node for event, data in events if event.startswith("updates|layer:") for node in data}
    assert {"prepare", "layer", "moderator", "aggregator"} <= top
    assert {"propose", "judge"} <= inner  # the layer subgraph's own nodes stream too
    values = (await client.threads.get_state(thread["thread_id"]))["values"]
    assert "Final answer: 42" in values["answer"]
    assert values["layers"] and len(values["layers"][0]["candidates"]) == 3
    assert values["decisions"][-1]["stop"] is True
    assert values["messages"][-1]["type"] == "ai"


async def test_smoa_graph_runs_on_the_local_model(studio: str) -> None:
    client = get_client(url=studio)
    assistant = (await assistants(studio))["smoa"]
    thread = await client.threads.create()
    context = {"model": "local", "max_tokens": 32, "n_proposers": 2, "k": 1, "max_layers": 1}
    context |= {"selection": "judge", "final_layer_judge": True}  # the judge keeps k=1
    result = await asyncio.wait_for(
        client.runs.wait(
            thread["thread_id"],
            assistant["assistant_id"],
            input={"prompt": "What is 12 + 30?"},
            context=context,
        ),
        timeout=LOCAL_RUN_TIMEOUT_S,
    )
    assert "__error__" not in result, result
    assert result["answer"].strip()
    calls = result["calls"]
    assert all(c["ok"] and c["model"] == "smollm2" for c in calls), calls
    proposers = [c for c in calls if c["role"] == "proposer"]
    assert len(proposers) == 2 and all(c["output_tokens"] <= 32 for c in proposers), calls
    assert len(result["layers"]) == 1 and len(result["layers"][0]["judge"]["selected"]) == 1
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["answer"] == result["answer"]  # checkpointed by the server


# Last in the module: if the demo ever reaches a real model, it loads it until it is cancelled.
async def test_demo_graph_runs_with_the_default_studio_context(studio: str) -> None:
    """Studio sends the assistant's (empty) context: the demo must stay on its fake model."""
    client = get_client(url=studio)
    assistant = (await assistants(studio))["smoa_demo"]
    thread = await client.threads.create()
    run = await client.runs.create(
        thread["thread_id"], assistant["assistant_id"], input={"prompt": "What is 6 * 7?"}
    )
    try:  # the fake model answers in about a second; a real model would take far longer
        await asyncio.wait_for(client.runs.join(thread["thread_id"], run["run_id"]), timeout=20)
    except TimeoutError:
        await client.runs.cancel(thread["thread_id"], run["run_id"])
        pytest.fail("the demo graph did not finish in 20 s: is it calling a real model?")
    values = (await client.threads.get_state(thread["thread_id"]))["values"]
    assert "Final answer: 42" in values.get("answer", ""), values
    candidates = [c for layer in values["layers"] for c in layer["candidates"]]
    assert candidates and all("Final answer: 42" in c["text"] for c in candidates)  # canned
