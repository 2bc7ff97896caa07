// The budget decision, as a pure function: the rule every agent relies on.
//
// No limit (absent or 0) -> allowed, enforcement disabled. Otherwise
// remaining = limit - spent; allowed only if remaining > 0 and the estimate fits
// in remaining. Spent exactly equal to the limit is exhausted.

export const DecisionReason = {
  noLimit: "no_limit",
  withinBudget: "within_budget",
  exceedsRemaining: "exceeds_remaining",
  exhausted: "exhausted",
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

export function decideBudget(limitNanos: bigint, spentNanos: bigint, estimatedCostNanos: bigint): BudgetDecision {
  if (limitNanos < 0n || spentNanos < 0n || estimatedCostNanos < 0n) {
    // Validation guarantees this; a negative here means a bug upstream.
    throw new Error(`decideBudget: negative input (limit ${limitNanos}, spent ${spentNanos}, estimate ${estimatedCostNanos})`);
  }
  if (limitNanos === 0n) {
    return { allowed: true, reason: DecisionReason.noLimit, limitNanos, spentNanos, remainingNanos: 0n };
  }
  // Both operands are within [0, int64Max], so the difference stays within int64.
  const remainingNanos = limitNanos - spentNanos;
  if (remainingNanos <= 0n) {
    return { allowed: false, reason: DecisionReason.exhausted, limitNanos, spentNanos, remainingNanos };
  }
  if (estimatedCostNanos > remainingNanos) {
    return { allowed: false, reason: DecisionReason.exceedsRemaining, limitNanos, spentNanos, remainingNanos };
  }
  return { allowed: true, reason: DecisionReason.withinBudget, limitNanos, spentNanos, remainingNanos };
}
