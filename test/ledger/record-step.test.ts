// One record on a project's running totals (src/ledger/record-step.ts), the
// step the PostgreSQL store's batch planner runs per record: fast-check
// properties against independent oracles (sums, the period rule, thresholds
// reached), no database.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { withExhaustion } from "../../src/ledger/budget.ts";
import { int64Max } from "../../src/ledger/money.ts";
import { emptyWindow, stepRecord, type RunningTotals, type RunningWindow } from "../../src/ledger/record-step.ts";
import { overflowOf } from "../../src/ledger/refusals.ts";
import type { CostEntry } from "../../src/ledger/types.ts";

const keys = { day: "2026-12-05", month: "2026-12" };
const entryOf = (i: number, costNanos: bigint, inputTokens = 0n, outputTokens = 0n): CostEntry => ({
  projectId: "p",
  requestId: `r${i}`,
  costNanos,
  inputTokens,
  outputTokens,
  agentId: "",
  model: "",
});
const windowArb = (periods: string[]) =>
  fc.record({
    period: fc.constantFrom(...periods),
    costNanos: fc.bigInt({ min: 0n, max: 1_000_000n }),
    inputTokens: fc.bigInt({ min: 0n, max: 1_000n }),
    outputTokens: fc.bigInt({ min: 0n, max: 1_000n }),
    recordCount: fc.bigInt({ min: 0n, max: 100n }),
    alertedBps: fc.constantFrom(0n, 5_000n),
    alertedLimitNanos: fc.constantFrom(0n, 1_000n),
  });
const totalsArb = fc.record({
  lifetime: windowArb([""]),
  day: windowArb(["", "2026-12-04", "2026-12-05", "2026-12-06"]),
  month: windowArb(["", "2026-11", "2026-12", "2027-01"]),
});
/** Oracle of the period rule: the stored window while its period is the key's or later. */
const windowAfter = (stored: RunningWindow, key: string, costs: bigint[]) => {
  const counts = stored.period >= key;
  return {
    period: counts ? stored.period : key,
    costNanos: (counts ? stored.costNanos : 0n) + costs.reduce((a, b) => a + b, 0n),
    recordCount: (counts ? stored.recordCount : 0n) + BigInt(costs.length),
    alertedBps: counts ? stored.alertedBps : 0n,
  };
};

describe("stepRecord", () => {
  it("adds each record to lifetime and to the current day and month, an ended period starting afresh", () => {
    fc.assert(
      fc.property(totalsArb, fc.array(fc.bigInt({ min: 0n, max: 1_000n }), { maxLength: 10 }), (start, costs) => {
        let totals: RunningTotals = start;
        for (const [i, cost] of costs.entries()) {
          const step = stepRecord(totals, entryOf(i, cost, 2n, 3n), keys, null, 1_000);
          if (!step.ok) throw new Error(`refused: ${step.overflowing}`);
          expect(step.crossings).toEqual([]);
          totals = step.next;
        }
        expect(totals.lifetime).toMatchObject(windowAfter(start.lifetime, "", costs));
        expect(totals.lifetime.inputTokens).toBe(start.lifetime.inputTokens + 2n * BigInt(costs.length));
        expect(totals.lifetime.outputTokens).toBe(start.lifetime.outputTokens + 3n * BigInt(costs.length));
        if (costs.length > 0) {
          expect(totals.day).toMatchObject(windowAfter(start.day, keys.day, costs));
          expect(totals.month).toMatchObject(windowAfter(start.month, keys.month, costs));
        } else expect(totals).toEqual(start);
      }),
    );
  });

  it("refuses a record that would push a lifetime sum or the count past int64 and changes nothing", () => {
    const near = fc.oneof(fc.bigInt({ min: 0n, max: 1_000n }), fc.bigInt({ min: int64Max - 1_000n, max: int64Max }));
    fc.assert(
      fc.property(
        near,
        near,
        near,
        near,
        fc.bigInt({ min: 0n, max: 2_000n }),
        fc.bigInt({ min: 0n, max: 2_000n }),
        fc.bigInt({ min: 0n, max: 2_000n }),
        (cost, input, output, count, dc, di, dout) => {
          const lifetime = { ...emptyWindow(""), costNanos: cost, inputTokens: input, outputTokens: output, recordCount: count };
          const totals = { lifetime, day: emptyWindow(keys.day), month: emptyWindow(keys.month) };
          const step = stepRecord(totals, entryOf(0, dc, di, dout), keys, null, 1_000);
          const expected =
            cost + dc > int64Max
              ? "total_cost_nanos"
              : input + di > int64Max
                ? "input_tokens"
                : output + dout > int64Max
                  ? "output_tokens"
                  : count + 1n > int64Max
                    ? "record_count"
                    : null;
          expect(
            overflowOf(
              { costNanos: dc, inputTokens: di, outputTokens: dout },
              { totalCostNanos: cost, inputTokens: input, outputTokens: output, recordCount: count },
            ),
          ).toBe(expected);
          if (expected === null) expect(step.ok).toBe(true);
          else expect(step).toEqual({ ok: false, overflowing: expected });
        },
      ),
    );
  });

  it("reports every threshold each window's spend reached exactly once over a run of records, and stores the alert state", () => {
    const thresholdsArb = fc.uniqueArray(fc.integer({ min: 1, max: 10_000 }), { maxLength: 4 }).map((a) => a.sort((x, y) => x - y));
    fc.assert(
      fc.property(
        thresholdsArb,
        fc.tuple(fc.bigInt({ min: 0n, max: 5_000n }), fc.bigInt({ min: 0n, max: 5_000n }), fc.bigInt({ min: 0n, max: 5_000n })),
        fc.array(fc.bigInt({ min: 0n, max: 2_000n }), { maxLength: 10 }),
        (thresholds, [limit, daily, monthly], costs) => {
          let totals: RunningTotals = { lifetime: emptyWindow(""), day: emptyWindow(""), month: emptyWindow("") };
          const reported: Record<string, number[]> = { lifetime: [], day: [], month: [] };
          for (const [i, cost] of costs.entries()) {
            const step = stepRecord(
              totals,
              entryOf(i, cost),
              keys,
              { limitNanos: limit, dailyLimitNanos: daily, monthlyLimitNanos: monthly, thresholdsBps: thresholds },
              1_000 + i,
            );
            if (!step.ok) throw new Error(`refused: ${step.overflowing}`);
            for (const c of step.crossings) {
              expect(c).toMatchObject({ projectId: "p", requestId: `r${i}`, atMs: 1_000 + i, spentNanos: step.next[c.window].costNanos });
              reported[c.window]!.push(c.thresholdBps);
            }
            totals = step.next;
          }
          const spent = costs.reduce((a, b) => a + b, 0n);
          const reached = (l: bigint) => (l === 0n ? [] : withExhaustion(thresholds).filter((bps) => spent * 10_000n >= BigInt(bps) * l));
          expect(reported).toEqual({ lifetime: reached(limit), day: reached(daily), month: reached(monthly) });
          const last = (l: bigint) => reached(l).at(-1);
          expect(totals.lifetime.alertedBps).toBe(BigInt(last(limit) ?? 0));
          expect(totals.day.alertedBps).toBe(BigInt(last(daily) ?? 0));
        },
      ),
    );
  });
});
