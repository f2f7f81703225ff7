"""Where checkpointed runs keep their state: a SQLite file, or a PostgreSQL database.

``open_persistence(target)`` takes what ``--checkpoint-db`` takes: a file path (SQLite, ships
with the package) or a ``postgresql://`` / ``postgres://`` connection string (the ``postgres``
extra: ``langgraph-checkpoint-postgres`` with psycopg). Either way it yields a ready
checkpointer and store, tables created. Keep the password out of the URL where you can (libpq
reads ``PGPASSWORD`` and ``~/.pgpass``); one in it is redacted from every message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from smoa_graph.models import describe_error, redact

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
POSTGRES_FIX = "pip install 'smoa-graph[postgres]'"
POSTGRES_URL = "postgresql://USER@HOST:PORT/DATABASE"


class CheckpointDBError(Exception):
    """A checkpoint target that cannot be used; ``usage``: the target itself is wrong."""

    def __init__(self, message: str, *, usage: bool) -> None:
        super().__init__(message)
        self.usage = usage


class Persistence(NamedTuple):
    """A checkpointer for the graph and a store for per-thread settings, on one database."""

    checkpointer: BaseCheckpointSaver[Any]
    store: BaseStore


def is_postgres(target: str | Path) -> bool:
    """True for a PostgreSQL connection string (scheme ``postgresql://`` or ``postgres://``)."""
    return str(target).lower().startswith(POSTGRES_SCHEMES)


def database_errors() -> tuple[type[Exception], ...]:
    """Errors a checkpoint database raises (SQLite's, and psycopg's when it is installed)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


@asynccontextmanager
async def sqlite_checkpointer(path: str | Path) -> AsyncIterator[AsyncSqliteSaver]:
    """An ``AsyncSqliteSaver`` on the file ``path`` (WAL journal, ``synchronous=NORMAL``).

    A killed process loses no committed checkpoint; only a power cut may lose the last ones, and
    in exchange no commit waits for an fsync (about 3x less checkpoint overhead per run).
    """
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        await saver.conn.execute("PRAGMA synchronous=NORMAL")
        yield saver


@asynccontextmanager
async def _sqlite(path: Path) -> AsyncIterator[Persistence]:
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    path.parent.mkdir(parents=True, exist_ok=True)
    async with (
        sqlite_checkpointer(path) as saver,
        AsyncSqliteStore.from_conn_string(str(path)) as store,
    ):
        await store.setup()
        yield Persistence(saver, store)


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[Persistence]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.store.postgres.aio import AsyncPostgresStore
        from psycopg import OperationalError, ProgrammingError
    except ImportError as exc:
        raise CheckpointDBError(
            f"a Postgres checkpoint database needs the postgres extra ({exc}): {POSTGRES_FIX}",
            usage=True,
        ) from None
    async with AsyncExitStack() as stack:
        try:
            saver = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(url))
            store = await stack.enter_async_context(AsyncPostgresStore.from_conn_string(url))
            await saver.setup()
            await store.setup()
        except (OperationalError, ProgrammingError) as exc:  # no server, login refused, bad URL
            usage = isinstance(exc, ProgrammingError)
            fix = (
                f"write it as {POSTGRES_URL}"
                if usage
                else "check that the server runs and the URL's host, port, user, password and "
                "database name"
            )
            raise CheckpointDBError(
                f"checkpoint database {redact(url)}: {describe_error(exc)} ({fix})", usage=usage
            ) from None
        yield Persistence(saver, store)


@asynccontextmanager
async def open_persistence(target: str | Path) -> AsyncIterator[Persistence]:
    """A ready checkpointer and store on ``target``: a SQLite file or a Postgres URL.

    A target that names neither, or Postgres without its extra, raises ``CheckpointDBError``
    before anything runs.
    """
    text = str(target)
    if is_postgres(text):
        async with _postgres(text) as opened:
            yield opened
        return
    if "://" in text or not text.strip() or Path(text).is_dir():
        raise CheckpointDBError(
            f"checkpoint database {redact(text)!r}: expected a SQLite file path or a "
            f"{POSTGRES_URL} connection string",
            usage=True,
        )
    async with _sqlite(Path(text)) as opened:
        yield opened
