// The budget decision, as pure functions: the rule every agent relies on.
//
// Per limit that is set (lifetime, day, month; 0 = not set):
//   remaining = limit - spent(window) - reserved(active holds)
//   spent >= limit            -> refused, exhausted
//   remaining <= 0            -> refused, fully reserved (holds take what is left)
//   estimate > remaining      -> refused, exceeds remaining
//   otherwise                 -> allowed
// The call is allowed only if every set limit allows it; no limit set at all
// means enforcement is disabled. The limit that decided is the refusing one
// with the least remaining, or, when allowed, the one with the least remaining
// (it binds next). Ties go to the longer window (lifetime, month, day).
import { int64Max, int64Min } from "./money.ts";
import { Window, type BudgetState } from "./types.ts";

export const DecisionReason = {
  noLimit: "no_limit",
  withinBudget: "within_budget",
  exceedsRemaining: "exceeds_remaining",
  exhausted: "exhausted",
  fullyReserved: "fully_reserved",
} as const;
export type DecisionReason = (typeof DecisionReason)[keyof typeof DecisionReason];

export interface BudgetDecision {
  allowed: boolean;
  reason: DecisionReason;
  limitNanos: bigint;
  spentNanos: bigint;
  /** limit - spent when a limit is set (negative once actual spend passed it); 0 without a limit. */
  remainingNanos: bigint;
}

/** One window's limit and spend, as read for a decision. */
export interface LimitInput {
  window: Window;
  /** "" for lifetime; "2026-11-27" / "2026-11" for day / month. */
  period: string;
  /** 0 = not set (skipped). */
  limitNanos: bigint;
  spentNanos: bigint;
}

export interface LimitDecision {
  window: Window;
  period: string;
  limitNanos: bigint;
  spentNanos: bigint;
  reservedNanos: bigint;
  /** limit - spent - reserved, clamped to int64. */
  remainingNanos: bigint;
  allowed: boolean;
  reason: DecisionReason;
}

export interface WindowedDecision {
  allowed: boolean;
  reason: DecisionReason;
  /** null when no limit is set. */
  decidedBy: Window | null;
  /** Every set limit, in the order lifetime, day, month. */
  limits: LimitDecision[];
  reservedNanos: bigint;
}

/** The v1 rule for one lifetime limit and no holds (kept for its callers). */
export function decideBudget(limitNanos: bigint, spentNanos: bigint, estimatedCostNanos: bigint): BudgetDecision {
  const decision = decideLimits([{ window: Window.lifetime, period: "", limitNanos, spentNanos }], 0n, estimatedCostNanos);
  const lifetime = decision.limits[0];
  return {
    allowed: decision.allowed,
    reason: decision.reason,
    limitNanos,
    spentNanos,
    remainingNanos: lifetime === undefined ? 0n : lifetime.remainingNanos,
  };
}

const windowRank: Record<Window, number> = { lifetime: 0, month: 1, day: 2 };

export function decideLimits(inputs: readonly LimitInput[], reservedNanos: bigint, estimatedCostNanos: bigint): WindowedDecision {
  if (reservedNanos < 0n || estimatedCostNanos < 0n) {
    throw new Error(`decideLimits: negative input (reserved ${reservedNanos}, estimate ${estimatedCostNanos})`);
  }
  const limits: LimitDecision[] = [];
  for (const input of inputs) {
    if (input.limitNanos < 0n || input.spentNanos < 0n) {
      // Validation guarantees this; a negative here means a bug upstream.
      throw new Error(`decideLimits: negative input (${input.window} limit ${input.limitNanos}, spent ${input.spentNanos})`);
    }
    if (input.limitNanos === 0n) continue;
    limits.push(decideOne(input, reservedNanos, estimatedCostNanos));
  }
  if (limits.length === 0) return { allowed: true, reason: DecisionReason.noLimit, decidedBy: null, limits, reservedNanos };
  const refusing = limits.filter((limit) => !limit.allowed);
  const candidates = refusing.length > 0 ? refusing : limits;
  let decider = candidates[0] as LimitDecision;
  for (const limit of candidates) {
    if (
      limit.remainingNanos < decider.remainingNanos ||
      (limit.remainingNanos === decider.remainingNanos && windowRank[limit.window] < windowRank[decider.window])
    ) {
      decider = limit;
    }
  }
  return { allowed: refusing.length === 0, reason: decider.reason, decidedBy: decider.window, limits, reservedNanos };
}

function decideOne(input: LimitInput, reservedNanos: bigint, estimatedCostNanos: bigint): LimitDecision {
  // bigint is exact; the clamp only keeps the reported value inside int64 when
  // holds placed before a limit was lowered push it below int64Min.
  const raw = input.limitNanos - input.spentNanos - reservedNanos;
  const remainingNanos = raw < int64Min ? int64Min : raw > int64Max ? int64Max : raw;
  const base = { ...input, reservedNanos, remainingNanos };
  if (input.spentNanos >= input.limitNanos) return { ...base, allowed: false, reason: DecisionReason.exhausted };
  if (raw <= 0n) return { ...base, allowed: false, reason: DecisionReason.fullyReserved };
  if (estimatedCostNanos > raw) return { ...base, allowed: false, reason: DecisionReason.exceedsRemaining };
  return { ...base, allowed: true, reason: DecisionReason.withinBudget };
}

/** The highest threshold (basis points; 10000 = the limit) that `spentNanos`
 * has reached, 0 when none: spent * 10000 >= bps * limit, in exact integers. */
export function highestReachedBps(thresholdsBps: readonly number[], limitNanos: bigint, spentNanos: bigint): number {
  if (limitNanos <= 0n) return 0;
  let reached = 0;
  for (const bps of withExhaustion(thresholdsBps)) {
    if (spentNanos * 10_000n >= BigInt(bps) * limitNanos) reached = bps;
  }
  return reached;
}

/** The thresholds crossed when the reported state moves from `alertedBps`
 * (measured against `alertedLimitNanos`) to `reachedBps` against `limitNanos`.
 * A different limit re-arms every threshold. */
export function crossedBps(
  thresholdsBps: readonly number[],
  alertedBps: number,
  alertedLimitNanos: bigint,
  limitNanos: bigint,
  reachedBps: number,
): number[] {
  const floor = alertedLimitNanos === limitNanos ? alertedBps : 0;
  return withExhaustion(thresholdsBps).filter((bps) => bps > floor && bps <= reachedBps);
}

/** The configured thresholds plus 10000 (exhaustion, always tracked), ascending. */
export function withExhaustion(thresholdsBps: readonly number[]): number[] {
  return [...new Set([...thresholdsBps, 10_000])].sort((a, b) => a - b);
}

/** The decision inputs of a state: lifetime, day and month, in that order. */
export function limitInputsOf(state: BudgetState): LimitInput[] {
  return [
    { window: Window.lifetime, period: "", limitNanos: state.budget.limitNanos, spentNanos: state.totals.totalCostNanos },
    { window: Window.day, period: state.day.period, limitNanos: state.budget.dailyLimitNanos, spentNanos: state.day.totalCostNanos },
    {
      window: Window.month,
      period: state.month.period,
      limitNanos: state.budget.monthlyLimitNanos,
      spentNanos: state.month.totalCostNanos,
    },
  ];
}
