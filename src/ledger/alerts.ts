// Threshold alerts, as one pure step: given where each set limit's alert state
// stands and the spend right after a record, which thresholds that record
// crossed and the alert state to store. Both stores run it on the totals row
// they just incremented (the row is theirs until commit), so each threshold is
// reported exactly once (docs/decisions/0004-holds-and-windows.md).
import { crossedBps, highestReachedBps } from "./budget.ts";
import { Window, type ThresholdCrossing } from "./types.ts";

/** One window's limit, spend after the record, and stored alert state. */
export interface AlertState {
  /** "" for lifetime; the day or month key of the totals row otherwise. */
  period: string;
  /** 0 = not set (no alerts). */
  limitNanos: bigint;
  spentNanos: bigint;
  /** The highest threshold already reported, measured against alertedLimitNanos. */
  alertedBps: bigint;
  alertedLimitNanos: bigint;
}

export type WindowAlerts = Record<Window, AlertState>;

export interface AlertAdvance {
  /** In window order (lifetime, day, month), ascending thresholds within one. */
  crossings: ThresholdCrossing[];
  /** The alert state to store, or null when nothing was crossed (no write). */
  next: WindowAlerts | null;
}

const windowOrder = [Window.lifetime, Window.day, Window.month] as const;

export function advanceAlerts(
  projectId: string,
  requestId: string,
  thresholdsBps: readonly number[],
  alerts: WindowAlerts,
  nowMs: number,
): AlertAdvance {
  const next: WindowAlerts = { lifetime: { ...alerts.lifetime }, day: { ...alerts.day }, month: { ...alerts.month } };
  const crossings: ThresholdCrossing[] = [];
  let advanced = false;
  for (const window of windowOrder) {
    const alert = next[window];
    if (alert.limitNanos === 0n) continue;
    const reached = highestReachedBps(thresholdsBps, alert.limitNanos, alert.spentNanos);
    const crossed = crossedBps(thresholdsBps, Number(alert.alertedBps), alert.alertedLimitNanos, alert.limitNanos, reached);
    if (crossed.length === 0) continue;
    alert.alertedBps = BigInt(reached);
    alert.alertedLimitNanos = alert.limitNanos;
    advanced = true;
    for (const thresholdBps of crossed) {
      crossings.push({
        projectId,
        window,
        period: alert.period,
        thresholdBps,
        limitNanos: alert.limitNanos,
        spentNanos: alert.spentNanos,
        requestId,
        atMs: nowMs,
      });
    }
  }
  return { crossings, next: advanced ? next : null };
}
