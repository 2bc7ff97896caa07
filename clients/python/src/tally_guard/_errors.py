"""The errors a guarded call can raise. Every one is a TallyError; `code` is the
gRPC status name ("UNAVAILABLE", ...) when Tally answered with one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tally.budget.v1 import budget_pb2


class TallyError(Exception):
    """A call to Tally failed. `code` is the gRPC status name, `details` the
    server's message, `attempts` how many times it was sent (same request id)."""

    def __init__(self, message: str, *, code: str = "", details: str = "", attempts: int = 0, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
        self.attempts = attempts
        #: Tally could not decide (UNAVAILABLE, DEADLINE_EXCEEDED, or
        #: RESOURCE_EXHAUSTED with a retry time) rather than refused the
        #: request: what the failure policy and the outbox apply to.
        self.retryable = retryable


class TallyUnavailable(TallyError):
    """Tally could not be reached (or kept answering UNAVAILABLE,
    DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED with a retry time) within the retry
    bounds. Under fail_closed the LLM call does not run."""


class BudgetRefused(TallyError):
    """The budget refused the call: the body never ran. `check` is Tally's
    answer (reason, remaining, advised_model when candidates were given)."""

    def __init__(self, message: str, check: budget_pb2.CheckBudgetResponse) -> None:
        super().__init__(message, code="", details=message)
        self.check = check


class UsageNotReported(TallyError):
    """The guarded body ended without reporting a cost or usage (nor calling
    skip()): the hold was released and nothing recorded. For a stream, the
    final usage never arrived (OpenAI: stream_options include_usage)."""


class OutboxFull(TallyError):
    """Tally is unreachable and the local outbox already holds outbox_max
    records: this record is not queued (it is in `record`), never dropped silently."""

    def __init__(self, message: str, record: budget_pb2.RecordCostRequest) -> None:
        super().__init__(message, code="", details=message)
        self.record = record


class OutboxNotEmpty(TallyError):
    """close() could not deliver every queued record in time: they are in
    `records` (persist them, or keep the client open and flush later)."""

    def __init__(self, message: str, records: list[budget_pb2.RecordCostRequest]) -> None:
        super().__init__(message, code="", details=message)
        self.records = records
