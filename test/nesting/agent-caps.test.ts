// Per-agent caps and the runaway guard served end to end (issue 18's
// Must-hold list), on each database: one agent looping is refused at its cap
// (AGENT_LIMIT) while other agents of the project go on; a burst over a spend
// rate is refused with RATE_LIMITED and a retry_at, and allowed once that
// instant has passed (a hand-moved clock: no sleeping, no timing).
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDecisionReason, BudgetWindow } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { TallyServer } from "../../src/server.ts";
import { rateWindowMs } from "../../src/limits.ts";
import { createPostgresDatabase, databaseKinds } from "../databases.ts";
import { clientsFor, startTestServer, TestClock, usd, type BudgetClient } from "../helpers.ts";

const unit = usd(1);
const holdTtl = { seconds: 600n };

for (const kind of databaseKinds)
  describe(`agent caps and the runaway guard on ${kind}`, () => {
    let server: TallyServer;
    let client: BudgetClient;
    let drop: (() => Promise<void>) | undefined;
    const clock = new TestClock("2026-12-05T10:00:00Z");
    beforeAll(async () => {
      // SQLite: a file database, so writes go through the writer thread.
      let databaseUrl = `sqlite:${join(mkdtempSync(join(tmpdir(), "tally-caps-")), "tally.db")}`;
      if (kind === "postgresql") ({ url: databaseUrl, drop } = await createPostgresDatabase());
      server = await startTestServer({ databaseUrl }, { now: clock.now });
      client = clientsFor(server.url)["connect+json http/1.1"]!;
    });
    afterAll(async () => {
      await server?.close();
      await drop?.();
    });

    /** One guarded call: reserve with the agent, then settle with the hold. */
    async function call(projectId: string, agentId: string, costNanos: bigint, n: number) {
      const check = await client.checkBudget({ projectId, estimatedCostNanos: costNanos, reserve: true, holdTtl, agentId });
      if (check.allowed) await client.recordCost({ projectId, costNanos, requestId: `${agentId}-${n}`, agentId, holdId: check.holdId });
      return check;
    }

    it("stores caps, overrides and the rate, keeps what a change leaves out, and shows them", async () => {
      const set = await client.setProjectBudget({
        projectId: "shown",
        limitNanos: 100n * unit,
        agentLimitNanos: 5n * unit,
        agentDailyLimitNanos: 4n * unit,
        agentRateLimitNanosPerMinute: 3n * unit,
        rateLimitNanosPerMinute: 20n * unit,
        agentLimitOverrides: {
          agentLimits: [{ agentId: "vip", limitNanos: 50n * unit }, { agentId: "exempt" }],
        },
      });
      expect(set.budget).toMatchObject({
        agentLimitNanos: 5n * unit,
        agentDailyLimitNanos: 4n * unit,
        agentMonthlyLimitNanos: 0n,
        agentRateLimitNanosPerMinute: 3n * unit,
        rateLimitNanosPerMinute: 20n * unit,
      });
      // Ascending by agent_id, as stored.
      expect(set.budget!.agentLimitOverrides.map((o) => [o.agentId, o.limitNanos])).toEqual([
        ["exempt", 0n],
        ["vip", 50n * unit],
      ]);
      // A change that gives only the limit keeps every cap; an empty list clears the overrides.
      await client.setProjectBudget({ projectId: "shown", limitNanos: 90n * unit });
      const kept = (await client.getProjectBudget({ projectId: "shown" })).budget!;
      expect(kept).toMatchObject({ limitNanos: 90n * unit, agentLimitNanos: 5n * unit, rateLimitNanosPerMinute: 20n * unit });
      expect(kept.agentLimitOverrides).toHaveLength(2);
      await client.setProjectBudget({
        projectId: "shown",
        limitNanos: 90n * unit,
        agentLimitOverrides: { agentLimits: [] },
        rateLimitNanosPerMinute: 0n,
      });
      const cleared = (await client.getProjectBudget({ projectId: "shown" })).budget!;
      expect(cleared).toMatchObject({ agentLimitNanos: 5n * unit, rateLimitNanosPerMinute: 0n, agentLimitOverrides: [] });
    });

    it("one agent looping is refused at its cap while the project's other agents go on", async () => {
      await client.setProjectBudget({
        projectId: "fleet",
        limitNanos: 100n * unit,
        agentLimitNanos: 10n * unit,
        agentLimitOverrides: { agentLimits: [{ agentId: "exempt" }] },
      });
      let n = 0;
      const loopAnswers = [];
      for (let i = 0; i < 15; i++) loopAnswers.push(await call("fleet", "looper", unit, n++));
      const allowed = loopAnswers.filter((a) => a.allowed).length;
      expect(allowed).toBe(10);
      const refused = loopAnswers.at(-1)!;
      expect(refused).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.AGENT_LIMIT,
        decidedByProjectId: "fleet",
        decidedByAgentId: "looper",
        decidedBy: BudgetWindow.LIFETIME,
        holdId: "",
      });
      const agentLevel = refused.levels.find((l) => l.agentId === "looper")!;
      expect(agentLevel.limits[0]).toMatchObject({ spentNanos: 10n * unit, remainingNanos: 0n, allowed: false });
      // A read-only check says the same, without placing anything.
      expect(await client.checkBudget({ projectId: "fleet", estimatedCostNanos: unit, agentId: "looper" })).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.AGENT_LIMIT,
      });
      // The project still has 90 units: other agents, an exempt one and calls without an agent go on.
      expect((await call("fleet", "other", unit, n++)).allowed).toBe(true);
      expect((await call("fleet", "exempt", 12n * unit, n++)).allowed).toBe(true);
      expect((await client.checkBudget({ projectId: "fleet", estimatedCostNanos: 5n * unit, reserve: true, holdTtl })).allowed).toBe(true);
      // Holds count toward the agent's cap: 9 held by one agent leave 1.
      const held = await client.checkBudget({
        projectId: "fleet",
        estimatedCostNanos: 9n * unit,
        reserve: true,
        holdTtl,
        agentId: "holder",
      });
      expect(held.allowed).toBe(true);
      expect(
        (await client.checkBudget({ projectId: "fleet", estimatedCostNanos: 2n * unit, reserve: true, holdTtl, agentId: "holder" })).reason,
      ).toBe(BudgetDecisionReason.AGENT_LIMIT);
      // Released, the hold stops counting.
      await client.releaseHold({ projectId: "fleet", holdId: held.holdId });
      expect((await client.checkBudget({ projectId: "fleet", estimatedCostNanos: 10n * unit, agentId: "holder" })).allowed).toBe(true);
      // Recording reality is never refused by a cap: a record without a hold past the cap counts.
      await client.recordCost({ projectId: "fleet", costNanos: 3n * unit, requestId: "late", agentId: "looper" });
      const cost = await client.getProjectCost({ projectId: "fleet" });
      expect(cost.projectCost!.totalCostNanos).toBe(10n * unit + unit + 12n * unit + 3n * unit);
    });

    it("a daily agent cap resets with the project's day", async () => {
      await client.setProjectBudget({ projectId: "daily", limitNanos: 0n, agentDailyLimitNanos: 2n * unit, timeZone: "UTC" });
      clock.set("2026-12-06T23:00:00Z");
      expect((await call("daily", "a", 2n * unit, 0)).allowed).toBe(true);
      expect((await call("daily", "a", unit, 1)).reason).toBe(BudgetDecisionReason.AGENT_LIMIT);
      clock.set("2026-12-07T00:30:00Z");
      expect((await call("daily", "a", 2n * unit, 2)).allowed).toBe(true);
    });

    it("a burst over the rate is refused with retry_at, and allowed once it has passed", async () => {
      clock.set("2026-12-08T12:00:00.250Z");
      await client.setProjectBudget({ projectId: "burst", limitNanos: 1_000n * unit, rateLimitNanosPerMinute: 10n * unit });
      let n = 0;
      const answers = [];
      for (let i = 0; i < 12; i++) {
        answers.push(await call("burst", "", unit, n++));
        clock.advance(1_000);
      }
      expect(answers.filter((a) => a.allowed)).toHaveLength(10);
      const refused = answers[10]!;
      expect(refused).toMatchObject({ allowed: false, reason: BudgetDecisionReason.RATE_LIMITED, decidedBy: BudgetWindow.ROLLING_MINUTE });
      expect(refused.retryAt).toBeDefined();
      const retryAtMs = Number(timestampMs(refused.retryAt!));
      // The first record (t0) leaves the window a minute later (at most one bucket later).
      const firstMs = Date.parse("2026-12-08T12:00:00.250Z");
      expect(retryAtMs).toBeGreaterThan(firstMs + rateWindowMs - 1);
      expect(retryAtMs).toBeLessThanOrEqual(firstMs + rateWindowMs + 1_000);
      // The lifetime limit was never the reason: 10 of 1000 spent.
      expect((await client.getProjectCost({ projectId: "burst" })).projectCost!.totalCostNanos).toBe(10n * unit);
      clock.ms = retryAtMs - 1;
      expect((await client.checkBudget({ projectId: "burst", estimatedCostNanos: unit })).reason).toBe(BudgetDecisionReason.RATE_LIMITED);
      clock.ms = retryAtMs;
      expect((await call("burst", "", unit, n++)).allowed).toBe(true);
      // RecordCost still records reality over the rate.
      await client.recordCost({ projectId: "burst", costNanos: 50n * unit, requestId: "reality" });
      expect((await client.getProjectCost({ projectId: "burst" })).projectCost!.totalCostNanos).toBe(61n * unit);
      // An estimate above the whole rate never fits: refused without a retry time.
      const never = await client.checkBudget({ projectId: "burst", estimatedCostNanos: 11n * unit });
      expect(never).toMatchObject({ allowed: false, reason: BudgetDecisionReason.RATE_LIMITED });
      expect(never.retryAt).toBeUndefined();
    });

    it("an agent's rate stops a looping agent; holds count until released; a parent's rate counts its children", async () => {
      clock.set("2026-12-09T08:00:00Z");
      await client.setProjectBudget({ projectId: "team", limitNanos: 0n, rateLimitNanosPerMinute: 6n * unit });
      await client.setProjectBudget({ projectId: "svc", limitNanos: 0n, parentId: "team", agentRateLimitNanosPerMinute: 3n * unit });
      // Holds, unsettled, count toward the agent's rate.
      const holds = [];
      for (let i = 0; i < 3; i++)
        holds.push(await client.checkBudget({ projectId: "svc", estimatedCostNanos: unit, reserve: true, holdTtl, agentId: "loop" }));
      expect(holds.every((h) => h.allowed)).toBe(true);
      const fourth = await client.checkBudget({ projectId: "svc", estimatedCostNanos: unit, reserve: true, holdTtl, agentId: "loop" });
      expect(fourth).toMatchObject({ allowed: false, reason: BudgetDecisionReason.RATE_LIMITED, decidedByAgentId: "loop" });
      await client.releaseHold({ projectId: "svc", holdId: holds[0]!.holdId });
      expect((await client.checkBudget({ projectId: "svc", estimatedCostNanos: unit, agentId: "loop" })).allowed).toBe(true);
      // Other agents of svc fill the team's rate (6): 2 held by loop + 4 more.
      for (let i = 0; i < 4; i++) expect((await call("svc", `w${i}`, unit, i)).allowed).toBe(true);
      const team = await client.checkBudget({ projectId: "svc", estimatedCostNanos: unit, agentId: "fresh" });
      expect(team).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.RATE_LIMITED,
        decidedByProjectId: "team",
        decidedByAgentId: "",
      });
      // Reserving on the team itself is refused too; a minute later all is free again.
      expect((await client.checkBudget({ projectId: "team", estimatedCostNanos: unit })).allowed).toBe(false);
      clock.advance(rateWindowMs + 1_000);
      expect((await client.checkBudget({ projectId: "svc", estimatedCostNanos: 3n * unit, agentId: "loop" })).allowed).toBe(true);
    });

    it("a reservation's agent is part of its idempotent payload", async () => {
      await client.setProjectBudget({ projectId: "idem", limitNanos: 100n * unit, agentLimitNanos: 50n * unit });
      const first = await client.checkBudget({
        projectId: "idem",
        estimatedCostNanos: unit,
        reserve: true,
        holdTtl,
        requestId: "res-1",
        agentId: "a",
      });
      const again = await client.checkBudget({
        projectId: "idem",
        estimatedCostNanos: unit,
        reserve: true,
        holdTtl,
        requestId: "res-1",
        agentId: "a",
      });
      expect(again).toMatchObject({ duplicate: true, holdId: first.holdId });
      const other = client.checkBudget({
        projectId: "idem",
        estimatedCostNanos: unit,
        reserve: true,
        holdTtl,
        requestId: "res-1",
        agentId: "b",
      });
      await expect(other).rejects.toMatchObject({
        code: Code.AlreadyExists,
        rawMessage: expect.stringContaining('agent_id: reserved "a", now "b"'),
      });
    });
  });
