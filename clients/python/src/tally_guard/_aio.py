"""The asyncio client: `async with tally.guard(...) as call:`. Cancelling the
task inside the block releases the hold (shielded, so the release itself is
not cut short) and re-raises CancelledError."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, AsyncIterator, Optional, Set, Tuple, Type, Union

import grpc
from tally.budget.v1 import budget_pb2, budget_pb2_grpc

from ._call import (
    CHANNEL_OPTIONS,
    FAIL_CLOSED,
    FAIL_OPEN,
    Counters,
    FailurePolicy,
    GuardedCall,
    GuardSpec,
    Outbox,
    OutboxErrorHandler,
    Stats,
    Ttl,
    auth_metadata,
    parse_url,
    read_root_certificates,
)
from ._errors import BudgetRefused, OutboxNotEmpty, TallyError
from ._retry import Retry, retry_info_s
from ._sync import WATCH_RECONNECT_CODES, failure, rpc_status


class AsyncTally:
    """The asyncio twin of Tally: same options, same behaviour, awaitable."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        api_key: Optional[str] = None,
        root_certificates: Union[bytes, str, None] = None,
        failure_policy: FailurePolicy = FAIL_CLOSED,
        retry: Optional[Retry] = None,
        fail_open_after_s: float = 1.0,
        outbox_max: int = 1000,
        flush_interval_s: float = 0.5,
        agent: str = "",
        ttl: Ttl = 300,
        on_outbox_error: Optional[OutboxErrorHandler] = None,
    ) -> None:
        if failure_policy not in (FAIL_CLOSED, FAIL_OPEN):
            raise ValueError(f"failure_policy must be 'fail_closed' or 'fail_open', got {failure_policy!r}")
        target, tls = parse_url(url)
        if tls:
            credentials = grpc.ssl_channel_credentials(read_root_certificates(root_certificates))
            self._channel = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = budget_pb2_grpc.BudgetServiceStub(self._channel)
        self.metadata = auth_metadata(api_key)
        self.failure_policy = failure_policy
        self.retry = retry or Retry()
        self.fail_open_after_s = fail_open_after_s
        self.flush_interval_s = flush_interval_s
        self.agent = agent
        self.ttl = ttl
        self.on_outbox_error = on_outbox_error
        self._outbox = Outbox(outbox_max)
        self._counters = Counters()
        self._flush_lock = asyncio.Lock()
        self._flusher: Optional[asyncio.Task[None]] = None
        self._closing = False
        self._background: Set[asyncio.Task[Any]] = set()

    def guard(
        self,
        project: str,
        *,
        estimate_nanos: Optional[int] = None,
        model: Optional[str] = None,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        agent: Optional[str] = None,
        ttl: Optional[Ttl] = None,
        request_id: Optional[str] = None,
    ) -> "AsyncGuard":
        """See Tally.guard; use it as `async with tally.guard(...) as call:`."""
        spec = GuardSpec.of(project, estimate_nanos, model, input_tokens, max_output_tokens, self.agent if agent is None else agent, self.ttl if ttl is None else ttl, request_id)
        return AsyncGuard(self, spec)

    async def watch(self, project: str) -> AsyncIterator[budget_pb2.BudgetEvent]:
        """See Tally.watch: `async for event in tally.watch(project):`."""
        attempt = 0
        while True:
            stream = self.stub.WatchBudget(budget_pb2.WatchBudgetRequest(project_id=project), metadata=self.metadata)
            try:
                async for response in stream:
                    attempt = 0
                    yield response.event
            except grpc.RpcError as error:
                code, details, _ = rpc_status(error)
                if code not in WATCH_RECONNECT_CODES:
                    raise TallyError(f"WatchBudget: {code}: {details}", code=code, details=details) from None
            finally:
                stream.cancel()
            self._counters.add("watch_reconnects")
            await asyncio.sleep(self.retry.backoff_s(attempt))
            attempt += 1

    async def flush(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while len(self._outbox) > 0:
            await self._flush_round()
            remaining = deadline - time.monotonic()
            if len(self._outbox) == 0 or remaining <= 0:
                break
            await asyncio.sleep(min(self.flush_interval_s, remaining))
        return len(self._outbox)

    @property
    def outbox_size(self) -> int:
        return len(self._outbox)

    @property
    def outbox_failed(self) -> list[Tuple[budget_pb2.RecordCostRequest, Exception]]:
        return list(self._outbox.failed)

    @property
    def stats(self) -> Stats:
        return self._counters.snapshot()

    async def close(self, timeout_s: float = 30.0) -> None:
        left = await self.flush(timeout_s)
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self._channel.close()
        if left:
            raise OutboxNotEmpty(f"{left} records could not be delivered to Tally before close", self._outbox.drain())

    async def __aenter__(self) -> "AsyncTally":
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.close()

    def _wait_s(self) -> float:
        if self.failure_policy == FAIL_OPEN:
            return min(self.retry.total_s, self.fail_open_after_s)
        return self.retry.total_s

    async def _send(self, method: str, request: Any, wait_s: float, attempts_max: Optional[int] = None) -> Any:
        started = time.monotonic()
        limit = attempts_max or self.retry.attempts_max
        attempt = 0
        while True:
            left = wait_s - (time.monotonic() - started)
            timeout = max(0.1, min(self.retry.call_timeout_s, left))
            try:
                return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)
            except grpc.RpcError as error:
                code, details, trailing = rpc_status(error)
                retry_info = retry_info_s(trailing)
                delay = self.retry.delay_s(code, retry_info, attempt)
                attempt += 1
                if delay is None or attempt >= limit or time.monotonic() - started + delay >= wait_s:
                    raise failure(method, code, details, attempt, retry_info) from None
                self._counters.add("retries")
                await asyncio.sleep(delay)

    async def _reserve(self, call: GuardedCall, spec: GuardSpec) -> None:
        key = spec.request_id
        for round_ in range(1, 4):
            try:
                check: budget_pb2.CheckBudgetResponse = await self._send("CheckBudget", spec.reserve_request(key), self._wait_s())
            except TallyError as error:
                if error.code == "FAILED_PRECONDITION" and error.attempts > 1 and round_ < 3:
                    self._counters.add("re_reserves")
                    key = f"{spec.request_id}.r{round_ + 1}"
                    continue
                if error.retryable and self.failure_policy == FAIL_OPEN:
                    call.decision = "unchecked"
                    self._counters.add("unchecked")
                    return
                raise
            self._counters.add("reserves")
            if not check.allowed:
                self._counters.add("refused")
                reason = budget_pb2.BudgetDecisionReason.Name(check.reason)
                raise BudgetRefused(f"budget refused {spec.project}: {reason}, {check.decided_by_remaining_nanos} nanos remaining", check)
            call._accept(check)
            return

    async def _finish(self, call: GuardedCall, body_error: Optional[BaseException]) -> None:
        if not call.reported:
            if call.hold_id:
                await self._release(call)
            call.outcome = "skipped" if call._skipped else "released"
            if body_error is None and not call._skipped:
                call._record_request()  # raises UsageNotReported
            return
        await self._record(call, call._record_request())

    async def _record(self, call: GuardedCall, record: budget_pb2.RecordCostRequest) -> None:
        while True:
            try:
                response: budget_pb2.RecordCostResponse = await self._send("RecordCost", record, self._wait_s())
            except TallyError as error:
                if error.code == "FAILED_PRECONDITION" and record.hold_id:
                    record.hold_id = ""
                    continue
                if error.retryable:
                    self._outbox.add(record)
                    self._counters.add("queued")
                    call.outcome = "queued"
                    self._start_flusher()
                    return
                if call.hold_id:
                    await self._release(call)
                raise
            if response.duplicate:
                self._counters.add("duplicates")
            call.recorded = response
            call.outcome = "settled" if record.hold_id else "recorded"
            self._counters.add("settled" if record.hold_id else "recorded_without_hold")
            return

    async def _release(self, call: GuardedCall) -> None:
        try:
            await self._send("ReleaseHold", budget_pb2.ReleaseHoldRequest(project_id=call.project, hold_id=call.hold_id), self._wait_s())
            self._counters.add("released")
        except TallyError as error:
            if error.code == "NOT_FOUND":
                self._counters.add("released")
            else:
                self._counters.add("release_failures")

    def _start_flusher(self) -> None:
        if self._flusher is None and not self._closing:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="tally-outbox")

    async def _flush_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self._flush_round()
            except Exception:
                pass

    async def _flush_round(self) -> None:
        async with self._flush_lock:
            while (record := self._outbox.first()) is not None:
                try:
                    response = await self._deliver(record)
                except TallyError as error:
                    if error.retryable:
                        return
                    self._outbox.remove(record)
                    self._outbox.failed.append((record, error))
                    self._counters.add("outbox_failed")
                    if self.on_outbox_error is not None:
                        self.on_outbox_error(record, error)
                    continue
                self._outbox.remove(record)
                self._counters.add("flushed")
                if response.duplicate:
                    self._counters.add("duplicates")

    async def _deliver(self, record: budget_pb2.RecordCostRequest) -> budget_pb2.RecordCostResponse:
        while True:
            try:
                response: budget_pb2.RecordCostResponse = await self._send("RecordCost", record, self.retry.call_timeout_s, attempts_max=1)
                return response
            except TallyError as error:
                if error.code == "FAILED_PRECONDITION" and record.hold_id:
                    record.hold_id = ""
                    continue
                raise


class AsyncGuard:
    """`async with tally.guard(...) as call:` (see GuardedCall)."""

    def __init__(self, tally: AsyncTally, spec: GuardSpec) -> None:
        self._tally = tally
        self._spec = spec
        self._call: Optional[GuardedCall] = None

    async def __aenter__(self) -> GuardedCall:
        call = GuardedCall(self._spec)
        await self._tally._reserve(call, self._spec)
        self._call = call
        return call

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        assert self._call is not None
        if isinstance(exc, asyncio.CancelledError):
            # Cancelled inside the block: give the hold back even if this task
            # is cancelled again while waiting (the release runs to its end).
            task = asyncio.ensure_future(self._tally._finish(self._call, exc))
            self._tally._background.add(task)
            task.add_done_callback(self._tally._background.discard)
            await asyncio.shield(task)
            return
        await self._tally._finish(self._call, exc)
