// Nested budgets' contract at the API edge (issue 18): the new fields are
// validated with precise codes, CheckBudget answers with its levels and
// decided_by_project_id, and caps and rates are kept and shown. Over a real
// server on each database.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BreakdownDimension, BudgetDecisionReason, BudgetWindow } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { TallyServer } from "../../src/server.ts";
import { createPostgresDatabase, databaseKinds } from "../databases.ts";
import { clientsFor, startTestServer, usd, type BudgetClient } from "../helpers.ts";

async function codeOf(call: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await call;
  } catch (error) {
    const e = ConnectError.from(error);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

for (const kind of databaseKinds) {
  describe(`nested budgets contract on ${kind}`, () => {
    let server: TallyServer;
    let client: BudgetClient;
    let drop: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      let databaseUrl = "sqlite::memory:";
      if (kind === "postgresql") ({ url: databaseUrl, drop } = await createPostgresDatabase());
      server = await startTestServer({ databaseUrl });
      client = clientsFor(server.url)["connect+json http/1.1"]!;
    });
    afterAll(async () => {
      await server?.close();
      await drop?.();
    });

    it("CheckBudget names the deciding project and lists the project's level", async () => {
      await client.setProjectBudget({ projectId: "flat", limitNanos: usd(10), dailyLimitNanos: usd(2) });
      await client.recordCost({ projectId: "flat", costNanos: usd(1.5), requestId: "r1" });
      const refused = await client.checkBudget({ projectId: "flat", estimatedCostNanos: usd(1), reserve: true });
      expect(refused).toMatchObject({
        allowed: false,
        reason: BudgetDecisionReason.EXCEEDS_REMAINING,
        decidedBy: BudgetWindow.DAY,
        decidedByProjectId: "flat",
        decidedByAgentId: "",
      });
      expect(refused.retryAt).toBeUndefined();
      expect(refused.levels).toHaveLength(1);
      const [level] = refused.levels;
      expect(level).toMatchObject({
        projectId: "flat",
        agentId: "",
        allowed: false,
        reason: BudgetDecisionReason.EXCEEDS_REMAINING,
        decidedBy: BudgetWindow.DAY,
      });
      expect(level!.limits.map((l) => [l.window, l.projectId, l.remainingNanos, l.allowed])).toEqual([
        [BudgetWindow.LIFETIME, "flat", usd(8.5), true],
        [BudgetWindow.DAY, "flat", usd(0.5), false],
      ]);
      const none = await client.checkBudget({ projectId: "no-limit", estimatedCostNanos: usd(1) });
      expect(none).toMatchObject({ allowed: true, reason: BudgetDecisionReason.NO_LIMIT, decidedByProjectId: "", levels: [] });
    });

    it("refuses a project as its own parent with FAILED_PRECONDITION naming the cycle", async () => {
      const { code, message } = await codeOf(client.setProjectBudget({ projectId: "team", limitNanos: usd(1), parentId: "team" }));
      expect(code).toBe(Code.FailedPrecondition);
      expect(message).toContain("cycle (team -> team)");
    });

    it("validates the new fields with INVALID_ARGUMENT naming each", async () => {
      const cases: Array<[Parameters<BudgetClient["setProjectBudget"]>[0], string]> = [
        [{ projectId: "p", parentId: "bad id" }, "parent_id"],
        [{ projectId: "p", agentLimitNanos: -1n }, "agent_limit_nanos must be >= 0"],
        [{ projectId: "p", rateLimitNanosPerMinute: -5n }, "rate_limit_nanos_per_minute must be >= 0"],
        [
          { projectId: "p", agentLimitOverrides: { agentLimits: [{ agentId: "", limitNanos: 1n }] } },
          "agent_limit_overrides[0].agent_id is required",
        ],
        [
          {
            projectId: "p",
            agentLimitOverrides: {
              agentLimits: [
                { agentId: "a", limitNanos: 1n },
                { agentId: "a", limitNanos: 2n },
              ],
            },
          },
          'names agent "a" twice',
        ],
        [
          { projectId: "p", agentLimitOverrides: { agentLimits: Array.from({ length: 257 }, (_, i) => ({ agentId: `a${i}` })) } },
          "257 entries; the maximum is 256",
        ],
      ];
      for (const [request, expected] of cases) {
        const { code, message } = await codeOf(client.setProjectBudget(request));
        expect([code, message]).toEqual([Code.InvalidArgument, expect.stringContaining(expected)]);
      }
      const badAgent = await codeOf(client.checkBudget({ projectId: "p", estimatedCostNanos: 1n, agentId: "a b" }));
      expect(badAgent.code).toBe(Code.InvalidArgument);
    });

    it("keeps caps and rates (every store does), refuses a missing parent with NOT_FOUND, changing nothing", async () => {
      await client.setProjectBudget({ projectId: "kept", limitNanos: usd(5) });
      expect(await codeOf(client.setProjectBudget({ projectId: "kept", limitNanos: usd(7), parentId: "org" }))).toMatchObject({
        code: Code.NotFound,
        message: expect.stringContaining('parent project "org" does not exist'),
      });
      expect((await client.getProjectBudget({ projectId: "kept" })).budget?.limitNanos).toBe(usd(5));
      const capped = await client.setProjectBudget({
        projectId: "kept",
        limitNanos: usd(6),
        parentId: "",
        agentLimitNanos: 1n,
        agentRateLimitNanosPerMinute: 2n,
        rateLimitNanosPerMinute: usd(1),
        agentLimitOverrides: { agentLimits: [{ agentId: "a", limitNanos: 3n }] },
      });
      expect(capped.budget).toMatchObject({
        limitNanos: usd(6),
        parentId: "",
        agentLimitNanos: 1n,
        agentRateLimitNanosPerMinute: 2n,
        rateLimitNanosPerMinute: usd(1),
        agentLimitOverrides: [{ agentId: "a", limitNanos: 3n }],
      });
      // Asking for what every project starts as (no parent, no caps, no rate) clears them.
      const same = await client.setProjectBudget({
        projectId: "kept",
        limitNanos: usd(6),
        agentLimitNanos: 0n,
        agentRateLimitNanosPerMinute: 0n,
        rateLimitNanosPerMinute: 0n,
        agentLimitOverrides: { agentLimits: [] },
      });
      expect(same.budget).toMatchObject({ agentLimitNanos: 0n, rateLimitNanosPerMinute: 0n, agentLimitOverrides: [] });
      // A reservation may name its agent; with no cap it decides as without.
      const reserve = await client.checkBudget({ projectId: "kept", estimatedCostNanos: 1n, reserve: true, agentId: "agent-1" });
      expect(reserve).toMatchObject({ allowed: true, decidedByAgentId: "" });
      expect((await client.getProjectCost({ projectId: "kept" })).projectCost?.activeHoldCount).toBe(1n);
      // Both stores keep trees: a project without children has no entries by child.
      const child = await client.getProjectCost({ projectId: "kept", breakdownBy: [BreakdownDimension.CHILD] });
      expect(child.breakdowns[0]).toMatchObject({ dimension: BreakdownDimension.CHILD, entries: [] });
    });
  });
}
