// The decision across levels (agent cap, project, ancestors) as pure
// functions: equal to the one-level rule for a flat project, allowed exactly
// when every limit of every level allows, the deciding level chosen by the
// documented precedence, and, applied one reservation after another, never
// more holds than the tightest level has room for.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { agentCapsFor, agentLevel, noAgentCaps, type AgentCapConfig } from "../../src/ledger/agent-caps.ts";
import { decideLimits, type LimitInput } from "../../src/ledger/budget.ts";
import { decideNested, flatNested, NestedReason, type LevelInput } from "../../src/ledger/nested-decision.ts";
import { decideRate, type RateEntry } from "../../src/ledger/rate-guard.ts";
import { Window } from "../../src/ledger/types.ts";
import { int64Max } from "../../src/ledger/money.ts";

const amount = fc.oneof(fc.bigInt({ min: 0n, max: 1_000n }), fc.bigInt({ min: 0n, max: int64Max / 4n }));
const limitInputs = fc.tuple(amount, amount, amount, amount, amount, amount).map(([l, ls, d, ds, m, ms]): LimitInput[] => [
  { window: Window.lifetime, period: "", limitNanos: l, spentNanos: ls },
  { window: Window.day, period: "2026-12-05", limitNanos: d, spentNanos: ds },
  { window: Window.month, period: "2026-12", limitNanos: m, spentNanos: ms },
]);
/** Small numbers so that limits bind and tie often. */
const small = fc.bigInt({ min: 0n, max: 12n });
const smallLimits = fc.tuple(small, small, small, small, small, small).map(([l, ls, d, ds, m, ms]): LimitInput[] => [
  { window: Window.lifetime, period: "", limitNanos: l, spentNanos: ls },
  { window: Window.day, period: "2026-12-05", limitNanos: d, spentNanos: ds },
  { window: Window.month, period: "2026-12", limitNanos: m, spentNanos: ms },
]);
const rateEntry = fc.record({ atMs: fc.integer({ min: 0, max: 60_000 }), amountNanos: small, reserved: fc.boolean() });
const level = (projectId: string, agentId = "") =>
  fc
    .record({
      limits: smallLimits,
      reservedNanos: fc.bigInt({ min: 0n, max: 4n }),
      rate: fc.option(fc.record({ limitNanos: fc.bigInt({ min: 1n, max: 20n }), entries: fc.array(rateEntry, { maxLength: 5 }) }), {
        nil: null,
      }),
    })
    .map((l): LevelInput => ({ projectId, agentId, ...l }));
const levelsArb = fc
  .tuple(fc.option(level("p", "agent-1"), { nil: null }), level("p"), fc.array(fc.constantFrom("team", "org", "bu"), { maxLength: 3 }))
  .chain(([agent, project, ancestors]) =>
    fc.tuple(...[...new Set(ancestors)].map((id) => level(id))).map((above) => [...(agent === null ? [] : [agent]), project, ...above]),
  );
const nowMs = 60_000;
const flat = (limitNanos: bigint, spentNanos = 0n): LimitInput[] => [{ window: Window.lifetime, period: "", limitNanos, spentNanos }];
const projectOf = (projectId: string, limitNanos: bigint, spentNanos: bigint, reservedNanos: bigint): LevelInput => ({
  projectId,
  agentId: "",
  limits: flat(limitNanos, spentNanos),
  reservedNanos,
  rate: null,
});

describe("decideNested", () => {
  it("is the one-level rule for a flat project without agent or rate", () => {
    fc.assert(
      fc.property(limitInputs, fc.bigInt({ min: 0n, max: int64Max / 4n }), amount, (limits, reserved, estimate) => {
        const one = decideLimits(limits, reserved, estimate);
        const nested = decideNested([{ projectId: "p", agentId: "", limits, reservedNanos: reserved, rate: null }], estimate, nowMs);
        expect(nested.allowed).toBe(one.allowed);
        expect(nested.reason).toBe(one.reason);
        expect(nested.decidedBy).toBe(one.decidedBy);
        expect(nested.decidedByProjectId).toBe(one.decidedBy === null ? "" : "p");
        expect(nested.levels.map((l) => l.limits)).toEqual(one.limits.length === 0 ? [] : [one.limits]);
        // And a store's one-level decision converts to exactly this answer.
        expect(flatNested("p", one)).toEqual(nested);
      }),
      { numRuns: 2_000 },
    );
  });

  it("allows exactly when every limit of every level allows, and names a deciding limit by the precedence", () => {
    fc.assert(
      fc.property(levelsArb, small, (levels, estimate) => {
        const d = decideNested(levels, estimate, nowMs);
        // Oracle, from the one-level functions only.
        const per = levels.map((l) => ({
          l,
          limits: decideLimits(l.limits, l.reservedNanos, estimate).limits,
          rate: l.rate && decideRate(l.rate.limitNanos, l.rate.entries, estimate, nowMs),
        }));
        const everyAllows = per.every((p) => p.limits.every((x) => x.allowed) && (p.rate === null || p.rate.allowed));
        expect(d.allowed).toBe(everyAllows);
        const anyLimit = per.some((p) => p.limits.length > 0 || p.rate !== null);
        if (!anyLimit) {
          expect(d).toMatchObject({ reason: NestedReason.noLimit, decidedBy: null, decidedByProjectId: "", levels: [] });
          return;
        }
        const treeRefusing = per.filter((p) => p.l.agentId === "").flatMap((p) => p.limits.filter((x) => !x.allowed));
        const agentRefusing = per.filter((p) => p.l.agentId !== "").flatMap((p) => p.limits.filter((x) => !x.allowed));
        const rateRefusing = per.filter((p) => p.rate !== null && !p.rate.allowed).map((p) => p.rate!);
        if (treeRefusing.length > 0) {
          expect(d.decidedByAgentId).toBe("");
          expect(d.decidedByRemainingNanos).toBe(treeRefusing.reduce((m, x) => (x.remainingNanos < m ? x.remainingNanos : m), int64Max));
          expect(d.reason).not.toBe(NestedReason.agentLimit);
          expect(d.reason).not.toBe(NestedReason.rateLimited);
        } else if (agentRefusing.length > 0) {
          expect(d).toMatchObject({ reason: NestedReason.agentLimit, decidedByAgentId: "agent-1", decidedByProjectId: "p" });
        } else if (rateRefusing.length > 0) {
          expect(d.reason).toBe(NestedReason.rateLimited);
          expect(d.decidedBy).toBe("rolling_minute");
          const never = rateRefusing.some((r) => r.retryAtMs === null);
          expect(d.retryAtMs).toBe(never ? null : Math.max(...rateRefusing.map((r) => r.retryAtMs!)));
        } else {
          expect(d.reason).toBe(NestedReason.withinBudget);
          const all = per.flatMap((p) => [...p.limits, ...(p.rate === null ? [] : [p.rate])]);
          expect(d.decidedByRemainingNanos).toBe(all.reduce((m, x) => (x.remainingNanos < m ? x.remainingNanos : m), int64Max));
        }
        expect(d.levels.map((l) => `${l.projectId}/${l.agentId}`)).toEqual(
          per.filter((p) => p.limits.length > 0 || p.rate !== null).map((p) => `${p.l.projectId}/${p.l.agentId}`),
        );
      }),
      { numRuns: 3_000 },
    );
  });

  it("names the ancestor whose limit refused", () => {
    const d = decideNested([projectOf("p1", 50n, 10n, 0n), projectOf("team-a", 0n, 10n, 0n), projectOf("org", 100n, 95n, 0n)], 10n, nowMs);
    expect(d).toMatchObject({
      allowed: false,
      reason: NestedReason.exceedsRemaining,
      decidedBy: Window.lifetime,
      decidedByProjectId: "org",
      decidedByRemainingNanos: 5n,
    });
    expect(d.levels.map((l) => [l.projectId, l.allowed])).toEqual([
      ["p1", true],
      ["org", false],
    ]);
  });

  it("prefers the nearer level on a tie, and a tree refusal over an agent's", () => {
    const tie = decideNested([projectOf("p", 100n, 40n, 0n), projectOf("org", 100n, 40n, 0n)], 1n, nowMs);
    expect(tie).toMatchObject({ allowed: true, decidedByProjectId: "p" });
    const agent: LevelInput = { projectId: "p", agentId: "looper", limits: flat(5n, 5n), reservedNanos: 0n, rate: null };
    expect(decideNested([agent, projectOf("p", 100n, 99n, 1n)], 1n, nowMs)).toMatchObject({
      reason: NestedReason.fullyReserved,
      decidedByProjectId: "p",
      decidedByAgentId: "",
    });
    expect(decideNested([agent, projectOf("p", 100n, 10n, 0n)], 1n, nowMs)).toMatchObject({
      reason: NestedReason.agentLimit,
      decidedByAgentId: "looper",
    });
  });

  it("stops a looping agent at its cap while the project's other agents go on", () => {
    const config: AgentCapConfig = {
      defaults: { ...noAgentCaps, limitNanos: 10n },
      overrides: [{ agentId: "batch", limitNanos: 0n, dailyLimitNanos: 0n, monthlyLimitNanos: 0n, rateLimitNanosPerMinute: 0n }],
    };
    const spentBy = new Map<string, bigint>();
    let projectSpent = 0n;
    const attempt = (agentId: string) => {
      const caps = agentCapsFor(config, agentId);
      const spend = spentBy.get(agentId) ?? 0n;
      const levels = [
        ...(caps === null
          ? []
          : [
              agentLevel("p", agentId, caps, {
                lifetimeNanos: spend,
                dayPeriod: "",
                dayNanos: 0n,
                monthPeriod: "",
                monthNanos: 0n,
                reservedNanos: 0n,
                rateEntries: [],
              }),
            ]),
        projectOf("p", 1_000n, projectSpent, 0n),
      ];
      const d = decideNested(levels, 1n, nowMs);
      if (d.allowed) {
        spentBy.set(agentId, spend + 1n);
        projectSpent += 1n;
      }
      return d;
    };
    for (let i = 0; i < 10; i++) expect(attempt("looper").allowed).toBe(true);
    expect(attempt("looper")).toMatchObject({ allowed: false, reason: NestedReason.agentLimit, decidedByAgentId: "looper" });
    expect(attempt("other").allowed).toBe(true);
    // Exempted by an override of zeros; a call without an agent is not capped.
    for (let i = 0; i < 20; i++) expect(attempt("batch").allowed).toBe(true);
    expect(agentCapsFor(config, "")).toBeNull();
  });

  it("refuses for rate only when every budget allows, with when it fits", () => {
    const entries: RateEntry[] = [{ atMs: 1_000, amountNanos: 10n, reserved: true }];
    const project: LevelInput = { projectId: "p", agentId: "", limits: flat(100n), reservedNanos: 10n, rate: { limitNanos: 10n, entries } };
    expect(decideNested([project, projectOf("org", 100n, 0n, 10n)], 1n, 2_000)).toMatchObject({
      allowed: false,
      reason: NestedReason.rateLimited,
      decidedBy: "rolling_minute",
      decidedByProjectId: "p",
      retryAtMs: 61_000,
    });
    expect(decideNested([project, projectOf("org", 100n, 95n, 10n)], 1n, 2_000)).toMatchObject({
      reason: NestedReason.fullyReserved,
      decidedByProjectId: "org",
      retryAtMs: null,
    });
  });
});

describe("reservations at every level, all or nothing", () => {
  it("org limit 100 over two teams over four projects, 400 reservers of 1 in any order: exactly 100 holds, no level past its limit", () => {
    const parent: Record<string, string | null> = {
      org: null,
      "team-a": "org",
      "team-b": "org",
      p1: "team-a",
      p2: "team-a",
      p3: "team-b",
      p4: "team-b",
    };
    const chain = (id: string) => {
      const out = [id];
      for (let p = parent[id]; p; p = parent[p]) out.push(p);
      return out;
    };
    fc.assert(
      fc.property(fc.array(fc.constantFrom("p1", "p2", "p3", "p4"), { minLength: 400, maxLength: 400 }), (order) => {
        const reserved = new Map<string, bigint>(Object.keys(parent).map((id) => [id, 0n]));
        const limit = (id: string) => (id === "org" ? 100n : 0n);
        let holds = 0;
        for (const project of order) {
          const levels = chain(project).map((id) => projectOf(id, limit(id), 0n, reserved.get(id)!));
          const d = decideNested(levels, 1n, nowMs);
          if (!d.allowed) {
            expect(d).toMatchObject({ reason: NestedReason.fullyReserved, decidedByProjectId: "org" });
            continue;
          }
          for (const id of chain(project)) reserved.set(id, reserved.get(id)! + 1n);
          holds++;
        }
        expect(holds).toBe(100);
        expect(reserved.get("org")).toBe(100n);
        expect(reserved.get("team-a")! + reserved.get("team-b")!).toBe(100n);
      }),
      { numRuns: 50 },
    );
  });
});
