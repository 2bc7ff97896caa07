"""The blocking client: `with tally.guard(...) as call:`. Thread-safe: one
Tally may serve many threads (one gRPC channel, one outbox)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, Iterator, Optional, Tuple, Type, Union

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
from ._errors import BudgetRefused, OutboxNotEmpty, TallyError, TallyUnavailable
from ._retry import RETRYABLE_CODES, Metadata, Retry, retry_info_s

#: Codes a WatchBudget stream ends with that a reconnect cures: the server went
#: away or restarted, or the watcher fell behind (the contract says: subscribe again).
WATCH_RECONNECT_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN")


def rpc_status(error: grpc.RpcError) -> Tuple[str, str, Optional[Metadata]]:
    """(code name, details, trailing metadata) of a failed call, blocking
    (grpc.Call) or asyncio (grpc.aio.AioRpcError)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name, error.details() or "", tuple(error.trailing_metadata())
    if isinstance(error, grpc.Call):
        code = error.code()
        return (code.name if code is not None else "UNKNOWN"), (error.details() or ""), error.trailing_metadata()
    return "UNKNOWN", str(error), None


def failure(method: str, code: str, details: str, attempts: int, retry_info: Optional[float]) -> TallyError:
    retryable = code in RETRYABLE_CODES or (code == "RESOURCE_EXHAUSTED" and retry_info is not None)
    kind = TallyUnavailable if retryable else TallyError
    return kind(f"{method}: {code}: {details} (after {attempts} attempt{'s' if attempts != 1 else ''})", code=code, details=details, attempts=attempts, retryable=retryable)


class Tally:
    """A Tally client with guarded calls.

    url: http://host:port (cleartext HTTP/2) or https://host:port (TLS,
    verified against root_certificates: PEM bytes or a file path; default
    grpc's roots). api_key: sent as "authorization: Bearer <key>".
    failure_policy: "fail_closed" (default: when Tally cannot decide, the
    guard raises TallyUnavailable and the LLM call does not run) or
    "fail_open" (the call runs unchecked and is recorded later from the
    outbox). fail_open_after_s: under fail_open, how long a decision or record
    may retry before the call proceeds / the record is queued. outbox_max:
    records kept for Tally while it is unreachable (beyond: OutboxFull).
    """

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
            self._channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        #: The generated stub on this client's channel, for every other RPC
        #: (pass metadata=tally.metadata for the API key).
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
        self._flush_lock = threading.Lock()
        self._flusher: Optional[threading.Thread] = None
        self._flusher_lock = threading.Lock()
        self._closing = threading.Event()

    # --- public API ---------------------------------------------------------

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
    ) -> "Guard":
        """Reserve estimate_nanos (or the catalog's worst case of model for
        input_tokens + max_output_tokens) for `ttl` (seconds or a timedelta),
        under a request id generated here (or request_id) and kept for every
        retry; use it as `with tally.guard(...) as call:`."""
        spec = GuardSpec.of(project, estimate_nanos, model, input_tokens, max_output_tokens, self.agent if agent is None else agent, self.ttl if ttl is None else ttl, request_id)
        return Guard(self, spec)

    def watch(self, project: str) -> Iterator[budget_pb2.BudgetEvent]:
        """WatchBudget's events for `project`, reconnecting (with backoff) when
        the stream breaks; each connection starts with a SNAPSHOT. Errors that
        a reconnect cannot cure (UNAUTHENTICATED, PERMISSION_DENIED,
        INVALID_ARGUMENT, ...) raise TallyError. Stop by closing the generator."""
        attempt = 0
        while True:
            stream = self.stub.WatchBudget(budget_pb2.WatchBudgetRequest(project_id=project), metadata=self.metadata)
            try:
                for response in stream:
                    attempt = 0
                    yield response.event
            except grpc.RpcError as error:
                code, details, _ = rpc_status(error)
                if code not in WATCH_RECONNECT_CODES:
                    raise TallyError(f"WatchBudget: {code}: {details}", code=code, details=details) from None
            finally:
                stream.cancel()
            self._counters.add("watch_reconnects")
            time.sleep(self.retry.backoff_s(attempt))
            attempt += 1

    def flush(self, timeout_s: float = 30.0) -> int:
        """Delivers the outbox (same request ids) until it is empty or
        timeout_s passed; returns how many records are still queued."""
        deadline = time.monotonic() + timeout_s
        while len(self._outbox) > 0:
            self._flush_round()
            remaining = deadline - time.monotonic()
            if len(self._outbox) == 0 or remaining <= 0:
                break
            time.sleep(min(self.flush_interval_s, remaining))
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

    def close(self, timeout_s: float = 30.0) -> None:
        """Flushes the outbox (at most timeout_s), then closes the channel.
        Records still queued raise OutboxNotEmpty carrying them."""
        left = self.flush(timeout_s)
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        self._channel.close()
        if left:
            raise OutboxNotEmpty(f"{left} records could not be delivered to Tally before close", self._outbox.drain())

    def __enter__(self) -> "Tally":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    # --- internals ----------------------------------------------------------

    def _wait_s(self) -> float:
        """How long one decision or record may keep retrying."""
        if self.failure_policy == FAIL_OPEN:
            return min(self.retry.total_s, self.fail_open_after_s)
        return self.retry.total_s

    def _send(self, method: str, request: Any, wait_s: float, attempts_max: Optional[int] = None) -> Any:
        """Sends one request, retrying what is safe to retry (same request,
        same request id) within wait_s and the attempt bound."""
        started = time.monotonic()
        limit = attempts_max or self.retry.attempts_max
        attempt = 0
        while True:
            left = wait_s - (time.monotonic() - started)
            timeout = max(0.1, min(self.retry.call_timeout_s, left))
            try:
                return getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)
            except grpc.RpcError as error:
                code, details, trailing = rpc_status(error)
                retry_info = retry_info_s(trailing)
                delay = self.retry.delay_s(code, retry_info, attempt)
                attempt += 1
                if delay is None or attempt >= limit or time.monotonic() - started + delay >= wait_s:
                    raise failure(method, code, details, attempt, retry_info) from None
                self._counters.add("retries")
                time.sleep(delay)

    def _reserve(self, call: GuardedCall, spec: GuardSpec) -> None:
        key = spec.request_id
        for round_ in range(1, 4):
            try:
                check: budget_pb2.CheckBudgetResponse = self._send("CheckBudget", spec.reserve_request(key), self._wait_s())
            except TallyError as error:
                if error.code == "FAILED_PRECONDITION" and error.attempts > 1 and round_ < 3:
                    # An earlier attempt placed the hold but its answer was
                    # lost, and the hold ended before the retry: that key is
                    # spent (and holds nothing). Reserve under a derived key.
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

    def _finish(self, call: GuardedCall, body_error: Optional[BaseException]) -> None:
        if not call.reported:
            if call.hold_id:
                self._release(call)
            call.outcome = "skipped" if call._skipped else "released"
            if body_error is None and not call._skipped:
                call._record_request()  # raises UsageNotReported
            return
        self._record(call, call._record_request())

    def _record(self, call: GuardedCall, record: budget_pb2.RecordCostRequest) -> None:
        while True:
            try:
                response: budget_pb2.RecordCostResponse = self._send("RecordCost", record, self._wait_s())
            except TallyError as error:
                if error.code == "FAILED_PRECONDITION" and record.hold_id:
                    # The hold expired (or was released) before the record: the
                    # cost is real all the same, so record it without the hold.
                    record.hold_id = ""
                    continue
                if error.retryable:
                    self._outbox.add(record)
                    self._counters.add("queued")
                    call.outcome = "queued"
                    self._start_flusher()
                    return
                if call.hold_id:
                    self._release(call)  # e.g. no price for the model: give the estimate back now
                raise
            if response.duplicate:
                self._counters.add("duplicates")
            call.recorded = response
            call.outcome = "settled" if record.hold_id else "recorded"
            self._counters.add("settled" if record.hold_id else "recorded_without_hold")
            return

    def _release(self, call: GuardedCall) -> None:
        try:
            self._send("ReleaseHold", budget_pb2.ReleaseHoldRequest(project_id=call.project, hold_id=call.hold_id), self._wait_s())
            self._counters.add("released")
        except TallyError as error:
            if error.code == "NOT_FOUND":
                self._counters.add("released")  # already gone (expired): nothing holds budget
            else:
                self._counters.add("release_failures")  # it expires at its TTL

    def _start_flusher(self) -> None:
        with self._flusher_lock:
            if self._flusher is None and not self._closing.is_set():
                self._flusher = threading.Thread(target=self._flush_loop, name="tally-outbox", daemon=True)
                self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closing.wait(self.flush_interval_s):
            try:
                self._flush_round()
            except Exception:  # never let the flusher die; the next round tries again
                pass

    def _flush_round(self) -> None:
        with self._flush_lock:
            while (record := self._outbox.first()) is not None:
                try:
                    response = self._deliver(record)
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

    def _deliver(self, record: budget_pb2.RecordCostRequest) -> budget_pb2.RecordCostResponse:
        """One attempt at a queued record (the flush loop is the retry)."""
        while True:
            try:
                response: budget_pb2.RecordCostResponse = self._send("RecordCost", record, self.retry.call_timeout_s, attempts_max=1)
                return response
            except TallyError as error:
                if error.code == "FAILED_PRECONDITION" and record.hold_id:
                    record.hold_id = ""
                    continue
                raise


class Guard:
    """`with tally.guard(...) as call:` (see GuardedCall)."""

    def __init__(self, tally: Tally, spec: GuardSpec) -> None:
        self._tally = tally
        self._spec = spec
        self._call: Optional[GuardedCall] = None

    def __enter__(self) -> GuardedCall:
        call = GuardedCall(self._spec)
        self._tally._reserve(call, self._spec)
        self._call = call
        return call

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        assert self._call is not None
        self._tally._finish(self._call, exc)
