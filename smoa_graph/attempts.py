"""The attempts of one model call: retried while the error is transient, each failure recorded.

Retries happen around the model call inside the node (tenacity), so every failed attempt is a
record held by the node's own invocation: nothing outlives the task however it ends (success,
failure for good, cancellation mid-retry), and ``max_attempts`` / ``retry_backoff_s`` are read
per run. A call that fails for good raises its last error with every failed attempt's record
attached (``failed_calls(error)``): error handlers put them in the state, and an error that ends
the run carries them to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from smoa_graph.config import SMoAConfig
from smoa_graph.errors import AttemptTimeoutError
from smoa_graph.models import call_record, describe_error, is_transient
from smoa_graph.state import CallRecord

T = TypeVar("T")
_FAILED_CALLS = "smoa_failed_calls"
MAX_BACKOFF_S = 60.0


def failed_calls(error: BaseException) -> list[CallRecord]:
    """Records of the failed attempts of the model call that ended with ``error`` (or [])."""
    return list(getattr(error, _FAILED_CALLS, ()))


def is_model_error(error: BaseException) -> bool:
    """True for errors of a model call (an endpoint, a provider SDK, or a call that failed for
    good), not of bad input, a file or a bug."""
    import httpx
    from langchain_core.exceptions import ModelError

    api_error = any(cls.__name__ == "APIError" for cls in type(error).__mro__)  # OpenAI-style
    return (
        isinstance(error, (ModelError, httpx.HTTPError)) or api_error or bool(failed_calls(error))
    )


def failure_records(
    error: BaseException, *, role: str, layer: int, index: int | None, spec: str
) -> list[CallRecord]:
    """Every failed attempt of a node that failed for good, the last one with ``error``.

    For error handlers: a node can also fail before its model call (no records attached).
    """
    records = failed_calls(error) or [
        call_record(role, layer, index, spec, None, time.perf_counter(), None, error)
    ]
    records[-1] = {**records[-1], "ok": False, "error": describe_error(error)}
    return records


@dataclass
class CallAttempts:
    """One model call of a node: who makes it, its attempts so far, its retry settings."""

    cfg: SMoAConfig
    role: str
    layer: int
    index: int | None
    spec: str
    timeout_s: float | None = None
    failed: list[CallRecord] = field(default_factory=list)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` until it succeeds, the error is not transient, or attempts run out."""
        backoff = self.cfg.retry_backoff_s
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_attempts),
            wait=wait_exponential(multiplier=backoff, max=MAX_BACKOFF_S)
            + wait_random(0, 1.0 if backoff else 0.0),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(call)
        except Exception as exc:
            raise self._attach(exc) from exc.__cause__
        raise AssertionError("tenacity ended without a result or an error")  # pragma: no cover

    async def _once(self, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                return await call()
        except Exception as exc:
            error: Exception = exc
            if deadline.expired():
                error = AttemptTimeoutError(f"no answer within {self.timeout_s:g} s (per attempt)")
            self.failed.append(self._record(started, error))
            if error is not exc:
                raise error from None
            raise

    def reject(self, record: CallRecord, error: Exception) -> NoReturn:
        """The call answered but the answer is unusable: record it as failed, raise (no retry)."""
        self.failed.append({**record, "ok": False, "error": describe_error(error)})
        raise self._attach(error)

    def succeeded(self, record: CallRecord) -> list[CallRecord]:
        """The records of this call: the failed attempts, then the successful one."""
        return [*self.failed, record]

    def _record(self, started: float, error: BaseException) -> CallRecord:
        return call_record(self.role, self.layer, self.index, self.spec, None, started, None, error)

    def _attach(self, error: Exception) -> Exception:
        if not self.failed:  # failed before any attempt was made (e.g. building the request)
            self.failed.append(self._record(time.perf_counter(), error))
        setattr(error, _FAILED_CALLS, list(self.failed))
        return error
