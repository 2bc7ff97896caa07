// BudgetState from what a store read: the budget, the stored totals (whose day
// and month are those of the last record), the reservation totals and the
// holds that expired but are not swept yet. The rules a decision relies on:
// - a stored day or month counts only while it is the current one (or later:
//   the clock stepped back); an earlier one has ended, so nothing is spent yet
//   in the current one;
// - expired holds stop counting the moment they expire, whether or not the
//   sweeper has deleted their rows: they are subtracted here.
import { periodKeys } from "./periods.ts";
import { Window, zeroTotals, type Budget, type BudgetState, type PeriodTotals, type ProjectTotals } from "./types.ts";

/** One calendar window's totals as stored with the period they belong to. */
export interface StoredPeriodTotals {
  /** "2026-11-27" / "2026-11": keys compare as text. */
  period: string;
  totalCostNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
}

/** A project's totals row: lifetime, and its day and month. */
export interface StoredTotals {
  lifetime: ProjectTotals;
  day: StoredPeriodTotals;
  month: StoredPeriodTotals;
}

/** project_reservations: every hold row counted in, expired ones included. */
export interface Reservations {
  reservedNanos: bigint;
  holdCount: bigint;
}

/** The sum and count of a project's holds with expires_at_ms <= now. */
export interface ExpiredHolds {
  amountNanos: bigint;
  holdCount: bigint;
}

export const noExpiredHolds: ExpiredHolds = { amountNanos: 0n, holdCount: 0n };

/** Whether a project's reservations may include active holds (then its
 * expired holds are worth reading). */
export function mayHoldActive(reservations: Reservations | null): reservations is Reservations {
  return reservations !== null && reservations.holdCount > 0n;
}

/** The active holds: the reservations minus the expired, unswept holds; 0 and 0
 * without reservations or hold rows. */
export function activeHolds(reservations: Reservations | null, expired: ExpiredHolds): { reservedNanos: bigint; activeHoldCount: bigint } {
  if (!mayHoldActive(reservations)) return { reservedNanos: 0n, activeHoldCount: 0n };
  return { reservedNanos: reservations.reservedNanos - expired.amountNanos, activeHoldCount: reservations.holdCount - expired.holdCount };
}

/** Whether a stored day or month (`storedPeriod`) has ended at the period
 * `key`: it is earlier. A later one (the clock stepped back) still counts, so
 * nothing recorded is ever dropped. Keys compare as text. */
export function periodEnded(storedPeriod: string, key: string): boolean {
  return storedPeriod < key;
}

/** The window's totals at the period `key`: the stored ones while their period
 * is current (or later), zeros once it has ended. */
export function periodTotals(
  window: typeof Window.day | typeof Window.month,
  key: string,
  timeZone: string,
  stored: StoredPeriodTotals | null,
): PeriodTotals {
  const current = stored !== null && !periodEnded(stored.period, key) ? stored : null;
  return {
    window,
    period: key,
    timeZone,
    totalCostNanos: current?.totalCostNanos ?? 0n,
    inputTokens: current?.inputTokens ?? 0n,
    outputTokens: current?.outputTokens ?? 0n,
    recordCount: current?.recordCount ?? 0n,
  };
}

/** Everything a decision needs at `nowMs`. `expired` is asked for only when
 * the reservations may hold active holds (SQLite reads it lazily). */
export function buildBudgetState(
  projectId: string,
  nowMs: number,
  budget: Budget,
  totals: StoredTotals | null,
  reservations: Reservations | null,
  expired: () => ExpiredHolds,
): BudgetState {
  const keys = periodKeys(nowMs, budget.timeZone);
  return {
    budget,
    totals: totals === null ? zeroTotals(projectId) : totals.lifetime,
    day: periodTotals(Window.day, keys.day, budget.timeZone, totals?.day ?? null),
    month: periodTotals(Window.month, keys.month, budget.timeZone, totals?.month ?? null),
    ...activeHolds(reservations, mayHoldActive(reservations) ? expired() : noExpiredHolds),
  };
}
