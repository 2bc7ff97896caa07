"""Smoke test of the generated Python client (gen/python, installed with pip)
against a running Tally. It starts nothing itself: test/clients/python.test.ts
starts Tally on an ephemeral port and runs pytest with TALLY_URL set.

    TALLY_URL=http://127.0.0.1:8080 .tools/venv/bin/python -m pytest test/clients/python
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import grpc
import pytest
from tally.budget.v1 import budget_pb2, budget_pb2_grpc

USD = 1_000_000_000  # nanos


def target() -> str:
    url = os.environ.get("TALLY_URL")
    if not url:
        pytest.fail("TALLY_URL is not set: point it at a running Tally, e.g. http://127.0.0.1:8080")
    return url.removeprefix("http://")


@pytest.fixture
def stub() -> Iterator[budget_pb2_grpc.BudgetServiceStub]:
    with grpc.insecure_channel(target()) as channel:
        yield budget_pb2_grpc.BudgetServiceStub(channel)


@pytest.fixture
def project() -> str:
    # Unique per test, so the test also passes against a long-lived Tally.
    return f"py-smoke-{uuid.uuid4().hex}"


def test_budget_check_record_retry_read(stub: budget_pb2_grpc.BudgetServiceStub, project: str) -> None:
    budget = stub.SetProjectBudget(budget_pb2.SetProjectBudgetRequest(project_id=project, limit_nanos=10 * USD), timeout=10)
    assert budget.budget.configured
    assert budget.budget.limit_nanos == 10 * USD
    assert budget.budget.currency == "USD"

    check = stub.CheckBudget(budget_pb2.CheckBudgetRequest(project_id=project, estimated_cost_nanos=2 * USD), timeout=10)
    assert check.allowed
    assert check.reason == budget_pb2.BUDGET_DECISION_REASON_WITHIN_BUDGET
    assert check.remaining_nanos == 10 * USD

    record = budget_pb2.RecordCostRequest(
        project_id=project,
        cost_nanos=1_500_000_000,
        input_tokens=1200,
        output_tokens=300,
        model="gpt-4o-mini",
        agent_id="py-smoke",
        request_id="call-0001",
    )
    first = stub.RecordCost(record, timeout=10)
    assert not first.duplicate
    assert first.request_id == "call-0001"
    assert first.project_cost.total_cost_nanos == 1_500_000_000
    assert first.project_cost.record_count == 1

    # A retry (same request_id, same payload) is counted once.
    retry = stub.RecordCost(record, timeout=10)
    assert retry.duplicate
    assert retry.project_cost.total_cost_nanos == 1_500_000_000

    totals = stub.GetProjectCost(budget_pb2.GetProjectCostRequest(project_id=project), timeout=10).project_cost
    assert (totals.total_cost_nanos, totals.input_tokens, totals.output_tokens, totals.record_count) == (1_500_000_000, 1200, 300, 1)
    assert totals.HasField("updated_at")

    after = stub.CheckBudget(budget_pb2.CheckBudgetRequest(project_id=project, estimated_cost_nanos=9 * USD), timeout=10)
    assert not after.allowed
    assert after.reason == budget_pb2.BUDGET_DECISION_REASON_EXCEEDS_REMAINING
    assert after.remaining_nanos == 8_500_000_000


def test_reserve_retry_with_request_id_places_one_hold(stub: budget_pb2_grpc.BudgetServiceStub, project: str) -> None:
    stub.SetProjectBudget(budget_pb2.SetProjectBudgetRequest(project_id=project, limit_nanos=10 * USD), timeout=10)
    ask = budget_pb2.CheckBudgetRequest(project_id=project, estimated_cost_nanos=6 * USD, reserve=True, request_id="call-0001")
    first = stub.CheckBudget(ask, timeout=10)
    retry = stub.CheckBudget(ask, timeout=10)  # as after a lost answer
    assert first.allowed and retry.allowed
    assert retry.hold_id == first.hold_id != ""
    assert retry.duplicate and not first.duplicate
    cost = stub.GetProjectCost(budget_pb2.GetProjectCostRequest(project_id=project), timeout=10).project_cost
    assert (cost.reserved_nanos, cost.active_hold_count) == (6 * USD, 1)
    # Settled under the same id; a late retry of the reservation is then refused, not re-held.
    stub.RecordCost(budget_pb2.RecordCostRequest(project_id=project, cost_nanos=5 * USD, request_id="call-0001", hold_id=first.hold_id), timeout=10)
    with pytest.raises(grpc.RpcError) as raised:
        stub.CheckBudget(ask, timeout=10)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no longer active" in (error.details() or "")


def test_invalid_argument_is_a_grpc_rpc_error(stub: budget_pb2_grpc.BudgetServiceStub, project: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.RecordCost(budget_pb2.RecordCostRequest(project_id=project, cost_nanos=-1, request_id="bad"), timeout=10)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cost_nanos must be >= 0" in error.details()
    # Nothing was recorded.
    totals = stub.GetProjectCost(budget_pb2.GetProjectCostRequest(project_id=project), timeout=10).project_cost
    assert totals.record_count == 0


def test_asyncio_stub() -> None:
    async def run() -> budget_pb2.CheckBudgetResponse:
        async with grpc.aio.insecure_channel(target()) as channel:
            stub = budget_pb2_grpc.BudgetServiceStub(channel)
            return await stub.CheckBudget(budget_pb2.CheckBudgetRequest(project_id=f"py-aio-{uuid.uuid4().hex}"), timeout=10)

    check = asyncio.run(run())
    assert check.allowed
    assert check.reason == budget_pb2.BUDGET_DECISION_REASON_NO_LIMIT
