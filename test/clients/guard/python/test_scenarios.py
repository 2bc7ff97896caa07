"""Runs every scenario of test/clients/guard/scenarios.json with tally_guard
(TALLY_VARIANT=asyncio: AsyncTally, sync: Tally from threads) against the
Tally the harness started, and reports what happened (completed calls,
failures, counters, checks). The harness then checks the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

import pytest
from tally.budget.v1 import budget_pb2

from conftest import REPORT
from tally_guard import (
    AsyncTally,
    BudgetRefused,
    GuardedCall,
    Retry,
    Tally,
    TallyError,
    TallyUnavailable,
    UsageNotReported,
)

SPEC = json.load(open(os.environ["TALLY_SCENARIOS"]))
PROJECTS: Dict[str, str] = json.loads(os.environ["TALLY_PROJECTS"])
LIMITED_KEYS: Dict[str, str] = json.loads(os.environ["TALLY_LIMITED_KEYS"])
URL = os.environ["TALLY_URL"]
KEY = os.environ["TALLY_API_KEY"]
VARIANT = os.environ.get("TALLY_VARIANT", "asyncio")
BOUND_S = 60.0  # every wait in a scenario ends by then


class Report:
    def __init__(self, name: str) -> None:
        self.entry: Dict[str, Any] = {"completed": [], "failed": 0, "stats": {}, "checks": []}
        REPORT["scenarios"][name] = self.entry
        self._lock = threading.Lock()

    def check(self, name: str, ok: bool, detail: Any = "") -> None:
        with self._lock:
            self.entry["checks"].append({"name": name, "ok": bool(ok), "detail": str(detail)})

    def completed(self, call: GuardedCall, cost_nanos: int) -> None:
        with self._lock:
            self.entry["completed"].append({"request_id": call.request_id, "cost_nanos": str(cost_nanos)})

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.entry["failed"] += 1
            self.entry["checks"].append({"name": "call failed", "ok": False, "detail": repr(error)})

    def stats(self, *clients: Any) -> None:
        total: Dict[str, int] = {}
        for client in clients:
            for key, value in client.stats.as_dict().items():
                total[key] = total.get(key, 0) + value
        self.entry["stats"] = total

    def assert_ok(self) -> None:
        bad = [c for c in self.entry["checks"] if not c["ok"]]
        assert not bad, bad


def control(action: str, **params: Any) -> None:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = urllib.request.Request(f"{os.environ['TALLY_CONTROL_URL']}/{action}?{query}", method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def retry_of(sc: Dict[str, Any]) -> Optional[Retry]:
    r = sc.get("retry")
    if r is None:
        return None
    return Retry(attempts_max=r["attempts_max"], total_s=r["total_ms"] / 1000, base_delay_s=r["base_delay_ms"] / 1000, max_delay_s=r["max_delay_ms"] / 1000, call_timeout_s=r["call_timeout_ms"] / 1000)


def ttl_of(sc: Dict[str, Any]) -> float:
    return sc.get("ttl_ms", 300_000) / 1000


class Boom(Exception):
    pass


def agent_step_refused(rep: Report, i: int, step: Dict[str, Any], refused: BudgetRefused) -> None:
    """agent-cap: a refused step must be refused by that agent's own cap."""
    got = f"{budget_pb2.BudgetDecisionReason.Name(refused.check.reason)} by agent {refused.check.decided_by_agent_id}"
    rep.check(f"step {i} ({step['agent']}): refused by its own cap", got == f"{step.get('expect_reason')} by agent {step['agent']}", got)


SCENARIOS = {s["name"]: s for s in SPEC["scenarios"]}


# --- asyncio ------------------------------------------------------------------


def aclient(**options: Any) -> AsyncTally:
    return AsyncTally(URL, api_key=options.pop("api_key", KEY), agent="guard-test", **options)


async def holds(tally: Any, project: str) -> "budget_pb2.ProjectCost":
    response = await tally.stub.GetProjectCost(budget_pb2.GetProjectCostRequest(project_id=project), metadata=tally.metadata, timeout=10)
    return response.project_cost


async def a_settle_with_hold(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        for i, cost in enumerate(int(c) for c in sc["cost_nanos"]):
            async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                rep.check(f"call {i}: a hold was placed", call.hold_id != "" and call.decision == "allowed", call.hold_id)
                call.report_cost(cost, input_tokens=sc["input_tokens"], output_tokens=sc["output_tokens"])
            rep.check(f"call {i}: settled", call.outcome == "settled" and call.recorded is not None and call.recorded.settled_hold_nanos == int(sc["estimate_nanos"]), call.outcome)
            rep.completed(call, cost)
        rep.stats(tally)


async def a_body_raises(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        for i, estimate in enumerate((int(sc["estimate_nanos"]), int(sc["second_estimate_nanos"]))):
            held = ""
            call: Optional[GuardedCall] = None
            try:
                async with tally.guard(project, estimate_nanos=estimate, ttl=ttl_of(sc)) as call:
                    held = call.hold_id
                    raise Boom("the LLM call failed")
            except Boom:
                rep.check(f"call {i}: the body's exception propagated unchanged", True)
            rep.check(f"call {i}: a hold was placed (the whole limit was free again)", held != "", held)
            rep.check(f"call {i}: outcome released", call is not None and call.outcome == "released", call and call.outcome)
            cost = await holds(tally, project)
            rep.check(f"call {i}: no hold active right after", cost.active_hold_count == 0 and cost.reserved_nanos == 0, cost)
        rep.stats(tally)


async def a_cancelled(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        started = asyncio.Event()
        calls: List[GuardedCall] = []

        async def body() -> None:
            async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"]), ttl=ttl_of(sc)) as call:
                calls.append(call)
                started.set()
                await asyncio.sleep(sc["body_wait_ms"] / 1000)
                call.report_cost(1)

        task = asyncio.create_task(body())
        await asyncio.wait_for(started.wait(), BOUND_S)
        task.cancel()
        try:
            await task
            rep.check("the cancellation surfaced", False, "the task finished")
        except asyncio.CancelledError:
            rep.check("the cancellation surfaced", True)
        rep.check("a hold had been placed", bool(calls) and calls[0].hold_id != "")
        rep.check("outcome released", bool(calls) and calls[0].outcome == "released", calls and calls[0].outcome)
        cost = await holds(tally, project)
        rep.check("no hold active right after", cost.active_hold_count == 0 and cost.reserved_nanos == 0, cost)
        rep.stats(tally)


async def a_refused(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        ran = False
        try:
            async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                ran = True
                call.report_cost(1)
            rep.check("BudgetRefused raised", False, "the guard let the call run")
        except BudgetRefused as refused:
            reason = budget_pb2.BudgetDecisionReason.Name(refused.check.reason)
            rep.check("BudgetRefused with the expected reason", reason == sc["expect_reason"], reason)
        rep.check("the body never ran", not ran)
        rep.stats(tally)


async def a_agent_cap(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        for i, step in enumerate(sc["steps"]):
            ran = False
            try:
                async with tally.guard(project, estimate_nanos=int(step["estimate_nanos"]), agent=step["agent"]) as call:
                    ran = True
                    call.report_cost(int(step["cost_nanos"]))
                rep.check(f"step {i} ({step['agent']}): allowed and settled", "expect_reason" not in step and call.outcome == "settled", call.outcome)
                rep.completed(call, int(step["cost_nanos"]))
            except BudgetRefused as refused:
                agent_step_refused(rep, i, step, refused)
                rep.check(f"step {i}: the body never ran", not ran)
        rep.stats(tally)


async def a_usage_not_reported(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        for label, chunks in (("no report", None), ("stream without final usage", sc["stream_without_usage"])):
            call: Optional[GuardedCall] = None
            try:
                async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                    for chunk in chunks or []:
                        call.observe(chunk)
                rep.check(f"{label}: UsageNotReported raised", False, "no error")
            except UsageNotReported:
                rep.check(f"{label}: UsageNotReported raised", True)
            rep.check(f"{label}: hold released", call is not None and call.hold_id != "" and call.outcome == "released", call and call.outcome)
        cost = await holds(tally, project)
        rep.check("no hold active right after", cost.active_hold_count == 0, cost)
        rep.stats(tally)


async def a_hold_expired(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        cost = int(sc["cost_nanos"][0])
        async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"]), ttl=ttl_of(sc)) as call:
            held = call.hold_id
            await asyncio.sleep(sc["body_wait_ms"] / 1000)
            call.report_cost(cost)
        rep.check("a hold had been placed", held != "")
        rep.check("recorded without the expired hold", call.outcome == "recorded" and call.recorded is not None and not call.recorded.duplicate, call.outcome)
        rep.completed(call, cost)
        rep.stats(tally)


async def a_tokens(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        for i, spec_call in enumerate(sc["calls"]):
            async with tally.guard(project, model=sc["model"], input_tokens=sc["input_tokens"], max_output_tokens=sc["max_output_tokens"]) as call:
                rep.check(f"call {i}: reserved the catalog's worst case", call.estimate_nanos == int(sc["expect_estimate_nanos"]), call.estimate_nanos)
                if "response" in spec_call:
                    call.report(spec_call["response"])
                else:
                    for chunk in spec_call["stream"]:
                        call.observe(chunk)
            want = int(spec_call["record"]["cost_nanos"])
            got = call.recorded.cost_nanos if call.recorded is not None else None
            rep.check(f"call {i}: settled at the catalog's price", call.outcome == "settled" and got == want, f"{call.outcome} {got}")
            rep.completed(call, want)
        rep.stats(tally)


async def a_rate_limited(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient(api_key=LIMITED_KEYS[project]) as tally:
        for i in range(sc["calls"]):
            cost = int(sc["cost_nanos_base"]) + i
            async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                call.report_cost(cost)
            rep.check(f"call {i}: settled", call.outcome == "settled", call.outcome)
            rep.completed(call, cost)
        rep.stats(tally)


async def a_restart_under_load(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient(retry=retry_of(sc), ttl=ttl_of(sc)) as tally:
        next_index = 0
        done = 0
        killed: List[asyncio.Future[None]] = []

        async def worker() -> None:
            nonlocal next_index, done
            while next_index < sc["calls"]:
                index = next_index
                next_index += 1
                cost = int(sc["cost_nanos_base"]) + index
                try:
                    async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                        await asyncio.sleep(0.02)  # the LLM call
                        call.report_cost(cost)
                except Exception as error:  # a failed call is reported, never recorded
                    rep.failed(error)
                    continue
                rep.completed(call, cost)
                done += 1
                if done == sc["kill_after_completed"]:
                    killed.append(asyncio.ensure_future(asyncio.to_thread(control, "outage", down_ms=sc["down_ms"])))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(sc["concurrency"]))), 3 * BOUND_S)
        rep.check("the server was killed mid-run", len(killed) == 1)
        for k in killed:
            await k
        left = await tally.flush(BOUND_S)
        rep.check("outbox empty at the end", left == 0, left)
        rep.stats(tally)


async def a_fail_open_outage(sc: Dict[str, Any], project: str, rep: Report) -> None:
    await asyncio.to_thread(control, "outage", down_ms=sc["down_ms"])
    async with aclient(retry=Retry(total_s=sc["fail_open_after_ms"] / 1000)) as closed:
        ran = False
        try:
            async with closed.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                ran = True
                call.report_cost(1)
            rep.check("fail_closed refuses while Tally is down", False, "the call ran")
        except TallyUnavailable as error:
            rep.check("fail_closed refuses while Tally is down", error.code == "UNAVAILABLE", error)
        rep.check("fail_closed: the body never ran", not ran)
    async with aclient(failure_policy="fail_open", fail_open_after_s=sc["fail_open_after_ms"] / 1000, flush_interval_s=sc["flush_interval_ms"] / 1000, ttl=ttl_of(sc)) as tally:
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < sc["calls"]:
                index = next_index
                next_index += 1
                cost = int(sc["cost_nanos_base"]) + index
                try:
                    async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                        call.report_cost(cost)
                except Exception as error:
                    rep.failed(error)
                    continue
                rep.completed(call, cost)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(sc["concurrency"]))), BOUND_S)
        left = await tally.flush(sc["flush_timeout_ms"] / 1000)
        rep.check("the outbox flushed once Tally was back", left == 0, left)
        rep.check("no record refused on flush", not tally.outbox_failed, tally.outbox_failed)
        rep.stats(tally)


async def a_watch_reconnects(sc: Dict[str, Any], project: str, rep: Report) -> None:
    async with aclient() as tally:
        events: List[budget_pb2.BudgetEvent] = []
        changed = asyncio.Event()

        async def watcher() -> None:
            async for event in tally.watch(project):
                events.append(event)
                changed.set()

        async def until(what: str, predicate: Callable[[], bool]) -> bool:
            deadline = time.monotonic() + sc["event_wait_ms"] / 1000
            while not predicate():
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    rep.check(what, False, f"{len(events)} events")
                    return False
            rep.check(what, True)
            return True

        def snapshots() -> int:
            return sum(1 for e in events if e.kind == budget_pb2.BUDGET_EVENT_KIND_SNAPSHOT)

        task = asyncio.create_task(watcher())
        try:
            await until("first SNAPSHOT", lambda: snapshots() >= 1)
            await asyncio.to_thread(control, "restart")
            await until("a new SNAPSHOT after the restart (reconnected)", lambda: snapshots() >= 2)
            cost = int(sc["cost_nanos"][0])
            async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                call.report_cost(cost)
            rep.completed(call, cost)
            await until(
                "THRESHOLD_CROSSED 50 % for the guarded call",
                lambda: any(e.kind == budget_pb2.BUDGET_EVENT_KIND_THRESHOLD_CROSSED and e.request_id == call.request_id and e.threshold.threshold_bps == 5000 for e in events),
            )
        finally:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, TallyError):
                pass
        rep.check("the helper reconnected at least once", tally.stats.watch_reconnects >= 1, tally.stats.watch_reconnects)
        rep.stats(tally)


async def a_tls_and_key(sc: Dict[str, Any], project: str, rep: Report) -> None:
    url, ca = os.environ["TALLY_TLS_URL"], os.environ["TALLY_TLS_CA"]
    async with AsyncTally(url, api_key=os.environ["TALLY_TLS_API_KEY"], root_certificates=ca) as tally:
        cost = int(sc["cost_nanos"][0])
        async with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
            call.report_cost(cost)
        rep.check("settled over TLS with the key", call.outcome == "settled", call.outcome)
        rep.completed(call, cost)
        rep.stats(tally)
    async with AsyncTally(url, root_certificates=ca) as keyless:
        try:
            async with keyless.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                call.report_cost(cost)
            rep.check("UNAUTHENTICATED without the key", False, "allowed")
        except TallyError as error:
            rep.check("UNAUTHENTICATED without the key, not retried", error.code == "UNAUTHENTICATED" and error.attempts == 1 and not error.retryable, error)


ASYNC = {
    "settle-with-hold": a_settle_with_hold,
    "body-raises": a_body_raises,
    "cancelled": a_cancelled,
    "refused": a_refused,
    "usage-not-reported": a_usage_not_reported,
    "hold-expired": a_hold_expired,
    "tokens-openai": a_tokens,
    "tokens-anthropic": a_tokens,
    "agent-cap": a_agent_cap,
    "rate-limited": a_rate_limited,
    "restart-under-load": a_restart_under_load,
    "fail-open-outage": a_fail_open_outage,
    "watch-reconnects": a_watch_reconnects,
    "tls-and-key": a_tls_and_key,
}


# --- sync (threads) -----------------------------------------------------------


def client(**options: Any) -> Tally:
    return Tally(URL, api_key=options.pop("api_key", KEY), agent="guard-test", **options)


def sync_holds(tally: Tally, project: str) -> "budget_pb2.ProjectCost":
    response: budget_pb2.GetProjectCostResponse = tally.stub.GetProjectCost(budget_pb2.GetProjectCostRequest(project_id=project), metadata=tally.metadata, timeout=10)
    return response.project_cost


def s_settle_with_hold(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        for i, cost in enumerate(int(c) for c in sc["cost_nanos"]):
            with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                rep.check(f"call {i}: a hold was placed", call.hold_id != "" and call.decision == "allowed", call.hold_id)
                call.report_cost(cost, input_tokens=sc["input_tokens"], output_tokens=sc["output_tokens"])
            rep.check(f"call {i}: settled", call.outcome == "settled" and call.recorded is not None and call.recorded.settled_hold_nanos == int(sc["estimate_nanos"]), call.outcome)
            rep.completed(call, cost)
        rep.stats(tally)


def s_body_raises(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        for i, estimate in enumerate((int(sc["estimate_nanos"]), int(sc["second_estimate_nanos"]))):
            held = ""
            call: Optional[GuardedCall] = None
            try:
                with tally.guard(project, estimate_nanos=estimate, ttl=ttl_of(sc)) as call:
                    held = call.hold_id
                    raise Boom("the LLM call failed")
            except Boom:
                rep.check(f"call {i}: the body's exception propagated unchanged", True)
            rep.check(f"call {i}: a hold was placed (the whole limit was free again)", held != "", held)
            rep.check(f"call {i}: outcome released", call is not None and call.outcome == "released", call and call.outcome)
            cost = sync_holds(tally, project)
            rep.check(f"call {i}: no hold active right after", cost.active_hold_count == 0 and cost.reserved_nanos == 0, cost)
        rep.stats(tally)


def s_cancelled(sc: Dict[str, Any], project: str, rep: Report) -> None:
    # A blocking call is cancelled by KeyboardInterrupt (Ctrl-C) or a signal
    # handler's exception: a BaseException, not an Exception.
    with client() as tally:
        call: Optional[GuardedCall] = None
        try:
            with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"]), ttl=ttl_of(sc)) as call:
                raise KeyboardInterrupt()
        except KeyboardInterrupt:
            rep.check("the cancellation surfaced", True)
        rep.check("a hold had been placed and was released", call is not None and call.hold_id != "" and call.outcome == "released", call and call.outcome)
        cost = sync_holds(tally, project)
        rep.check("no hold active right after", cost.active_hold_count == 0 and cost.reserved_nanos == 0, cost)
        rep.stats(tally)


def s_refused(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        ran = False
        try:
            with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                ran = True
                call.report_cost(1)
            rep.check("BudgetRefused raised", False, "the guard let the call run")
        except BudgetRefused as refused:
            reason = budget_pb2.BudgetDecisionReason.Name(refused.check.reason)
            rep.check("BudgetRefused with the expected reason", reason == sc["expect_reason"], reason)
        rep.check("the body never ran", not ran)
        rep.stats(tally)


def s_agent_cap(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        for i, step in enumerate(sc["steps"]):
            ran = False
            try:
                with tally.guard(project, estimate_nanos=int(step["estimate_nanos"]), agent=step["agent"]) as call:
                    ran = True
                    call.report_cost(int(step["cost_nanos"]))
                rep.check(f"step {i} ({step['agent']}): allowed and settled", "expect_reason" not in step and call.outcome == "settled", call.outcome)
                rep.completed(call, int(step["cost_nanos"]))
            except BudgetRefused as refused:
                agent_step_refused(rep, i, step, refused)
                rep.check(f"step {i}: the body never ran", not ran)
        rep.stats(tally)


def s_usage_not_reported(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        for label, chunks in (("no report", None), ("stream without final usage", sc["stream_without_usage"])):
            call: Optional[GuardedCall] = None
            try:
                with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                    for chunk in chunks or []:
                        call.observe(chunk)
                rep.check(f"{label}: UsageNotReported raised", False, "no error")
            except UsageNotReported:
                rep.check(f"{label}: UsageNotReported raised", True)
            rep.check(f"{label}: hold released", call is not None and call.hold_id != "" and call.outcome == "released", call and call.outcome)
        cost = sync_holds(tally, project)
        rep.check("no hold active right after", cost.active_hold_count == 0, cost)
        rep.stats(tally)


def s_hold_expired(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        cost = int(sc["cost_nanos"][0])
        with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"]), ttl=ttl_of(sc)) as call:
            held = call.hold_id
            time.sleep(sc["body_wait_ms"] / 1000)
            call.report_cost(cost)
        rep.check("a hold had been placed", held != "")
        rep.check("recorded without the expired hold", call.outcome == "recorded" and call.recorded is not None and not call.recorded.duplicate, call.outcome)
        rep.completed(call, cost)
        rep.stats(tally)


def s_tokens(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client() as tally:
        for i, spec_call in enumerate(sc["calls"]):
            with tally.guard(project, model=sc["model"], input_tokens=sc["input_tokens"], max_output_tokens=sc["max_output_tokens"]) as call:
                rep.check(f"call {i}: reserved the catalog's worst case", call.estimate_nanos == int(sc["expect_estimate_nanos"]), call.estimate_nanos)
                if "response" in spec_call:
                    call.report(spec_call["response"])
                else:
                    for chunk in spec_call["stream"]:
                        call.observe(chunk)
            want = int(spec_call["record"]["cost_nanos"])
            got = call.recorded.cost_nanos if call.recorded is not None else None
            rep.check(f"call {i}: settled at the catalog's price", call.outcome == "settled" and got == want, f"{call.outcome} {got}")
            rep.completed(call, want)
        rep.stats(tally)


def s_rate_limited(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client(api_key=LIMITED_KEYS[project]) as tally:
        for i in range(sc["calls"]):
            cost = int(sc["cost_nanos_base"]) + i
            with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                call.report_cost(cost)
            rep.check(f"call {i}: settled", call.outcome == "settled", call.outcome)
            rep.completed(call, cost)
        rep.stats(tally)


def run_workers(concurrency: int, calls: int, one: Callable[[int], None]) -> None:
    counter = iter(range(calls))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            one(index)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result(timeout=3 * BOUND_S)


def s_restart_under_load(sc: Dict[str, Any], project: str, rep: Report) -> None:
    with client(retry=retry_of(sc), ttl=ttl_of(sc)) as tally:
        done = [0]
        lock = threading.Lock()
        killers: List[threading.Thread] = []

        def one(index: int) -> None:
            cost = int(sc["cost_nanos_base"]) + index
            try:
                with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                    time.sleep(0.02)  # the LLM call
                    call.report_cost(cost)
            except Exception as error:
                rep.failed(error)
                return
            rep.completed(call, cost)
            with lock:
                done[0] += 1
                if done[0] == sc["kill_after_completed"]:
                    killer = threading.Thread(target=control, args=("outage",), kwargs={"down_ms": sc["down_ms"]})
                    killer.start()
                    killers.append(killer)

        run_workers(sc["concurrency"], sc["calls"], one)
        rep.check("the server was killed mid-run", len(killers) == 1)
        for killer in killers:
            killer.join(BOUND_S)
        left = tally.flush(BOUND_S)
        rep.check("outbox empty at the end", left == 0, left)
        rep.stats(tally)


def s_fail_open_outage(sc: Dict[str, Any], project: str, rep: Report) -> None:
    control("outage", down_ms=sc["down_ms"])
    with client(retry=Retry(total_s=sc["fail_open_after_ms"] / 1000)) as closed:
        ran = False
        try:
            with closed.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                ran = True
                call.report_cost(1)
            rep.check("fail_closed refuses while Tally is down", False, "the call ran")
        except TallyUnavailable as error:
            rep.check("fail_closed refuses while Tally is down", error.code == "UNAVAILABLE", error)
        rep.check("fail_closed: the body never ran", not ran)
    with client(failure_policy="fail_open", fail_open_after_s=sc["fail_open_after_ms"] / 1000, flush_interval_s=sc["flush_interval_ms"] / 1000, ttl=ttl_of(sc)) as tally:

        def one(index: int) -> None:
            cost = int(sc["cost_nanos_base"]) + index
            try:
                with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                    call.report_cost(cost)
            except Exception as error:
                rep.failed(error)
                return
            rep.completed(call, cost)

        run_workers(sc["concurrency"], sc["calls"], one)
        left = tally.flush(sc["flush_timeout_ms"] / 1000)
        rep.check("the outbox flushed once Tally was back", left == 0, left)
        rep.check("no record refused on flush", not tally.outbox_failed, tally.outbox_failed)
        rep.stats(tally)


def s_watch_reconnects(sc: Dict[str, Any], project: str, rep: Report) -> None:
    tally = client()
    events: List[budget_pb2.BudgetEvent] = []
    changed = threading.Condition()

    def watcher() -> None:
        try:
            for event in tally.watch(project):
                with changed:
                    events.append(event)
                    changed.notify_all()
        except TallyError:
            pass  # the channel closed at the end (CANCELLED)

    def until(what: str, predicate: Callable[[], bool]) -> None:
        with changed:
            ok = changed.wait_for(predicate, timeout=sc["event_wait_ms"] / 1000)
        rep.check(what, ok, f"{len(events)} events")

    def snapshots() -> int:
        return sum(1 for e in events if e.kind == budget_pb2.BUDGET_EVENT_KIND_SNAPSHOT)

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    until("first SNAPSHOT", lambda: snapshots() >= 1)
    control("restart")
    until("a new SNAPSHOT after the restart (reconnected)", lambda: snapshots() >= 2)
    cost = int(sc["cost_nanos"][0])
    with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
        call.report_cost(cost)
    rep.completed(call, cost)
    until(
        "THRESHOLD_CROSSED 50 % for the guarded call",
        lambda: any(e.kind == budget_pb2.BUDGET_EVENT_KIND_THRESHOLD_CROSSED and e.request_id == call.request_id and e.threshold.threshold_bps == 5000 for e in events),
    )
    rep.check("the helper reconnected at least once", tally.stats.watch_reconnects >= 1, tally.stats.watch_reconnects)
    rep.stats(tally)
    tally.close()
    thread.join(10)


def s_tls_and_key(sc: Dict[str, Any], project: str, rep: Report) -> None:
    url, ca = os.environ["TALLY_TLS_URL"], os.environ["TALLY_TLS_CA"]
    cost = int(sc["cost_nanos"][0])
    with Tally(url, api_key=os.environ["TALLY_TLS_API_KEY"], root_certificates=ca) as tally:
        with tally.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
            call.report_cost(cost)
        rep.check("settled over TLS with the key", call.outcome == "settled", call.outcome)
        rep.completed(call, cost)
        rep.stats(tally)
    with Tally(url, root_certificates=ca) as keyless:
        try:
            with keyless.guard(project, estimate_nanos=int(sc["estimate_nanos"])) as call:
                call.report_cost(cost)
            rep.check("UNAUTHENTICATED without the key", False, "allowed")
        except TallyError as error:
            rep.check("UNAUTHENTICATED without the key, not retried", error.code == "UNAUTHENTICATED" and error.attempts == 1 and not error.retryable, error)


SYNC = {
    "settle-with-hold": s_settle_with_hold,
    "body-raises": s_body_raises,
    "cancelled": s_cancelled,
    "refused": s_refused,
    "usage-not-reported": s_usage_not_reported,
    "hold-expired": s_hold_expired,
    "tokens-openai": s_tokens,
    "tokens-anthropic": s_tokens,
    "agent-cap": s_agent_cap,
    "rate-limited": s_rate_limited,
    "restart-under-load": s_restart_under_load,
    "fail-open-outage": s_fail_open_outage,
    "watch-reconnects": s_watch_reconnects,
    "tls-and-key": s_tls_and_key,
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_scenario(name: str) -> None:
    implementations: Dict[str, Any] = ASYNC if VARIANT == "asyncio" else SYNC
    assert name in implementations, f"scenario {name} of scenarios.json has no Python ({VARIANT}) implementation"
    rep = Report(name)
    sc, project = SCENARIOS[name], PROJECTS[name]
    if VARIANT == "asyncio":
        asyncio.run(implementations[name](sc, project, rep))
    else:
        implementations[name](sc, project, rep)
    rep.assert_ok()
