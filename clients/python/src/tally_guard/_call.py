"""What the sync and asyncio clients share: the guarded call's state, the
requests it sends, the outbox and the counters. No I/O here."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Deque, List, Literal, Optional, Tuple, Union

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from tally.budget.v1 import budget_pb2

from ._errors import OutboxFull, UsageNotReported
from ._usage import StreamUsage, Usage, usage_from

FailurePolicy = Literal["fail_closed", "fail_open"]
FAIL_CLOSED: FailurePolicy = "fail_closed"
FAIL_OPEN: FailurePolicy = "fail_open"

Ttl = Union[timedelta, float, int]


def new_request_id() -> str:
    """A fresh idempotency key: kept for every retry of this call's reserve
    and record (Tally's key namespaces for the two are separate)."""
    return f"g-{uuid.uuid4().hex}"


def ttl_duration(ttl: Ttl) -> Duration:
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds < 1:
        raise ValueError(f"ttl must be at least 1 second (Tally's minimum), got {seconds}")
    duration = Duration()
    duration.FromMilliseconds(int(round(seconds * 1000)))
    return duration


@dataclass(frozen=True)
class GuardSpec:
    """What guard() was asked: the estimate (nanos, or a model's worst case
    from input_tokens and max_output_tokens) and the labels."""

    project: str
    estimate_nanos: Optional[int]
    model: str
    input_tokens: int
    max_output_tokens: int
    agent: str
    ttl: Duration
    request_id: str

    @staticmethod
    def of(project: str, estimate_nanos: Optional[int], model: Optional[str], input_tokens: int, max_output_tokens: int, agent: str, ttl: Ttl, request_id: Optional[str]) -> "GuardSpec":
        if not project:
            raise ValueError("project is required")
        if (estimate_nanos is None) == (not model):
            raise ValueError("give either estimate_nanos, or model with input_tokens and max_output_tokens")
        if estimate_nanos is not None and estimate_nanos < 0:
            raise ValueError("estimate_nanos must be >= 0")
        if input_tokens < 0 or max_output_tokens < 0:
            raise ValueError("input_tokens and max_output_tokens must be >= 0")
        return GuardSpec(project, estimate_nanos, model or "", input_tokens, max_output_tokens, agent, ttl_duration(ttl), request_id or new_request_id())

    def reserve_request(self, reserve_key: str) -> budget_pb2.CheckBudgetRequest:
        # The agent goes with the reservation too: its cap in the project counts the hold.
        request = budget_pb2.CheckBudgetRequest(project_id=self.project, reserve=True, request_id=reserve_key, agent_id=self.agent)
        request.hold_ttl.CopyFrom(self.ttl)
        if self.model:
            request.model = self.model
            request.input_tokens = self.input_tokens
            request.max_output_tokens = self.max_output_tokens
        else:
            request.estimated_cost_nanos = self.estimate_nanos or 0
        return request


Decision = Literal["allowed", "unchecked"]
Outcome = Literal["settled", "recorded", "queued", "released", "skipped"]


class GuardedCall:
    """The call inside a guard: report what it used, then leave the block.

    Leaving normally records the report, settling the hold (or recording
    without it if the hold expired); leaving by an exception or cancellation
    before a report releases the hold and records nothing. A report made
    before an exception is recorded all the same: that money was spent.
    """

    def __init__(self, spec: GuardSpec) -> None:
        self.project = spec.project
        self.request_id = spec.request_id
        self.model = spec.model
        self.agent = spec.agent
        #: "allowed" (Tally reserved the estimate) or "unchecked" (fail_open:
        #: Tally could not decide, the call runs without a hold).
        self.decision: Decision = "allowed"
        self.check: Optional[budget_pb2.CheckBudgetResponse] = None
        self.hold_id = ""
        self.hold_expires_at: Optional[datetime] = None
        self.estimate_nanos = spec.estimate_nanos or 0
        #: After the block: "settled" (recorded with the hold), "recorded"
        #: (without one: expired, or unchecked), "queued" (in the outbox,
        #: Tally unreachable), "released", "skipped".
        self.outcome: Optional[Outcome] = None
        #: Tally's answer to the record (None if queued or nothing recorded).
        self.recorded: Optional[budget_pb2.RecordCostResponse] = None
        self._usage: Optional[Usage] = None
        self._cost_nanos: Optional[int] = None
        self._stream: Optional[StreamUsage] = None
        self._skipped = False
        self._occurred_at_ms: Optional[int] = None

    def _accept(self, check: budget_pb2.CheckBudgetResponse) -> None:
        self.check = check
        self.hold_id = check.hold_id
        self.estimate_nanos = check.estimated_cost_nanos
        if check.HasField("hold_expires_at"):
            self.hold_expires_at = check.hold_expires_at.ToDatetime(tzinfo=timezone.utc)

    def report(self, response: Any, *, cost_nanos: Optional[int] = None) -> None:
        """The provider's response (or its usage; OpenAI or Anthropic style):
        its tokens are recorded and, without cost_nanos, Tally prices them
        from its catalog."""
        self.report_usage(usage_from(response), cost_nanos=cost_nanos)

    def report_usage(self, usage: Usage, *, cost_nanos: Optional[int] = None) -> None:
        if cost_nanos is not None and cost_nanos < 0:
            raise ValueError("cost_nanos must be >= 0")
        self._usage = usage
        self._cost_nanos = cost_nanos
        self._occurred_at_ms = int(time.time() * 1000)

    def report_cost(self, cost_nanos: int, *, input_tokens: int = 0, output_tokens: int = 0, cached_input_tokens: int = 0, cache_write_tokens: int = 0) -> None:
        """The call's cost as you computed it, with its tokens as labels."""
        self.report_usage(Usage(input_tokens, cached_input_tokens, cache_write_tokens, output_tokens), cost_nanos=cost_nanos)

    def observe(self, chunk: Any) -> None:
        """One chunk/event of a streamed response; the final usage among them is
        recorded when the block ends."""
        if self._stream is None:
            self._stream = StreamUsage()
        self._stream.observe(chunk)
        if self._stream.usage is not None:
            self._usage = self._stream.usage
            self._cost_nanos = None
            self._occurred_at_ms = int(time.time() * 1000)

    def skip(self) -> None:
        """No LLM call was made after all: release the hold, record nothing."""
        self._skipped = True

    @property
    def reported(self) -> bool:
        return self._usage is not None

    def _record_request(self) -> budget_pb2.RecordCostRequest:
        usage = self._usage
        if usage is None:
            if self._stream is not None:
                raise UsageNotReported("the stream ended without its final usage (OpenAI: stream_options={'include_usage': True}); the hold was released, nothing recorded")
            raise UsageNotReported("the guarded call reported no usage or cost (call report(), report_cost(), observe() or skip()); the hold was released, nothing recorded")
        model = self.model or usage.model
        request = budget_pb2.RecordCostRequest(
            project_id=self.project,
            request_id=self.request_id,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
            model=model,
            agent_id=self.agent,
            hold_id=self.hold_id,
        )
        if self._cost_nanos is not None:
            request.cost_nanos = self._cost_nanos
            request.cost_source = budget_pb2.COST_SOURCE_REPORTED
        else:
            if not model:
                raise UsageNotReported("usage without cost_nanos needs a model for Tally to price it (guard(model=...) or the response's model)")
            request.cost_source = budget_pb2.COST_SOURCE_CATALOG
        # The call's time is part of the payload: a retry (or a late flush from
        # the outbox) is the same record, priced at the price of its time.
        occurred = Timestamp()
        occurred.FromMilliseconds(self._occurred_at_ms or int(time.time() * 1000))
        request.occurred_at.CopyFrom(occurred)
        return request


@dataclass
class Stats:
    """Counters since the client was created (what the scenarios report)."""

    reserves: int = 0
    re_reserves: int = 0
    refused: int = 0
    unchecked: int = 0
    retries: int = 0
    settled: int = 0
    recorded_without_hold: int = 0
    duplicates: int = 0
    released: int = 0
    release_failures: int = 0
    queued: int = 0
    flushed: int = 0
    outbox_failed: int = 0
    watch_reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Counters:
    """Stats behind a lock: the sync client is used from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = Stats()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + n)

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(**self._stats.as_dict())


class Outbox:
    """Records Tally did not acknowledge, oldest first, at most `max_records`.
    Each keeps its request id (and payload), so a flush is a retry: counted
    once even if an earlier attempt did reach Tally. In memory: records are
    lost only if the process dies before a flush (close() says what is left)."""

    def __init__(self, max_records: int) -> None:
        if max_records < 1:
            raise ValueError("outbox_max must be >= 1")
        self.max_records = max_records
        self._records: Deque[budget_pb2.RecordCostRequest] = deque()
        self._lock = threading.Lock()
        #: Records Tally refused for good on flush (e.g. INVALID_ARGUMENT), with
        #: the error: kept here and passed to on_outbox_error, never dropped.
        self.failed: List[Tuple[budget_pb2.RecordCostRequest, Exception]] = []

    def add(self, record: budget_pb2.RecordCostRequest) -> None:
        with self._lock:
            if len(self._records) >= self.max_records:
                raise OutboxFull(f"Tally is unreachable and the outbox holds {self.max_records} records (outbox_max); record {record.request_id} was not queued", record)
            self._records.append(record)

    def first(self) -> Optional[budget_pb2.RecordCostRequest]:
        with self._lock:
            return self._records[0] if self._records else None

    def remove(self, record: budget_pb2.RecordCostRequest) -> None:
        with self._lock:
            if self._records and self._records[0] is record:
                self._records.popleft()

    def drain(self) -> List[budget_pb2.RecordCostRequest]:
        with self._lock:
            records = list(self._records)
            self._records.clear()
            return records

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


OutboxErrorHandler = Callable[[budget_pb2.RecordCostRequest, Exception], None]


def parse_url(url: str) -> Tuple[str, bool]:
    """(host:port, tls) of http://host:port (cleartext HTTP/2) or https://host:port."""
    if url.startswith("https://"):
        return url[len("https://") :].rstrip("/"), True
    if url.startswith("http://"):
        return url[len("http://") :].rstrip("/"), False
    raise ValueError(f"url must start with http:// or https://, got {url!r}")


#: grpcio's own retries off (ours keep the request id and the bounds); quick
#: reconnects after Tally restarts (the default backoff grows to 120 s).
CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def auth_metadata(api_key: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def read_root_certificates(root_certificates: Union[bytes, str, None]) -> Optional[bytes]:
    """PEM bytes, or a path to a PEM file; None uses grpc's default roots."""
    if root_certificates is None or isinstance(root_certificates, bytes):
        return root_certificates
    with open(root_certificates, "rb") as file:
        return file.read()
