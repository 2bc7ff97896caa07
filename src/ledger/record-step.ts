// One record applied to a project's running totals, as one pure step: whether
// it fits in int64, the totals right after it (lifetime, and the day and month
// it falls in, an ended period starting afresh with its alert state), and the
// thresholds it crossed, each once. The PostgreSQL store runs it for every
// record of a batch in order, from the totals read under the project's lock,
// so each ledger row carries its own totals after it while the project's rows
// are written once with the batch's sums
// (docs/decisions/0012-postgresql-set-based-batches.md). SQLite runs the same
// increment as one guarded statement per record, then advanceAlerts.
import { advanceAlerts, type AlertState } from "./alerts.ts";
import { periodEnded } from "./budget-state.ts";
import type { PeriodKeys } from "./periods.ts";
import { overflowOf } from "./refusals.ts";
import type { CostEntry, ThresholdCrossing } from "./types.ts";

/** One window as stored on the totals row: its sums and its alert state. */
export interface RunningWindow {
  /** "" for lifetime; the day or month key otherwise. */
  period: string;
  costNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
  alertedBps: bigint;
  alertedLimitNanos: bigint;
}

export interface RunningTotals {
  lifetime: RunningWindow;
  day: RunningWindow;
  month: RunningWindow;
}

/** What alerts are measured against: the budget's limits (0 = not set) and thresholds. */
export interface AlertLimits {
  limitNanos: bigint;
  dailyLimitNanos: bigint;
  monthlyLimitNanos: bigint;
  thresholdsBps: readonly number[];
}

export type RecordStep = { ok: false; overflowing: string } | { ok: true; next: RunningTotals; crossings: ThresholdCrossing[] };

export const emptyWindow = (period: string): RunningWindow => ({
  period,
  costNanos: 0n,
  inputTokens: 0n,
  outputTokens: 0n,
  recordCount: 0n,
  alertedBps: 0n,
  alertedLimitNanos: 0n,
});

function add(window: RunningWindow, entry: CostEntry, key: string): RunningWindow {
  const base = periodEnded(window.period, key) ? emptyWindow(key) : window;
  return {
    ...base,
    costNanos: base.costNanos + entry.costNanos,
    inputTokens: base.inputTokens + entry.inputTokens,
    outputTokens: base.outputTokens + entry.outputTokens,
    recordCount: base.recordCount + 1n,
  };
}

const alertOf = (window: RunningWindow, limitNanos: bigint): AlertState => ({
  period: window.period,
  limitNanos,
  spentNanos: window.costNanos,
  alertedBps: window.alertedBps,
  alertedLimitNanos: window.alertedLimitNanos,
});

/** `entry` on top of `totals` at `keys` (the project's current day and month);
 * `limits` null when the project has no budget (no alerts). Refused: nothing
 * changes, and the next record is decided as if this one had not been sent. */
export function stepRecord(
  totals: RunningTotals,
  entry: CostEntry,
  keys: PeriodKeys,
  limits: AlertLimits | null,
  nowMs: number,
): RecordStep {
  const overflowing = overflowOf(entry, {
    totalCostNanos: totals.lifetime.costNanos,
    inputTokens: totals.lifetime.inputTokens,
    outputTokens: totals.lifetime.outputTokens,
    recordCount: totals.lifetime.recordCount,
  });
  if (overflowing !== null) return { ok: false, overflowing };
  const next: RunningTotals = {
    lifetime: add(totals.lifetime, entry, ""),
    day: add(totals.day, entry, keys.day),
    month: add(totals.month, entry, keys.month),
  };
  if (limits === null) return { ok: true, next, crossings: [] };
  const advance = advanceAlerts(
    entry.projectId,
    entry.requestId,
    limits.thresholdsBps,
    {
      lifetime: alertOf(next.lifetime, limits.limitNanos),
      day: alertOf(next.day, limits.dailyLimitNanos),
      month: alertOf(next.month, limits.monthlyLimitNanos),
    },
    nowMs,
  );
  if (advance.next !== null) {
    const { lifetime, day, month } = advance.next;
    next.lifetime = { ...next.lifetime, alertedBps: lifetime.alertedBps, alertedLimitNanos: lifetime.alertedLimitNanos };
    next.day = { ...next.day, alertedBps: day.alertedBps, alertedLimitNanos: day.alertedLimitNanos };
    next.month = { ...next.month, alertedBps: month.alertedBps, alertedLimitNanos: month.alertedLimitNanos };
  }
  return { ok: true, next, crossings: advance.crossings };
}
