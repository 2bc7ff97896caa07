// The runaway guard: a spend rate limit of "at most N nanos per rolling 60 s",
// counting what was recorded plus what active holds reserve. A looping agent
// that reserves before each call is stopped within a minute, long before a
// daily or lifetime limit is gone. Only reservations are refused for rate;
// RecordCost records reality whatever the rate.
//
// Rule, for a limit L > 0 at instant now:
//   used      = recorded + reserved of the entries still in the window
//   remaining = L - used
//   remaining <= 0 or estimate > remaining -> refused (RATE_LIMITED)
//   otherwise                              -> allowed
// and a refusal says when the estimate fits: the earliest instant at which
// enough entries have left the window, if nothing is added meanwhile.
import { rateWindowMs } from "../limits.ts";
import { DecisionReason } from "./budget.ts";
import { int64Max, int64Min } from "./money.ts";

export const RateReason = { withinBudget: DecisionReason.withinBudget, rateLimited: "rate_limited" } as const;
export type RateReason = (typeof RateReason)[keyof typeof RateReason];

/** The window of a rate limit, beside lifetime, day and month. */
export const rollingMinute = "rolling_minute" as const;

/** One amount counted by a rate limit. */
export interface RateEntry {
  /** When it was recorded, or when the hold was placed. */
  atMs: number;
  amountNanos: bigint;
  /** An active hold (reserved) rather than a recorded cost. */
  reserved: boolean;
  /** A hold stops counting when it expires, if that comes before it leaves
   * the window (absent for records). A settled or released hold is no entry
   * at all: a settled one is its record's entry instead. */
  expiresAtMs?: number;
}

export interface RateDecision {
  window: typeof rollingMinute;
  period: "";
  limitNanos: bigint;
  /** Recorded within the window. */
  spentNanos: bigint;
  /** Reserved by active holds placed within the window. */
  reservedNanos: bigint;
  /** limit - spent - reserved, clamped to int64. */
  remainingNanos: bigint;
  allowed: boolean;
  reason: RateReason;
  /** When refused: the earliest instant the estimate fits; null when it
   * never does (estimate > limit) or when allowed. */
  retryAtMs: number | null;
}

/** The instant an entry stops counting: when it leaves the window, or when
 * its hold expires, whichever is first. It counts at t while t < this. */
export function leavesAtMs(entry: RateEntry, windowMs: number = rateWindowMs): number {
  const leaves = entry.atMs + windowMs;
  return entry.expiresAtMs !== undefined && entry.expiresAtMs < leaves ? entry.expiresAtMs : leaves;
}

/** Decides `estimate` against the rate limit `limitNanos` (> 0) at `nowMs`.
 * Entries that already stopped counting are ignored, so a store may pass any
 * superset of the window's entries. */
export function decideRate(
  limitNanos: bigint,
  entries: readonly RateEntry[],
  estimateNanos: bigint,
  nowMs: number,
  windowMs: number = rateWindowMs,
): RateDecision {
  if (limitNanos <= 0n || estimateNanos < 0n)
    throw new Error(`decideRate: limit must be > 0 and estimate >= 0 (limit ${limitNanos}, estimate ${estimateNanos})`);
  const live = entries.filter((entry) => {
    if (entry.amountNanos < 0n) throw new Error(`decideRate: negative entry ${entry.amountNanos}`);
    return leavesAtMs(entry, windowMs) > nowMs;
  });
  let spentNanos = 0n;
  let reservedNanos = 0n;
  for (const entry of live) {
    if (entry.reserved) reservedNanos += entry.amountNanos;
    else spentNanos += entry.amountNanos;
  }
  const raw = limitNanos - spentNanos - reservedNanos;
  const remainingNanos = raw < int64Min ? int64Min : raw > int64Max ? int64Max : raw;
  const base = { window: rollingMinute, period: "" as const, limitNanos, spentNanos, reservedNanos, remainingNanos };
  if (raw > 0n && estimateNanos <= raw) return { ...base, allowed: true, reason: RateReason.withinBudget, retryAtMs: null };
  return { ...base, allowed: false, reason: RateReason.rateLimited, retryAtMs: fitsAtMs(limitNanos, live, estimateNanos, windowMs) };
}

/** The earliest instant at which used <= limit - max(estimate, 1) (something
 * left, and the estimate fits), entries leaving in order; null when even an
 * empty window would not fit the estimate. */
function fitsAtMs(limitNanos: bigint, live: readonly RateEntry[], estimateNanos: bigint, windowMs: number): number | null {
  const usedMax = limitNanos - (estimateNanos > 0n ? estimateNanos : 1n);
  if (usedMax < 0n) return null;
  const leaving = live.map((entry) => ({ at: leavesAtMs(entry, windowMs), amount: entry.amountNanos })).sort((a, b) => a.at - b.at);
  let used = leaving.reduce((sum, entry) => sum + entry.amount, 0n);
  for (const entry of leaving) {
    used -= entry.amount;
    if (used <= usedMax) return entry.at;
  }
  // Unreachable: with every entry gone used is 0 <= usedMax.
  throw new Error("invariant: a rate limit that fits an empty window found no instant");
}
