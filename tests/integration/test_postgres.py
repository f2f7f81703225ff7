"""Postgres checkpoints on a real, throwaway PostgreSQL 15 server.

The server runs as an unprivileged user (``initdb`` and ``postgres`` refuse root) from Debian's
binaries, with its data directory and unix socket in a temporary folder and TCP on a free
loopback port only; it is stopped whatever the tests do. Binaries missing: the fixture fails
with the fix (``scripts/ensure_postgres.sh``, which ``make test`` runs).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kill_resume import (
    ASK_ARGV,
    CLI_WORKER,
    RESUMED_CALLS,
    kill_after_the_fast_proposers,
    logged_calls,
)

from smoa_graph.cli import main
from smoa_graph.local_server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "pg-test-secret-7"
SERVER_USER = "nobody"


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as an unprivileged user when we are root."""
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _pg(tool: str, *args: str) -> None:
    subprocess.run(
        _as_server_user([str(PG_BIN / tool), *args]),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A password-protected database on a fresh server: ``postgresql://smoa:...@127.0.0.1:P``."""
    missing = [t for t in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / t).is_file()]
    if missing:
        pytest.fail(
            f"PostgreSQL 15 server binaries missing in {PG_BIN} ({', '.join(missing)}): run "
            "scripts/ensure_postgres.sh (as root it installs Debian's postgresql-15)",
            pytrace=False,
        )
    root = Path(tempfile.mkdtemp(prefix="smoa-pg-"))
    data, socket_dir, password_file = root / "data", root / "socket", root / "password"
    socket_dir.mkdir()
    password_file.write_text(PASSWORD)
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        for path in (root, socket_dir, password_file):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {socket_dir} -c fsync=off"
    started = False
    try:
        _pg(
            "initdb",
            *(
                "-D",
                str(data),
                "-U",
                "smoa",
                f"--pwfile={password_file}",
                "--no-locale",
                "-E",
                "UTF8",
            ),
            *("--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync"),
        )
        _pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "start")
        started = True
        yield f"postgresql://smoa:{PASSWORD}@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        detail = log.read_text() if log.exists() else exc.stderr
        pytest.fail(f"PostgreSQL did not start: {exc.stderr}\n{detail}", pytrace=False)
    finally:
        if started:
            _stop(data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(data: Path) -> None:
    """Stop the server; kill it if a fast shutdown does not end it."""
    try:
        _pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop")
    except subprocess.SubprocessError:
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def test_a_killed_ask_resumes_in_another_process_without_repeating_calls(
    postgres_url: str, tmp_path: Path
) -> None:
    argv = [*ASK_ARGV, "--thread-id", "killed", "--checkpoint-db", postgres_url]
    with psycopg.connect(postgres_url, autocommit=True) as watcher:

        def saved_proposers() -> int:
            """Proposer results saved as pending writes of the interrupted superstep."""
            try:
                row = watcher.execute(
                    "SELECT count(*) FROM checkpoint_writes WHERE channel = 'candidates'"
                ).fetchone()
            except psycopg.errors.UndefinedTable:  # tables not created yet
                return 0
            return int(row[0]) if row else 0

        kill_after_the_fast_proposers(tmp_path, CLI_WORKER, argv, saved_proposers)
    resumed_log = tmp_path / "resumed.log"
    resume = ["ask", "--resume", "--thread-id", "killed", "--checkpoint-db", postgres_url, "--json"]
    done = subprocess.run(
        [sys.executable, str(tmp_path / "worker.py"), str(resumed_log), *resume],
        env={**os.environ, "SMOA_FAKE_SLOW_S": "0.2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert logged_calls(resumed_log) == RESUMED_CALLS  # the killed run's proposers are kept
    data = json.loads(done.stdout)
    assert data["answer"].endswith("Final answer: 42") and data["thread_id"] == "killed"
    proposers = [c["index"] for c in data["calls"] if c["role"] == "proposer"]
    assert sorted(proposers) == [0, 1, 2, 3]  # each once
    assert data["config"]["proposer_models"] == ["fast", "fast", "slow", "slow"]  # from the store
    assert PASSWORD not in done.stdout + done.stderr


def test_bench_on_postgres_removes_the_threads_of_finished_pairs(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    flags = ["--variants", "single", "smoa", "--limit", "2", "--concurrency", "2"]
    argv = ["bench", "--model", "fake", "--out", str(out), *flags]
    assert main([*argv, "--checkpoint-db", postgres_url]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(row["error"] is None for row in rows)
    assert not (out / "checkpoints.sqlite").exists()
    with psycopg.connect(postgres_url) as conn:
        left: Any = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id LIKE %s", (f"{out.resolve()}:%",)
        ).fetchone()
    assert left[0] == 0  # every pair finished: nothing kept to resume
    assert PASSWORD not in capsys.readouterr().out
