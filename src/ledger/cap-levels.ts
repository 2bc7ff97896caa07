// The levels of a budget decision beyond the tree's projects: the agent's cap
// in the project (when the call names an agent that has one) and each
// level's rate limit. Pure: a store asks `capNeeds` what to read (a bounded
// number of rows: the agent's spend in one project, and the rate entries of
// the levels with a rate), reads it, and `decisionLevels` builds the levels
// for decideNested (src/ledger/nested-decision.ts).
//
// Where the figures come from (docs/decisions/0013-nested-budgets.md):
// - an agent's lifetime spend in a project is its per-agent label totals; its
//   day and month spend a row per (project, agent) kept by every record that
//   names it; its holds are the project's active holds naming it;
// - a rate counts records in buckets of rateBucketMs (kept only at levels with
//   a rate, from when it is set) and the holds placed at those levels.
import { rateBucketMs } from "../limits.ts";
import { agentCapsFor, agentLevel, type AgentCaps, type AgentSpend } from "./agent-caps.ts";
import { projectLevel, type LevelInput } from "./nested-decision.ts";
import type { RateEntry } from "./rate-guard.ts";
import type { Budget, BudgetState } from "./types.ts";

export interface CapNeeds {
  /** The agent's cap in the project; null without an agent or a cap. */
  agent: { projectId: string; agentId: string; caps: AgentCaps } | null;
  /** The projects of the chain with a rate limit, nearest first. */
  rateProjects: string[];
}

/** What a decision of a call by `agentId` ("" for none) must read beyond the
 * chain's states (`chain`: the project first, then each ancestor). */
export function capNeeds(chain: readonly BudgetState[], agentId: string): CapNeeds {
  const own = chain[0];
  if (own === undefined) throw new Error("invariant: a decision needs the project's state");
  const caps = agentCapsFor(own.budget.agentCaps, agentId);
  return {
    agent: caps === null ? null : { projectId: own.budget.projectId, agentId, caps },
    rateProjects: chain.filter((state) => state.budget.rateLimitNanosPerMinute > 0n).map((state) => state.budget.projectId),
  };
}

export interface CapReads {
  /** The agent's spend and holds (needs.agent set). */
  agentSpend: AgentSpend | null;
  /** Rate entries of each project of needs.rateProjects. */
  projectRates: ReadonlyMap<string, readonly RateEntry[]>;
}

/** The levels, nearest first: the agent's cap, then each project of the
 * chain with its rate limit. */
export function decisionLevels(chain: readonly BudgetState[], needs: CapNeeds, reads: CapReads): LevelInput[] {
  const levels: LevelInput[] = [];
  if (needs.agent !== null) {
    if (reads.agentSpend === null) throw new Error(`invariant: agent "${needs.agent.agentId}" has a cap but its spend was not read`);
    levels.push(agentLevel(needs.agent.projectId, needs.agent.agentId, needs.agent.caps, reads.agentSpend));
  }
  for (const state of chain) {
    const limitNanos = state.budget.rateLimitNanosPerMinute;
    if (limitNanos === 0n) {
      levels.push(projectLevel(state));
      continue;
    }
    const entries = reads.projectRates.get(state.budget.projectId);
    if (entries === undefined) throw new Error(`invariant: the rate entries of "${state.budget.projectId}" were not read`);
    levels.push(projectLevel(state, { limitNanos, entries }));
  }
  return levels;
}

/** The rate bucket of an instant: its first millisecond. */
export function rateBucketOf(atMs: number): number {
  return atMs - (atMs % rateBucketMs);
}

/** A bucket's recorded sum as one entry, at the bucket's last millisecond. */
export function bucketEntry(bucketMs: number, amountNanos: bigint): RateEntry {
  return { atMs: bucketMs + rateBucketMs - 1, amountNanos, reserved: false };
}

/** A hold counted by a rate: from when it was placed until it leaves the
 * window or expires. */
export function holdEntry(placedAtMs: number, expiresAtMs: number, amountNanos: bigint): RateEntry {
  return { atMs: placedAtMs, amountNanos, reserved: true, expiresAtMs };
}

/** What of a budget says where a write adds to rates. */
export type CapSettings = Pick<Budget, "projectId" | "agentCaps" | "rateLimitNanosPerMinute">;

/** Where a write adds to rates: the chain's projects with a rate, and the
 * agent's own when its caps include one. */
export function rateTargets(chainBudgets: readonly CapSettings[], agentId: string): { projects: string[]; agent: boolean } {
  const own = chainBudgets[0];
  if (own === undefined) throw new Error("invariant: a write needs the project's budget");
  const caps = agentCapsFor(own.agentCaps, agentId);
  return {
    projects: chainBudgets.filter((budget) => budget.rateLimitNanosPerMinute > 0n).map((budget) => budget.projectId),
    agent: caps !== null && caps.rateLimitNanosPerMinute > 0n,
  };
}

/** An agent's day or month spend as a store keeps it (absent: never spent). */
export interface StoredPeriodSpend {
  period: string;
  nanos: bigint;
}

/** The agent's spend as a decision sees it: its stored day and month spend
 * count only while they are the project's current periods (`own`'s). */
export function agentSpendOf(
  own: BudgetState,
  stored: {
    lifetimeNanos: bigint;
    day: StoredPeriodSpend | undefined;
    month: StoredPeriodSpend | undefined;
    reservedNanos: bigint;
    rateEntries: readonly RateEntry[];
  },
): AgentSpend {
  const current = (spend: StoredPeriodSpend | undefined, period: string) => (spend?.period === period ? spend.nanos : 0n);
  return {
    lifetimeNanos: stored.lifetimeNanos,
    dayPeriod: own.day.period,
    dayNanos: current(stored.day, own.day.period),
    monthPeriod: own.month.period,
    monthNanos: current(stored.month, own.month.period),
    reservedNanos: stored.reservedNanos,
    rateEntries: stored.rateEntries,
  };
}
