// Per-agent caps: a project may cap what each agent_id spends in it
// (lifetime, per day, per month, per rolling minute), with overrides for
// named agents. A call without an agent_id is not capped. The cap of the
// agent is one more level of the budget decision (src/ledger/nested-decision.ts),
// measured against that agent's own spend and holds in the project.
import { Window } from "./types.ts";
import type { LevelInput } from "./nested-decision.ts";
import type { RateEntry } from "./rate-guard.ts";

/** One agent's caps in nanos; 0 = no cap of that kind. */
export interface AgentCaps {
  limitNanos: bigint;
  dailyLimitNanos: bigint;
  monthlyLimitNanos: bigint;
  rateLimitNanosPerMinute: bigint;
}

/** A named agent's caps, used instead of the project's defaults. */
export interface AgentLimitOverride extends AgentCaps {
  agentId: string;
}

/** A project's agent caps: the defaults every agent gets, and the overrides
 * (ascending by agentId, each agent once). */
export interface AgentCapConfig {
  defaults: AgentCaps;
  overrides: readonly AgentLimitOverride[];
}

export const noAgentCaps: AgentCaps = { limitNanos: 0n, dailyLimitNanos: 0n, monthlyLimitNanos: 0n, rateLimitNanosPerMinute: 0n };

export function hasAnyCap(caps: AgentCaps): boolean {
  return caps.limitNanos > 0n || caps.dailyLimitNanos > 0n || caps.monthlyLimitNanos > 0n || caps.rateLimitNanosPerMinute > 0n;
}

/** The caps that apply to `agentId`: its override if it has one (an override
 * of all zeros exempts it), else the defaults; null for a call without an
 * agent or when nothing is capped. */
export function agentCapsFor(config: AgentCapConfig, agentId: string): AgentCaps | null {
  if (agentId === "") return null;
  const override = config.overrides.find((entry) => entry.agentId === agentId);
  const caps = override ?? config.defaults;
  return hasAnyCap(caps) ? caps : null;
}

/** The overrides in their stored form: ascending by agentId. Validation
 * refuses duplicates with a message for people; one here is a bug. */
export function sortedOverrides(overrides: readonly AgentLimitOverride[]): AgentLimitOverride[] {
  const sorted = [...overrides].sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.agentId === sorted[i - 1]!.agentId) throw new Error(`invariant: agent "${sorted[i]!.agentId}" has two overrides`);
  }
  return sorted;
}

/** What one agent spent and holds in one project, read for its cap. Day and
 * month are the project's current periods (zero when the agent spent
 * nothing in them). */
export interface AgentSpend {
  lifetimeNanos: bigint;
  dayPeriod: string;
  dayNanos: bigint;
  monthPeriod: string;
  monthNanos: bigint;
  /** The agent's active holds in the project. */
  reservedNanos: bigint;
  /** The agent's records and active holds of the last rolling minute
   * (needed only with a rate cap). */
  rateEntries: readonly RateEntry[];
}

/** The agent's cap as a level of the decision. */
export function agentLevel(projectId: string, agentId: string, caps: AgentCaps, spend: AgentSpend): LevelInput {
  return {
    projectId,
    agentId,
    limits: [
      { window: Window.lifetime, period: "", limitNanos: caps.limitNanos, spentNanos: spend.lifetimeNanos },
      { window: Window.day, period: spend.dayPeriod, limitNanos: caps.dailyLimitNanos, spentNanos: spend.dayNanos },
      { window: Window.month, period: spend.monthPeriod, limitNanos: caps.monthlyLimitNanos, spentNanos: spend.monthNanos },
    ],
    reservedNanos: spend.reservedNanos,
    rate: caps.rateLimitNanosPerMinute > 0n ? { limitNanos: caps.rateLimitNanosPerMinute, entries: spend.rateEntries } : null,
  };
}
