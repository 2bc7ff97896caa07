"""tally_guard: one guarded block around each LLM call.

    from tally_guard import Tally

    with Tally("http://127.0.0.1:8080", api_key=key) as tally:
        with tally.guard("my-project", estimate_nanos=2_000_000, agent="planner", ttl=120) as call:
            response = llm.chat.completions.create(...)
            call.report(response)          # OpenAI or Anthropic response, or report_cost(...)

The guard reserves the estimate under a request id it generates and keeps,
settles the hold with the reported usage, releases it on an exception or
cancellation, records without it if it expired; retries only what is safe
(UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED with a retry time) with
the same request id, within bounds; applies the failure policy (fail_closed /
fail_open with a bounded outbox). AsyncTally is the asyncio twin.
"""

from ._aio import AsyncGuard, AsyncTally
from ._call import FAIL_CLOSED, FAIL_OPEN, FailurePolicy, GuardedCall, Stats, new_request_id
from ._errors import BudgetRefused, OutboxFull, OutboxNotEmpty, TallyError, TallyUnavailable, UsageNotReported
from ._retry import Retry
from ._sync import Guard, Tally
from ._usage import StreamUsage, Usage, from_anthropic, from_openai, usage_from

__all__ = [
    "AsyncGuard",
    "AsyncTally",
    "BudgetRefused",
    "FAIL_CLOSED",
    "FAIL_OPEN",
    "FailurePolicy",
    "Guard",
    "GuardedCall",
    "OutboxFull",
    "OutboxNotEmpty",
    "Retry",
    "Stats",
    "StreamUsage",
    "Tally",
    "TallyError",
    "TallyUnavailable",
    "Usage",
    "UsageNotReported",
    "from_anthropic",
    "from_openai",
    "new_request_id",
    "usage_from",
]
