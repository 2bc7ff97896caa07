import { describe, expect, it } from "vitest";
import { decideBudget, DecisionReason } from "../../src/ledger/budget.ts";
import { int64Max } from "../../src/ledger/money.ts";

describe("decideBudget", () => {
  it("allows anything when no limit is set (limit 0)", () => {
    expect(decideBudget(0n, 0n, 0n)).toMatchObject({ allowed: true, reason: DecisionReason.noLimit, remainingNanos: 0n });
    expect(decideBudget(0n, int64Max, int64Max)).toMatchObject({ allowed: true, reason: DecisionReason.noLimit });
  });

  it("allows an estimate that fits in what remains", () => {
    expect(decideBudget(100n, 40n, 60n)).toEqual({ allowed: true, reason: DecisionReason.withinBudget, limitNanos: 100n, spentNanos: 40n, remainingNanos: 60n });
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
