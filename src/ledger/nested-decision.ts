// The budget decision across levels: an agent's cap in the project (when the
// call names an agent that has one), the project, and each ancestor up to the
// top of its tree. Each level is decided by the one-level rule of
// src/ledger/budget.ts (decideLimits) plus its rate limit (rate-guard.ts).
//
// The call is allowed only if every limit of every level allows it. When it
// is refused, the limit that decided is chosen in this order, so the answer
// tells the caller what would have to change:
//   1. a refusing limit of a project of the tree (the project or an ancestor):
//      the one with the least remaining; the reason is that limit's own
//      (EXHAUSTED, FULLY_RESERVED, EXCEEDS_REMAINING);
//   2. else a refusing agent cap: the least remaining; reason AGENT_LIMIT
//      (the project itself still has room: other agents may go on);
//   3. else a refusing rate limit: the one that frees up last; reason
//      RATE_LIMITED with retryAtMs, when every refusing rate limit fits
//      (null when the estimate alone is more than one of them).
// When allowed, the limit that decided is the one with the least remaining
// over every level (it binds next). Ties go to the nearer level (the agent,
// then the project, then its parent...), then to the longer window
// (lifetime, month, day, rolling minute). No limit at any level: NO_LIMIT.
import { decideLimits, DecisionReason, limitInputsOf, type LimitDecision, type LimitInput, type WindowedDecision } from "./budget.ts";
import { decideRate, rollingMinute, type RateDecision, type RateEntry } from "./rate-guard.ts";
import type { BudgetState, Window } from "./types.ts";

export const NestedReason = { ...DecisionReason, agentLimit: "agent_limit", rateLimited: "rate_limited" } as const;
export type NestedReason = (typeof NestedReason)[keyof typeof NestedReason];

/** Lifetime, day, month, or the rolling minute of a rate limit. */
export type LevelWindow = Window | typeof rollingMinute;

/** One level as read for a decision. */
export interface LevelInput {
  projectId: string;
  /** "" for a project of the tree; the agent for an agent's cap in projectId. */
  agentId: string;
  /** Lifetime, day, month (limit 0 = not set), spend rolled up at this level. */
  limits: readonly LimitInput[];
  /** Active holds counted at this level. */
  reservedNanos: bigint;
  /** The rate limit (> 0) and its window's entries; null when not set. */
  rate: { limitNanos: bigint; entries: readonly RateEntry[] } | null;
}

export interface LevelDecision {
  projectId: string;
  agentId: string;
  allowed: boolean;
  reason: NestedReason;
  /** null when the level has no limit. */
  decidedBy: LevelWindow | null;
  /** The level's set limits: lifetime, day, month, in that order. */
  limits: LimitDecision[];
  rate: RateDecision | null;
}

export interface NestedDecision {
  allowed: boolean;
  reason: NestedReason;
  decidedBy: LevelWindow | null;
  /** The level that decided; "" when no level has a limit. */
  decidedByProjectId: string;
  /** Set when an agent's cap decided. */
  decidedByAgentId: string;
  /** What remains of the deciding limit (0 with no limit). */
  decidedByRemainingNanos: bigint;
  /** With reason RATE_LIMITED: when the estimate fits every refusing rate
   * limit; null otherwise or when it never does. */
  retryAtMs: number | null;
  /** Every level with a limit set, in the order given (nearest first). */
  levels: LevelDecision[];
}

const windowRank: Record<LevelWindow, number> = { lifetime: 0, month: 1, day: 2, rolling_minute: 3 };

interface Candidate {
  level: number;
  limit: LimitDecision | RateDecision;
}

/** Least remaining, then nearer level, then longer window. */
function leastRemaining(candidates: readonly Candidate[]): Candidate {
  let best = candidates[0]!;
  for (const c of candidates) {
    const r = c.limit.remainingNanos;
    const b = best.limit.remainingNanos;
    if (
      r < b ||
      (r === b && (c.level < best.level || (c.level === best.level && windowRank[c.limit.window] < windowRank[best.limit.window])))
    )
      best = c;
  }
  return best;
}

/** The rate limit that frees up last (never = null, the latest of all), ties to the nearer level. */
function latestRetry(candidates: readonly Candidate[]): Candidate {
  const at = (c: Candidate) => (c.limit as RateDecision).retryAtMs ?? Number.POSITIVE_INFINITY;
  let best = candidates[0]!;
  for (const c of candidates) if (at(c) > at(best) || (at(c) === at(best) && c.level < best.level)) best = c;
  return best;
}

interface Choice {
  allowed: boolean;
  reason: NestedReason;
  decider: Candidate | null;
  retryAtMs: number | null;
}

/** The rule above over some levels' limits (all levels, or one). */
function choose(levels: readonly LevelInput[], decided: readonly { limits: LimitDecision[]; rate: RateDecision | null }[]): Choice {
  const all: Candidate[] = [];
  decided.forEach((d, level) => {
    for (const limit of d.limits) all.push({ level, limit });
    if (d.rate !== null) all.push({ level, limit: d.rate });
  });
  if (all.length === 0) return { allowed: true, reason: NestedReason.noLimit, decider: null, retryAtMs: null };
  const isAgent = (c: Candidate) => levels[c.level]!.agentId !== "";
  const isRate = (c: Candidate) => c.limit.window === rollingMinute;
  const refusing = all.filter((c) => !c.limit.allowed);
  const tree = refusing.filter((c) => !isRate(c) && !isAgent(c));
  if (tree.length > 0) {
    const decider = leastRemaining(tree);
    return { allowed: false, reason: decider.limit.reason, decider, retryAtMs: null };
  }
  const agent = refusing.filter((c) => !isRate(c) && isAgent(c));
  if (agent.length > 0) return { allowed: false, reason: NestedReason.agentLimit, decider: leastRemaining(agent), retryAtMs: null };
  if (refusing.length > 0) {
    const decider = latestRetry(refusing);
    return { allowed: false, reason: NestedReason.rateLimited, decider, retryAtMs: (decider.limit as RateDecision).retryAtMs };
  }
  return { allowed: true, reason: NestedReason.withinBudget, decider: leastRemaining(all), retryAtMs: null };
}

/** Decides `estimateNanos` at every level (nearest first) at `nowMs`. */
export function decideNested(levels: readonly LevelInput[], estimateNanos: bigint, nowMs: number): NestedDecision {
  const decided = levels.map((level) => ({
    limits: decideLimits(level.limits, level.reservedNanos, estimateNanos).limits,
    rate: level.rate === null ? null : decideRate(level.rate.limitNanos, level.rate.entries, estimateNanos, nowMs),
  }));
  const levelDecisions: LevelDecision[] = [];
  levels.forEach((level, i) => {
    const d = decided[i]!;
    if (d.limits.length === 0 && d.rate === null) return;
    const own = choose([level], [d]);
    levelDecisions.push({
      projectId: level.projectId,
      agentId: level.agentId,
      allowed: own.allowed,
      reason: own.reason,
      decidedBy: own.decider?.limit.window ?? null,
      limits: d.limits,
      rate: d.rate,
    });
  });
  const overall = choose(levels, decided);
  const decider = overall.decider;
  return {
    allowed: overall.allowed,
    reason: overall.reason,
    decidedBy: decider?.limit.window ?? null,
    decidedByProjectId: decider === null ? "" : levels[decider.level]!.projectId,
    decidedByAgentId: decider === null ? "" : levels[decider.level]!.agentId,
    decidedByRemainingNanos: decider?.limit.remainingNanos ?? 0n,
    retryAtMs: overall.retryAtMs,
    levels: levelDecisions,
  };
}

/** A project of the tree as a level: its rolled-up state, and its rate limit
 * with that window's entries (null without one). */
export function projectLevel(state: BudgetState, rate: { limitNanos: bigint; entries: readonly RateEntry[] } | null = null): LevelInput {
  return {
    projectId: state.budget.projectId,
    agentId: "",
    limits: limitInputsOf(state),
    reservedNanos: state.reservedNanos,
    rate,
  };
}

/** A one-level decision (decideLimits over a project without parent, agent
 * cap or rate limit) in the nested form: what decideNested answers for that
 * project alone. Lets callers answer with levels and decided_by_project_id
 * from a decision a store made with decideLimits. */
export function flatNested(projectId: string, windowed: WindowedDecision): NestedDecision {
  const decider = windowed.limits.find((limit) => limit.window === windowed.decidedBy);
  return {
    allowed: windowed.allowed,
    reason: windowed.reason,
    decidedBy: windowed.decidedBy,
    decidedByProjectId: windowed.decidedBy === null ? "" : projectId,
    decidedByAgentId: "",
    decidedByRemainingNanos: decider?.remainingNanos ?? 0n,
    retryAtMs: null,
    levels:
      windowed.limits.length === 0
        ? []
        : [
            {
              projectId,
              agentId: "",
              allowed: windowed.allowed,
              reason: windowed.reason,
              decidedBy: windowed.decidedBy,
              limits: windowed.limits,
              rate: null,
            },
          ],
  };
}
