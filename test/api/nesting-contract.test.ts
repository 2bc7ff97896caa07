// Nested budgets' contract at the API edge (issue 18, first milestone): the
// new fields are validated with precise codes, CheckBudget answers with its
// levels and decided_by_project_id, and whatever the stores cannot keep yet
// (an agent cap, a rate, agent_id on a check) is refused with UNIMPLEMENTED
// and changes nothing. Over a real server on
// each database.
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

    it("refuses what the stores cannot keep yet with UNIMPLEMENTED, changing nothing", async () => {
      await client.setProjectBudget({ projectId: "kept", limitNanos: usd(5) });
      const attempts: Array<[Parameters<BudgetClient["setProjectBudget"]>[0], string]> = [
        [{ projectId: "kept", limitNanos: usd(7), agentLimitNanos: 1n }, "agent_limit_nanos"],
        [{ projectId: "kept", limitNanos: usd(7), agentRateLimitNanosPerMinute: 1n }, "agent_rate_limit_nanos_per_minute"],
        [
          { projectId: "kept", limitNanos: usd(7), agentLimitOverrides: { agentLimits: [{ agentId: "a", limitNanos: 1n }] } },
          "agent_limit_overrides",
        ],
        [{ projectId: "kept", limitNanos: usd(7), rateLimitNanosPerMinute: usd(1) }, "rate_limit_nanos_per_minute"],
      ];
      expect(await codeOf(client.setProjectBudget({ projectId: "kept", limitNanos: usd(7), parentId: "org" }))).toMatchObject({
        code: Code.NotFound,
        message: expect.stringContaining('parent project "org" does not exist'),
      });
      for (const [request, expected] of attempts) {
        const { code, message } = await codeOf(client.setProjectBudget(request));
        expect([code, message]).toEqual([Code.Unimplemented, expect.stringContaining(expected)]);
      }
      expect((await client.getProjectBudget({ projectId: "kept" })).budget?.limitNanos).toBe(usd(5));
      // Asking for what every project already is (no parent, no caps, no rate) is accepted.
      const same = await client.setProjectBudget({
        projectId: "kept",
        limitNanos: usd(6),
        parentId: "",
        agentLimitNanos: 0n,
        rateLimitNanosPerMinute: 0n,
        agentLimitOverrides: { agentLimits: [] },
      });
      expect(same.budget).toMatchObject({
        limitNanos: usd(6),
        parentId: "",
        agentLimitNanos: 0n,
        rateLimitNanosPerMinute: 0n,
        agentLimitOverrides: [],
      });

      const reserve = await codeOf(client.checkBudget({ projectId: "kept", estimatedCostNanos: 1n, reserve: true, agentId: "agent-1" }));
      expect([reserve.code, reserve.message]).toEqual([Code.Unimplemented, expect.stringContaining('agent_id "agent-1"')]);
      expect((await client.getProjectCost({ projectId: "kept" })).projectCost?.activeHoldCount).toBe(0n);
      // Both stores keep trees: a project without children has no entries by child.
      const child = await client.getProjectCost({ projectId: "kept", breakdownBy: [BreakdownDimension.CHILD] });
      expect(child.breakdowns[0]).toMatchObject({ dimension: BreakdownDimension.CHILD, entries: [] });
    });
  });
}
