import { describe, expect, it } from "vitest";
import { crossedBps, decideBudget, decideLimits, DecisionReason, highestReachedBps, withExhaustion } from "../../src/ledger/budget.ts";
import { Window } from "../../src/ledger/types.ts";
import { int64Max } from "../../src/ledger/money.ts";

describe("decideBudget", () => {
  it("allows anything when no limit is set (limit 0)", () => {
    expect(decideBudget(0n, 0n, 0n)).toMatchObject({ allowed: true, reason: DecisionReason.noLimit, remainingNanos: 0n });
    expect(decideBudget(0n, int64Max, int64Max)).toMatchObject({ allowed: true, reason: DecisionReason.noLimit });
  });

  it("allows an estimate that fits in what remains", () => {
    expect(decideBudget(100n, 40n, 60n)).toEqual({
      allowed: true,
      reason: DecisionReason.withinBudget,
      limitNanos: 100n,
      spentNanos: 40n,
      remainingNanos: 60n,
    });
  });

  it("refuses an estimate one nano above what remains", () => {
    expect(decideBudget(100n, 40n, 61n)).toMatchObject({ allowed: false, reason: DecisionReason.exceedsRemaining, remainingNanos: 60n });
  });

  it("treats spent exactly equal to the limit as exhausted, even for a zero estimate", () => {
    expect(decideBudget(100n, 100n, 0n)).toMatchObject({ allowed: false, reason: DecisionReason.exhausted, remainingNanos: 0n });
  });

  it("reports a negative remainder once actual spend passed the limit", () => {
    expect(decideBudget(100n, 130n, 1n)).toMatchObject({ allowed: false, reason: DecisionReason.exhausted, remainingNanos: -30n });
  });

  it("allows a zero estimate while anything remains", () => {
    expect(decideBudget(100n, 99n, 0n)).toMatchObject({ allowed: true, reason: DecisionReason.withinBudget, remainingNanos: 1n });
  });

  it("works at the int64 edge", () => {
    expect(decideBudget(int64Max, 0n, int64Max)).toMatchObject({ allowed: true, remainingNanos: int64Max });
    expect(decideBudget(int64Max, int64Max, 0n)).toMatchObject({ allowed: false, reason: DecisionReason.exhausted });
  });

  it("rejects negative inputs as a bug", () => {
    expect(() => decideBudget(-1n, 0n, 0n)).toThrow(/negative/);
  });
});

describe("decideLimits (windows and holds)", () => {
  const lifetime = (limitNanos: bigint, spentNanos: bigint) => ({ window: Window.lifetime, period: "", limitNanos, spentNanos });
  const day = (limitNanos: bigint, spentNanos: bigint) => ({ window: Window.day, period: "2026-11-27", limitNanos, spentNanos });
  const month = (limitNanos: bigint, spentNanos: bigint) => ({ window: Window.month, period: "2026-11", limitNanos, spentNanos });

  it("disables enforcement when no limit is set, whatever is held", () => {
    expect(decideLimits([lifetime(0n, 5n), day(0n, 5n), month(0n, 5n)], int64Max, int64Max)).toEqual({
      allowed: true,
      reason: DecisionReason.noLimit,
      decidedBy: null,
      limits: [],
      reservedNanos: int64Max,
    });
  });

  it("counts active holds: spent + reserved + estimate <= limit", () => {
    expect(decideLimits([lifetime(100n, 40n)], 30n, 30n)).toMatchObject({
      allowed: true,
      decidedBy: Window.lifetime,
      limits: [{ remainingNanos: 30n }],
    });
    expect(decideLimits([lifetime(100n, 40n)], 30n, 31n)).toMatchObject({ allowed: false, reason: DecisionReason.exceedsRemaining });
    expect(decideLimits([lifetime(100n, 40n)], 60n, 0n)).toMatchObject({
      allowed: false,
      reason: DecisionReason.fullyReserved,
      limits: [{ remainingNanos: 0n }],
    });
    // Spent at the limit is exhausted, whatever is held.
    expect(decideLimits([lifetime(100n, 100n)], 60n, 0n)).toMatchObject({
      allowed: false,
      reason: DecisionReason.exhausted,
      limits: [{ remainingNanos: -60n }],
    });
  });

  it("needs every set limit to allow, and names the refusing limit with the least remaining", () => {
    const refused = decideLimits([lifetime(1_000n, 100n), day(50n, 45n), month(200n, 100n)], 0n, 10n);
    expect(refused).toMatchObject({ allowed: false, decidedBy: Window.day, reason: DecisionReason.exceedsRemaining });
    expect(refused.limits.map((l) => [l.window, l.allowed])).toEqual([
      [Window.lifetime, true],
      [Window.day, false],
      [Window.month, true],
    ]);
    // Allowed: the tightest limit is named, as the one that binds next.
    expect(decideLimits([lifetime(1_000n, 100n), day(50n, 0n), month(200n, 180n)], 0n, 10n)).toMatchObject({
      allowed: true,
      decidedBy: Window.month,
    });
    // Ties go to the longer window.
    expect(decideLimits([lifetime(100n, 90n), day(10n, 0n)], 0n, 20n)).toMatchObject({ allowed: false, decidedBy: Window.lifetime });
  });

  it("keeps remaining inside int64 when holds exceed a lowered limit", () => {
    const decision = decideLimits([lifetime(1n, int64Max)], int64Max, 0n);
    expect(decision.limits[0]?.remainingNanos).toBe(-(1n << 63n));
  });
});

describe("alert thresholds", () => {
  it("finds the highest threshold reached in exact integers, 10000 always included", () => {
    expect(highestReachedBps([5000, 8000], 100n, 49n)).toBe(0);
    expect(highestReachedBps([5000, 8000], 100n, 50n)).toBe(5000);
    expect(highestReachedBps([5000, 8000], 100n, 99n)).toBe(8000);
    expect(highestReachedBps([], 100n, 100n)).toBe(10_000);
    expect(highestReachedBps([5000], 0n, 100n)).toBe(0);
    // 1/3 of int64Max: no float could tell these apart.
    expect(highestReachedBps([3333], int64Max, int64Max / 3n)).toBe(3333);
  });

  it("reports each threshold between the last alerted one and the one reached; a new limit re-arms", () => {
    expect(crossedBps([5000, 8000], 0, 0n, 100n, 8000)).toEqual([5000, 8000]);
    expect(crossedBps([5000, 8000], 5000, 100n, 100n, 8000)).toEqual([8000]);
    expect(crossedBps([5000, 8000], 8000, 100n, 100n, 8000)).toEqual([]);
    expect(crossedBps([5000, 8000], 8000, 100n, 200n, 5000)).toEqual([5000]);
    expect(withExhaustion([8000, 5000, 10_000])).toEqual([5000, 8000, 10_000]);
  });
});
