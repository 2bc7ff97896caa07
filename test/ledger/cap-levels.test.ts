// What a decision reads for agent caps and rates, and the levels it builds
// (src/ledger/cap-levels.ts), without a database: what the stores rely on.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { agentCapsFor, type AgentCapConfig } from "../../src/ledger/agent-caps.ts";
import { agentSpendOf, bucketEntry, capNeeds, decisionLevels, rateBucketOf, rateTargets } from "../../src/ledger/cap-levels.ts";
import { decideNested, projectLevel } from "../../src/ledger/nested-decision.ts";
import { decideRate, leavesAtMs, type RateEntry } from "../../src/ledger/rate-guard.ts";
import type { BudgetState } from "../../src/ledger/types.ts";
import { rateBucketMs } from "../../src/limits.ts";
import { noCaps } from "../../src/store/cap-rows.ts";
import { unsetBudget } from "../../src/store/rows.ts";
import { zeroTotals } from "../../src/ledger/types.ts";

const period = (window: "day" | "month", p: string) => ({
  window,
  period: p,
  timeZone: "UTC",
  totalCostNanos: 0n,
  inputTokens: 0n,
  outputTokens: 0n,
  recordCount: 0n,
});

function state(projectId: string, over: Partial<BudgetState["budget"]> = {}): BudgetState {
  return {
    budget: { ...unsetBudget(projectId), limitNanos: 100n, configured: true, ...over },
    totals: zeroTotals(projectId),
    day: period("day", "2026-12-05"),
    month: period("month", "2026-12"),
    reservedNanos: 0n,
    activeHoldCount: 0n,
  };
}

const caps = (limitNanos: bigint, rate = 0n): AgentCapConfig => ({
  defaults: { limitNanos, dailyLimitNanos: 0n, monthlyLimitNanos: 0n, rateLimitNanosPerMinute: rate },
  overrides: [{ agentId: "exempt", limitNanos: 0n, dailyLimitNanos: 0n, monthlyLimitNanos: 0n, rateLimitNanosPerMinute: 0n }],
});

describe("capNeeds and decisionLevels", () => {
  it("without caps or rates reads nothing and builds the chain's own levels", () => {
    const chain = [state("p", { parentId: "org" }), state("org")];
    const needs = capNeeds(chain, "agent-1");
    expect(needs).toEqual({ agent: null, rateProjects: [] });
    const levels = decisionLevels(chain, needs, { agentSpend: null, projectRates: new Map() });
    expect(levels).toEqual(chain.map((s) => projectLevel(s)));
  });

  it("asks for the agent's spend only with an agent that has a cap, and for each rated level's entries", () => {
    const chain = [
      state("p", { agentCaps: caps(10n), rateLimitNanosPerMinute: 5n, parentId: "org" }),
      state("org", { rateLimitNanosPerMinute: 50n }),
    ];
    expect(capNeeds(chain, "").agent).toBeNull(); // calls without an agent are not capped
    expect(capNeeds(chain, "exempt").agent).toBeNull(); // an override of zeros exempts
    expect(capNeeds(chain, "a").agent).toEqual({ projectId: "p", agentId: "a", caps: caps(10n).defaults });
    expect(capNeeds(chain, "a").rateProjects).toEqual(["p", "org"]);
    expect(() => decisionLevels(chain, capNeeds(chain, "a"), { agentSpend: null, projectRates: new Map() })).toThrow(/invariant/);
  });

  it("an agent at its cap is refused by it (AGENT_LIMIT) while the project allows", () => {
    const chain = [state("p", { agentCaps: caps(10n) })];
    const needs = capNeeds(chain, "a");
    const spend = {
      lifetimeNanos: 8n,
      dayPeriod: "2026-12-05",
      dayNanos: 0n,
      monthPeriod: "2026-12",
      monthNanos: 0n,
      reservedNanos: 2n,
      rateEntries: [],
    };
    const decision = decideNested(decisionLevels(chain, needs, { agentSpend: spend, projectRates: new Map() }), 1n, 0);
    expect(decision).toMatchObject({ allowed: false, reason: "agent_limit", decidedByAgentId: "a", decidedByProjectId: "p" });
  });

  it("rateTargets: the chain's rated projects, and the agent's own rate only when its caps have one", () => {
    const settings = [
      { projectId: "p", ...noCaps, agentCaps: caps(0n, 7n), rateLimitNanosPerMinute: 0n },
      { projectId: "org", ...noCaps, rateLimitNanosPerMinute: 9n },
    ];
    expect(rateTargets(settings, "a")).toEqual({ projects: ["org"], agent: true });
    expect(rateTargets(settings, "exempt")).toEqual({ projects: ["org"], agent: false });
    expect(rateTargets(settings, "")).toEqual({ projects: ["org"], agent: false });
    expect(agentCapsFor(caps(0n, 7n), "a")?.rateLimitNanosPerMinute).toBe(7n);
  });

  it("an agent's day spend counts only in the project's current day", () => {
    const spend = (day: { period: string; nanos: bigint } | undefined) =>
      agentSpendOf(state("p"), {
        lifetimeNanos: 20n,
        day,
        month: day && { period: "2026-12", nanos: 30n },
        reservedNanos: 0n,
        rateEntries: [],
      });
    expect(spend({ period: "2026-12-05", nanos: 9n })).toMatchObject({
      dayPeriod: "2026-12-05",
      dayNanos: 9n,
      monthNanos: 30n,
      lifetimeNanos: 20n,
    });
    expect(spend({ period: "2026-12-04", nanos: 9n })).toMatchObject({ dayNanos: 0n, monthNanos: 30n });
    expect(spend(undefined)).toMatchObject({ dayNanos: 0n, monthNanos: 0n });
  });
});

describe("rate buckets", () => {
  it("a record counts in its bucket at least as long as on its own, and at most one bucket longer", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), fc.bigInt({ min: 1n, max: 1n << 40n }), (atMs, amount) => {
        const own: RateEntry = { atMs, amountNanos: amount, reserved: false };
        const bucketed = bucketEntry(rateBucketOf(atMs), amount);
        expect(leavesAtMs(bucketed)).toBeGreaterThanOrEqual(leavesAtMs(own));
        expect(leavesAtMs(bucketed) - leavesAtMs(own)).toBeLessThan(rateBucketMs);
      }),
    );
  });

  it("deciding on buckets never allows what deciding on the records refuses", () => {
    const records = fc.array(fc.record({ atMs: fc.integer({ min: 0, max: 120_000 }), amountNanos: fc.bigInt({ min: 0n, max: 100n }) }), {
      maxLength: 40,
    });
    fc.assert(
      fc.property(
        records,
        fc.integer({ min: 0, max: 200_000 }),
        fc.bigInt({ min: 1n, max: 2_000n }),
        fc.bigInt({ min: 0n, max: 200n }),
        (rs, nowMs, limit, estimate) => {
          const live = rs.filter((r) => r.atMs <= nowMs);
          const exact = live.map((r) => ({ ...r, reserved: false }));
          const sums = new Map<number, bigint>();
          for (const r of live) sums.set(rateBucketOf(r.atMs), (sums.get(rateBucketOf(r.atMs)) ?? 0n) + r.amountNanos);
          const bucketed = [...sums].map(([bucketMs, amount]) => bucketEntry(bucketMs, amount));
          const onRecords = decideRate(limit, exact, estimate, nowMs);
          const onBuckets = decideRate(limit, bucketed, estimate, nowMs);
          if (onBuckets.allowed) expect(onRecords.allowed).toBe(true);
          // A refusal's retry time is never earlier than the records' own.
          if (!onBuckets.allowed && onBuckets.retryAtMs !== null && onRecords.retryAtMs !== null)
            expect(onBuckets.retryAtMs).toBeGreaterThanOrEqual(onRecords.retryAtMs);
          expect(onBuckets.spentNanos).toBeGreaterThanOrEqual(onRecords.spentNanos);
        },
      ),
    );
  });
});
