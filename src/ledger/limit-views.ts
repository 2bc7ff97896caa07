// Where a project stands against each of its set limits, for the views that
// show it without deciding anything: ListProjects (every set window, the
// deciding one first), the thresholds its spend has reached, and the warnings
// SetProjectBudget gives when a limit is set at or below what is already spent.
import { decideLimits, highestReachedBps, limitInputsOf, type LimitInput, type WindowedDecision } from "./budget.ts";
import type { ProjectEntry } from "./projects.ts";
import { Window, type BudgetState } from "./types.ts";

/** Where one limit's spend stands relative to the alert thresholds. */
export interface ThresholdReached {
  window: Window;
  period: string;
  thresholdBps: number;
  limitNanos: bigint;
  spentNanos: bigint;
}

/** A set limit that is already used up in its current window. */
export interface LimitWarning {
  window: Window;
  period: string;
  limitNanos: bigint;
  spentNanos: bigint;
}

/** A listed project with its limits as CheckBudget with an estimate of 0 would
 * see them, and the thresholds its spend has reached. */
export interface ProjectLimitsView {
  windowed: WindowedDecision;
  thresholdsReached: ThresholdReached[];
}

/** The highest threshold reached per set limit (none listed below the first). */
export function thresholdsReached(inputs: readonly LimitInput[], alertThresholdsBps: readonly number[]): ThresholdReached[] {
  const reached: ThresholdReached[] = [];
  for (const input of inputs) {
    const bps = highestReachedBps(alertThresholdsBps, input.limitNanos, input.spentNanos);
    if (bps > 0)
      reached.push({
        window: input.window,
        period: input.period,
        thresholdBps: bps,
        limitNanos: input.limitNanos,
        spentNanos: input.spentNanos,
      });
  }
  return reached;
}

/** Every set limit of a listed project, the deciding one first (as decided_by
 * picks it), then by least remaining (ties: lifetime, month, day). `state`
 * carries the current day and month, needed only when a calendar limit is set;
 * without it only the lifetime limit is known. */
export function projectLimitsView(entry: ProjectEntry, state: BudgetState | null): ProjectLimitsView {
  const inputs: LimitInput[] =
    state === null
      ? [{ window: Window.lifetime, period: "", limitNanos: entry.budget.limitNanos, spentNanos: entry.totals.totalCostNanos }]
      : limitInputsOf(state);
  const reservedNanos = state === null ? entry.reservedNanos : state.reservedNanos;
  const windowed = decideLimits(inputs, reservedNanos, 0n);
  const rank: Record<Window, number> = { lifetime: 0, month: 1, day: 2 };
  const limits = [...windowed.limits].sort((a, b) => {
    if (a.window === windowed.decidedBy) return -1;
    if (b.window === windowed.decidedBy) return 1;
    return a.remainingNanos < b.remainingNanos ? -1 : a.remainingNanos > b.remainingNanos ? 1 : rank[a.window] - rank[b.window];
  });
  return { windowed: { ...windowed, limits }, thresholdsReached: thresholdsReached(inputs, entry.budget.alertThresholdsBps) };
}

/** True when the project has a daily or monthly limit (its listing needs the
 * current day's and month's spend). */
export function hasCalendarLimit(entry: ProjectEntry): boolean {
  return entry.budget.dailyLimitNanos > 0n || entry.budget.monthlyLimitNanos > 0n;
}

/** The set limits that are already used up: spend in the window >= limit, so
 * every CheckBudget is refused until the window starts over. */
export function limitWarnings(state: BudgetState): LimitWarning[] {
  return limitInputsOf(state)
    .filter((input) => input.limitNanos > 0n && input.spentNanos >= input.limitNanos)
    .map(({ window, period, limitNanos, spentNanos }) => ({ window, period, limitNanos, spentNanos }));
}
