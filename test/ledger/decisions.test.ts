// The decisions both stores share, as pure functions (src/ledger/alerts.ts,
// budget-state.ts, reserve-plan.ts, refusals.ts): fast-check properties
// against independent oracles, no database.
import { noCaps } from "../../src/store/cap-rows.ts";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { advanceAlerts, type AlertState, type WindowAlerts } from "../../src/ledger/alerts.ts";
import { decideLimits, limitInputsOf, withExhaustion } from "../../src/ledger/budget.ts";
import { activeHolds, buildBudgetState, periodTotals, type StoredPeriodTotals, type StoredTotals } from "../../src/ledger/budget-state.ts";
import { HoldLimitError } from "../../src/ledger/errors.ts";
import { int64Max } from "../../src/ledger/money.ts";
import { periodKeys } from "../../src/ledger/periods.ts";
import { isHoldActive, overflowingQuantity, whyInactive } from "../../src/ledger/refusals.ts";
import { planReserve } from "../../src/ledger/reserve-plan.ts";
import { Window, type Budget, type BudgetState } from "../../src/ledger/types.ts";
import { activeHoldsPerProjectMax } from "../../src/limits.ts";

const windows = [Window.lifetime, Window.day, Window.month] as const;
const thresholdsArb = fc.uniqueArray(fc.integer({ min: 1, max: 10_000 }), { maxLength: 5 }).map((a) => a.sort((x, y) => x - y));
const limitArb = fc.bigInt({ min: 0n, max: 1_000_000n });
const idle = (limitNanos: bigint, period = ""): AlertState => ({
  period,
  limitNanos,
  spentNanos: 0n,
  alertedBps: 0n,
  alertedLimitNanos: 0n,
});

/** Oracle: the thresholds (with exhaustion) that `spent` has reached against `limit`. */
const reachedSet = (thresholds: number[], limit: bigint, spent: bigint) =>
  limit === 0n ? [] : withExhaustion(thresholds).filter((bps) => spent * 10_000n >= BigInt(bps) * limit);

describe("advanceAlerts", () => {
  it("reports every threshold reached exactly once over any rising spend, per window", () => {
    fc.assert(
      fc.property(
        thresholdsArb,
        fc.tuple(limitArb, limitArb, limitArb),
        fc.array(fc.bigInt({ min: 0n, max: 400_000n }), { maxLength: 12 }),
        (thresholds, limits, steps) => {
          let alerts: WindowAlerts = { lifetime: idle(limits[0]), day: idle(limits[1], "2026-12-05"), month: idle(limits[2], "2026-12") };
          const reported: Record<string, number[]> = { lifetime: [], day: [], month: [] };
          let spent = 0n;
          for (const [i, step] of steps.entries()) {
            spent += step;
            for (const w of windows) alerts[w].spentNanos = spent;
            const { crossings, next } = advanceAlerts("p", `r${i}`, thresholds, alerts, 1_000 + i);
            expect(next === null).toBe(crossings.length === 0);
            for (const c of crossings) {
              expect(c).toMatchObject({
                projectId: "p",
                requestId: `r${i}`,
                atMs: 1_000 + i,
                spentNanos: spent,
                limitNanos: alerts[c.window].limitNanos,
                period: alerts[c.window].period,
              });
              reported[c.window]!.push(c.thresholdBps);
            }
            // Window order, ascending thresholds within a window.
            const order = crossings.map((c) => windows.indexOf(c.window) * 100_000 + c.thresholdBps);
            expect(order).toEqual([...order].sort((a, b) => a - b));
            if (next !== null) alerts = next;
          }
          limits.forEach((limit, k) => {
            expect(reported[windows[k]!]).toEqual(reachedSet(thresholds, limit, spent));
          });
        },
      ),
    );
  });

  it("re-arms every threshold when the limit changes, and never touches an unset window", () => {
    fc.assert(
      fc.property(
        thresholdsArb,
        fc.bigInt({ min: 1n, max: 1_000_000n }),
        fc.bigInt({ min: 1n, max: 1_000_000n }),
        fc.bigInt({ min: 0n, max: 3_000_000n }),
        (thresholds, first, second, spent) => {
          const before: WindowAlerts = {
            lifetime: { ...idle(first), spentNanos: spent },
            day: { ...idle(0n), spentNanos: spent },
            month: idle(0n, "2026-12"),
          };
          const once = advanceAlerts("p", "a", thresholds, before, 1);
          const stored = once.next ?? before;
          expect(stored.day).toEqual(before.day);
          expect(stored.month).toEqual(before.month);
          // The same limit again: nothing new. Another limit: everything reached again.
          expect(advanceAlerts("p", "b", thresholds, stored, 2).crossings).toEqual([]);
          const changed = advanceAlerts("p", "c", thresholds, { ...stored, lifetime: { ...stored.lifetime, limitNanos: second } }, 3);
          expect(changed.crossings.map((c) => c.thresholdBps)).toEqual(first === second ? [] : reachedSet(thresholds, second, spent));
        },
      ),
    );
  });

  it("does not change the state it was given", () => {
    const alerts: WindowAlerts = { lifetime: { ...idle(100n), spentNanos: 100n }, day: idle(0n), month: idle(0n) };
    const copy = structuredClone(alerts);
    const { next } = advanceAlerts("p", "r", [5_000], alerts, 1);
    expect(alerts).toEqual(copy);
    expect(next?.lifetime).toMatchObject({ alertedBps: 10_000n, alertedLimitNanos: 100n });
  });
});

const amountArb = fc.bigInt({ min: 0n, max: 1n << 40n });
const periodArb = fc.constantFrom("2026-11-30", "2026-12-04", "2026-12-05", "2026-12-06", "2026-11", "2026-12", "2027-01");
const storedPeriodArb = fc.record({
  period: periodArb,
  totalCostNanos: amountArb,
  inputTokens: amountArb,
  outputTokens: amountArb,
  recordCount: amountArb,
});
const budgetOf = (over: Partial<Budget> = {}): Budget => ({
  projectId: "p",
  limitNanos: 0n,
  currency: "USD",
  configured: true,
  updatedAtMs: 0,
  dailyLimitNanos: 0n,
  monthlyLimitNanos: 0n,
  timeZone: "UTC",
  alertThresholdsBps: [],
  parentId: "",
  ...noCaps,
  ...over,
});
// 2026-12-05T12:00:00Z: day key 2026-12-05, month key 2026-12 in UTC.
const noonMs = Date.UTC(2026, 11, 5, 12);

describe("budget state", () => {
  it("counts a stored day or month only while its period is the current one or later", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(Window.day, Window.month),
        fc.constantFrom("2026-12-05", "2026-12"),
        fc.option(storedPeriodArb, { nil: null }),
        (window, key, stored) => {
          const totals = periodTotals(window, key, "Europe/Paris", stored);
          const counts = stored !== null && stored.period >= key;
          expect(totals).toEqual({
            window,
            period: key,
            timeZone: "Europe/Paris",
            totalCostNanos: counts ? stored.totalCostNanos : 0n,
            inputTokens: counts ? stored.inputTokens : 0n,
            outputTokens: counts ? stored.outputTokens : 0n,
            recordCount: counts ? stored.recordCount : 0n,
          });
        },
      ),
    );
  });

  it("subtracts expired holds from the reservations, and reads them only when hold rows exist", () => {
    fc.assert(
      fc.property(
        fc.option(fc.record({ reservedNanos: amountArb, holdCount: fc.bigInt({ min: 0n, max: 100n }) }), { nil: null }),
        amountArb,
        fc.bigInt({ min: 0n, max: 100n }),
        (reservations, expiredNanos, expiredCount) => {
          let asked = 0;
          const state = buildBudgetState("p", noonMs, budgetOf(), null, reservations, () => {
            asked++;
            return { amountNanos: expiredNanos, holdCount: expiredCount };
          });
          const held = reservations !== null && reservations.holdCount > 0n;
          expect(asked).toBe(held ? 1 : 0);
          expect(state.reservedNanos).toBe(held ? reservations.reservedNanos - expiredNanos : 0n);
          expect(state.activeHoldCount).toBe(held ? reservations.holdCount - expiredCount : 0n);
          expect(activeHolds(reservations, { amountNanos: expiredNanos, holdCount: expiredCount })).toEqual({
            reservedNanos: state.reservedNanos,
            activeHoldCount: state.activeHoldCount,
          });
        },
      ),
    );
  });

  it("builds day and month at now's keys in the budget's time zone, zeros without a totals row", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("UTC", "Pacific/Kiritimati", "America/Los_Angeles"),
        fc.option(fc.tuple(amountArb, storedPeriodArb, storedPeriodArb), { nil: null }),
        (timeZone, stored) => {
          const keys = periodKeys(noonMs, timeZone);
          const totals: StoredTotals | null =
            stored === null
              ? null
              : {
                  lifetime: {
                    projectId: "p",
                    totalCostNanos: stored[0],
                    inputTokens: 1n,
                    outputTokens: 2n,
                    recordCount: 3n,
                    updatedAtMs: 5,
                  },
                  day: stored[1],
                  month: stored[2],
                };
          const state = buildBudgetState("p", noonMs, budgetOf({ timeZone }), totals, null, () => ({ amountNanos: 0n, holdCount: 0n }));
          expect(state.totals).toEqual(
            totals?.lifetime ?? {
              projectId: "p",
              totalCostNanos: 0n,
              inputTokens: 0n,
              outputTokens: 0n,
              recordCount: 0n,
              updatedAtMs: null,
            },
          );
          expect(state.day).toEqual(periodTotals(Window.day, keys.day, timeZone, (totals?.day ?? null) as StoredPeriodTotals | null));
          expect(state.month).toEqual(periodTotals(Window.month, keys.month, timeZone, totals?.month ?? null));
        },
      ),
    );
  });
});

// Limits often unset and spends near them, so every outcome is common.
const setOrNot = fc.oneof(fc.constant(0n), limitArb);
const spendArb = fc.bigInt({ min: 0n, max: 1_200_000n });
const stateArb = fc
  .record({
    limit: setOrNot,
    daily: setOrNot,
    monthly: setOrNot,
    spent: spendArb,
    day: spendArb,
    month: spendArb,
    reserved: fc.bigInt({ min: 0n, max: 1_000_000n }),
    holds: fc.oneof(
      fc.bigInt({ min: 0n, max: 100n }),
      fc.constantFrom(BigInt(activeHoldsPerProjectMax) - 1n, BigInt(activeHoldsPerProjectMax), BigInt(activeHoldsPerProjectMax) + 1n),
    ),
  })
  .map(
    (s): BudgetState => ({
      budget: budgetOf({ limitNanos: s.limit, dailyLimitNanos: s.daily, monthlyLimitNanos: s.monthly }),
      totals: { projectId: "p", totalCostNanos: s.spent, inputTokens: 0n, outputTokens: 0n, recordCount: 1n, updatedAtMs: 1 },
      day: {
        window: "day",
        period: "2026-12-05",
        timeZone: "UTC",
        totalCostNanos: s.day,
        inputTokens: 0n,
        outputTokens: 0n,
        recordCount: 1n,
      },
      month: {
        window: "month",
        period: "2026-12",
        timeZone: "UTC",
        totalCostNanos: s.month,
        inputTokens: 0n,
        outputTokens: 0n,
        recordCount: 1n,
      },
      reservedNanos: s.reserved,
      activeHoldCount: s.holds,
    }),
  );

describe("planReserve", () => {
  it("places a hold exactly when every set limit allows the estimate and the project has room for another hold", () => {
    fc.assert(
      fc.property(stateArb, fc.bigInt({ min: 0n, max: 2_000_000n }), fc.integer({ min: 1, max: 86_400_000 }), (state, estimate, ttlMs) => {
        const request = { projectId: "p", estimatedCostNanos: estimate, holdId: "h1", ttlMs, requestId: "" };
        const plan = planReserve(request, state, noonMs);
        const decision = decideLimits(limitInputsOf(state), state.reservedNanos, estimate);
        if (!decision.allowed) {
          expect(plan).toEqual({ kind: "refused", outcome: { decision, state, hold: null } });
        } else if (state.activeHoldCount >= BigInt(activeHoldsPerProjectMax)) {
          expect(plan.kind).toBe("tooManyHolds");
          expect(plan.kind === "tooManyHolds" && plan.error).toBeInstanceOf(HoldLimitError);
        } else {
          expect(plan).toEqual({
            kind: "place",
            decision,
            state,
            hold: { holdId: "h1", projectId: "p", amountNanos: estimate, createdAtMs: noonMs, expiresAtMs: noonMs + ttlMs },
          });
        }
      }),
    );
  });
});

describe("refusal reasons", () => {
  it("names the first quantity, in the guard's order, that the record would push past int64", () => {
    const near = fc.oneof(fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: int64Max - 1000n, max: int64Max }));
    fc.assert(
      fc.property(
        near,
        near,
        near,
        fc.bigInt({ min: 0n, max: 2000n }),
        fc.bigInt({ min: 0n, max: 2000n }),
        fc.bigInt({ min: 0n, max: 2000n }),
        (cost, input, output, dc, di, dout) => {
          const totals = { totalCostNanos: cost, inputTokens: input, outputTokens: output };
          const expected =
            cost + dc > int64Max
              ? "total_cost_nanos"
              : input + di > int64Max
                ? "input_tokens"
                : output + dout > int64Max
                  ? "output_tokens"
                  : "record_count";
          expect(overflowingQuantity({ costNanos: dc, inputTokens: di, outputTokens: dout }, totals)).toBe(expected);
        },
      ),
    );
  });

  it("calls a hold active only for its own project before it expires, and never tells another project it exists", () => {
    fc.assert(
      fc.property(
        fc.option(fc.record({ projectId: fc.constantFrom("p", "q"), expiresAtMs: fc.integer({ min: 0, max: 2_000 }) }), { nil: null }),
        fc.integer({ min: 0, max: 2_000 }),
        (hold, nowMs) => {
          const active = isHoldActive(hold, "p", nowMs);
          expect(active).toBe(hold !== null && hold.projectId === "p" && hold.expiresAtMs > nowMs);
          const why = whyInactive(hold, "p", nowMs);
          if (hold === null || hold.projectId !== "p") expect(why).toBe(whyInactive(null, "p", nowMs));
          else if (!active) expect(why).toBe(`it expired at ${new Date(hold.expiresAtMs).toISOString()}`);
        },
      ),
    );
  });
});
