"""A minimal agent loop with Tally: reserve the worst case of the next call,
call the model, record what the call actually cost (settling the reservation).

Reserving (CheckBudget with reserve=True) rather than only checking is what
keeps many agents of one project from together spending past its limit: each
allowed call holds its estimate until it records. Both writes carry the call's
request_id, so either can be retried after a timeout without counting or
holding twice.

The model call is simulated (deterministic token counts, no network) so the
example runs anywhere; replace `call_model` with your LLM client. Run it
against a local Tally (`npm start`):

    python3 -m venv .venv && .venv/bin/pip install ./gen/python && .venv/bin/python examples/python/agent.py

Environment: TALLY_URL (default http://127.0.0.1:8080; https://... for a Tally
with TLS, verified against grpc's root certificates or
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH); TALLY_API_KEY (sent as "authorization:
Bearer <key>" metadata on every call; needed when the server has API keys: an
admin key, or a project key covering TALLY_PROJECT); TALLY_PROJECT (default: a
new project with a $0.005 budget, so you see the budget refuse a call).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Callable, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from tally.budget.v1 import budget_pb2, budget_pb2_grpc

# gpt-4o-mini list prices, in nano-USD per token ($0.15 and $0.60 per million).
INPUT_NANOS_PER_TOKEN = 150
OUTPUT_NANOS_PER_TOKEN = 600
MAX_OUTPUT_TOKENS = 500
MAX_STEPS = 50  # the loop is bounded even without a budget


@dataclass
class ModelResult:
    text: str
    input_tokens: int
    output_tokens: int


def call_model(prompt: str, step: int) -> ModelResult:
    """Stands in for a real LLM call: a deterministic answer and token counts."""
    input_tokens = 1_500 + 10 * len(prompt)
    output_tokens = 200 + (step * 37) % 300  # never above MAX_OUTPUT_TOKENS
    return ModelResult(f"answer {step}", input_tokens, output_tokens)


def estimate_nanos(prompt: str) -> int:
    """Worst case for the next call: its input plus the most output we allow."""
    return (1_500 + 10 * len(prompt)) * INPUT_NANOS_PER_TOKEN + MAX_OUTPUT_TOKENS * OUTPUT_NANOS_PER_TOKEN


T = TypeVar("T")


def with_retry(call: Callable[[], T]) -> T:
    """Retries a call that carries a request_id: Tally answers a repeated
    RecordCost or reservation with the first answer, never counting twice."""
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
    for attempt in range(5):
        try:
            return call()
        except grpc.RpcError as error:
            if not isinstance(error, grpc.Call) or error.code() not in retryable or attempt == 4:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def usd(nanos: int) -> str:
    """Exact decimal dollars: money never goes through a float."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}${whole}.{frac:09d}"


def open_channel(url: str) -> grpc.Channel:
    """http://host:port is cleartext HTTP/2; https://host:port is TLS."""
    if url.startswith("https://"):
        return grpc.secure_channel(url.removeprefix("https://"), grpc.ssl_channel_credentials())
    return grpc.insecure_channel(url.removeprefix("http://"))


class Authorized:
    """The stub's calls with the API key (when set) in their metadata."""

    def __init__(self, stub: budget_pb2_grpc.BudgetServiceStub, key: str) -> None:
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),) if key else ()
        self.stub = stub

    def CheckBudget(self, request: budget_pb2.CheckBudgetRequest) -> budget_pb2.CheckBudgetResponse:
        return self.stub.CheckBudget(request, metadata=self.metadata, timeout=5)

    def RecordCost(self, request: budget_pb2.RecordCostRequest) -> budget_pb2.RecordCostResponse:
        return self.stub.RecordCost(request, metadata=self.metadata, timeout=5)

    def SetProjectBudget(self, request: budget_pb2.SetProjectBudgetRequest) -> budget_pb2.SetProjectBudgetResponse:
        return self.stub.SetProjectBudget(request, metadata=self.metadata, timeout=5)

    def GetProjectCost(self, request: budget_pb2.GetProjectCostRequest) -> budget_pb2.GetProjectCostResponse:
        return self.stub.GetProjectCost(request, metadata=self.metadata, timeout=5)


def main() -> None:
    url = os.environ.get("TALLY_URL", "http://127.0.0.1:8080")
    project = os.environ.get("TALLY_PROJECT", "")
    run_id = uuid.uuid4().hex[:12]
    with open_channel(url) as channel:
        tally = Authorized(budget_pb2_grpc.BudgetServiceStub(channel), os.environ.get("TALLY_API_KEY", ""))
        if not project:
            project = f"example-python-{run_id}"
            tally.SetProjectBudget(budget_pb2.SetProjectBudgetRequest(project_id=project, limit_nanos=5_000_000))
            print(f"project {project}: budget $0.005")

        recorded = 0
        for step in range(1, MAX_STEPS + 1):
            prompt = f"step {step}: summarise the previous answer"
            request_id = f"{run_id}-step-{step}"
            # 1. Reserve the worst case before spending (held for 2 minutes at most).
            reserve = budget_pb2.CheckBudgetRequest(
                project_id=project,
                estimated_cost_nanos=estimate_nanos(prompt),
                reserve=True,
                hold_ttl=Duration(seconds=120),
                request_id=request_id,
            )
            check: budget_pb2.CheckBudgetResponse = with_retry(lambda: tally.CheckBudget(reserve))
            if not check.allowed:
                reason = budget_pb2.BudgetDecisionReason.Name(check.reason)
                print(f"budget refused step {step}: {reason}, {check.remaining_nanos} nanos left")
                break
            # 2. Call the model.
            result = call_model(prompt, step)
            # 3. Record what it actually cost, settling the hold.
            cost = result.input_tokens * INPUT_NANOS_PER_TOKEN + result.output_tokens * OUTPUT_NANOS_PER_TOKEN
            record = budget_pb2.RecordCostRequest(
                project_id=project,
                cost_nanos=cost,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                model="gpt-4o-mini",
                agent_id="example-python",
                request_id=request_id,
                hold_id=check.hold_id,
            )
            try:
                response: budget_pb2.RecordCostResponse = with_retry(lambda: tally.RecordCost(record))
            except grpc.RpcError as error:
                # The hold expired before the call ended (or was released): the
                # cost is real all the same, so record it without the hold.
                if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                record.hold_id = ""
                response = with_retry(lambda: tally.RecordCost(record))
            recorded += 1
            print(f"step {step}: {result.text!r} cost {cost} nanos, project total {response.project_cost.total_cost_nanos}")

        totals = tally.GetProjectCost(budget_pb2.GetProjectCostRequest(project_id=project)).project_cost
        print(f"recorded {recorded} calls; project {project} spent {usd(totals.total_cost_nanos)} over {totals.record_count} calls")


if __name__ == "__main__":
    main()
