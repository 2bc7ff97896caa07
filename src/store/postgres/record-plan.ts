// Plans a run of consecutive RecordCost writes of one PostgreSQL batch, in
// JS, from the rows read under the batch's project locks
// (docs/decisions/0012-postgresql-set-based-batches.md). Pure: no I/O. The
// decisions are the ledger's, in the order one statement per write took them
// (archived, duplicate, hold not active: src/ledger/refusals.ts; overflow,
// periods and thresholds once: src/ledger/record-step.ts). This file only
// shapes their outcome for set-based statements:
// - one ledger row per applied write, carrying that write's own totals after
//   it (the project's row as read plus the writes applied before it);
// - per project, the SUM of its applied writes and its totals and alert state
//   after the last one: applied to its totals row once;
// - per (project, agent, model), the summed breakdown increment;
// - the holds settled and, per project, the reservation decrement.
// A refused write changes nothing, so later writes of the batch are decided
// as if it had not been sent.
import { HoldNotActiveError, TotalOverflowError } from "../../ledger/errors.ts";
import type { PeriodKeys } from "../../ledger/periods.ts";
import { stepRecord, emptyWindow, type AlertLimits, type RunningTotals, type RunningWindow } from "../../ledger/record-step.ts";
import { isHoldActive, whyInactive } from "../../ledger/refusals.ts";
import type { OpResult } from "../../ledger/store.ts";
import type { CostEntry } from "../../ledger/types.ts";
import { timeZoneDefault } from "../../limits.ts";
import { emptyCapPlan, planCaps, type CapPlan } from "./cap-plan.ts";
import { capSettingsOf } from "../cap-rows.ts";
import {
  duplicateOutcome,
  holdFactsFromRow,
  parseThresholds,
  pricingParams,
  type BudgetRow,
  type HoldRow,
  type RecordRow,
  type TotalsRow,
} from "../rows.ts";

/** What the plan needs from the database, read under the projects' locks. */
export interface RecordReads {
  /** project_totals rows of the run's projects (absent: none yet). */
  totals: ReadonlyMap<string, TotalsRow>;
  /** Existing cost_records of the run's (project, request_id) keys, by recordKey. */
  priors: ReadonlyMap<string, RecordRow>;
  /** holds named by the run's hold_ids, by hold_id. */
  holds: ReadonlyMap<string, HoldRow>;
}

export interface RecordContext {
  nowMs: number;
  /** The project's budget row as of this point of the batch (null: none). */
  budgetOf(projectId: string): BudgetRow | null;
  /** [project, parent, ..., root]: a record adds to every level. */
  chainOf(projectId: string): string[];
  /** The refusal of a write to an archived project, or null. */
  refusal(projectId: string): OpResult | null;
  periodKeys(timeZone: string): PeriodKeys;
}

/** A project's totals row as the run leaves it, and the sums that get it there. */
export interface ProjectPlan {
  projectId: string;
  /** The batch's day and month keys in the project's time zone. */
  keys: PeriodKeys;
  /** Sums of the applied writes. */
  costNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
  /** The row after the run: what the increment statement must return. */
  totals: RunningTotals;
}

export interface LabelPlan {
  projectId: string;
  agentId: string;
  model: string;
  costNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
  catalogCostNanos: bigint;
  pricedCostNanos: bigint;
  unpricedRecordCount: bigint;
}

/** A cost_records row to insert (RecordRow with bigints, and its project). */
export type LedgerRow = RecordRow<bigint> & { project_id: string };

export interface RecordPlan {
  /** One per entry, in order. */
  results: OpResult[];
  ledger: LedgerRow[];
  projects: Map<string, ProjectPlan>;
  labels: Map<string, LabelPlan>;
  settled: Array<{ holdId: string; projectId: string; amountNanos: bigint }>;
  /** Per project: the settled holds' sum and count, to take off its reservations. */
  unreserved: Map<string, { amountNanos: bigint; holdCount: bigint }>;
  /** Agents' day and month spend and the rates' buckets (./cap-plan.ts). */
  caps: CapPlan;
}

export const recordKey = (projectId: string, requestId: string) => `${projectId}\u0000${requestId}`;
const labelKey = (projectId: string, agentId: string, model: string) => `${projectId}\u0000${agentId}\u0000${model}`;

/** One window of a totals row (none yet: empty, no period). */
function windowOf(row: TotalsRow | undefined, prefix: "" | "day_" | "month_"): RunningWindow {
  if (row === undefined) return emptyWindow("");
  const r = row as unknown as Record<string, string | bigint>;
  const n = (column: string) => BigInt(r[`${prefix}${column}`] as string | bigint);
  return {
    period: prefix === "" ? "" : (r[`${prefix}period`] as string),
    costNanos: n(prefix === "" ? "total_cost_nanos" : "cost_nanos"),
    inputTokens: n("input_tokens"),
    outputTokens: n("output_tokens"),
    recordCount: n("record_count"),
    alertedBps: n("alerted_bps"),
    alertedLimitNanos: n("alerted_limit_nanos"),
  };
}

function alertLimitsOf(budget: BudgetRow | null): AlertLimits | null {
  if (budget === null) return null;
  return {
    limitNanos: BigInt(budget.limit_nanos),
    dailyLimitNanos: BigInt(budget.daily_limit_nanos),
    monthlyLimitNanos: BigInt(budget.monthly_limit_nanos),
    thresholdsBps: parseThresholds(budget.alert_thresholds_bps),
  };
}

function addLabel(plan: RecordPlan, entry: CostEntry, catalogCostNanos: bigint | null): void {
  const key = labelKey(entry.projectId, entry.agentId, entry.model);
  const label = plan.labels.get(key) ?? {
    projectId: entry.projectId,
    agentId: entry.agentId,
    model: entry.model,
    costNanos: 0n,
    inputTokens: 0n,
    outputTokens: 0n,
    recordCount: 0n,
    catalogCostNanos: 0n,
    pricedCostNanos: 0n,
    unpricedRecordCount: 0n,
  };
  label.costNanos += entry.costNanos;
  label.inputTokens += entry.inputTokens;
  label.outputTokens += entry.outputTokens;
  label.recordCount += 1n;
  if (catalogCostNanos === null) label.unpricedRecordCount += 1n;
  else {
    label.catalogCostNanos += catalogCostNanos;
    label.pricedCostNanos += entry.costNanos;
  }
  plan.labels.set(key, label);
}

/** The hold comes off the reservations of every level it was counted at. */
function settle(plan: RecordPlan, entry: CostEntry, hold: HoldRow, chain: readonly string[]): bigint {
  const amountNanos = BigInt(hold.amount_nanos);
  plan.settled.push({ holdId: hold.hold_id, projectId: entry.projectId, amountNanos });
  for (const level of chain) {
    const u = plan.unreserved.get(level) ?? { amountNanos: 0n, holdCount: 0n };
    u.amountNanos += amountNanos;
    u.holdCount += 1n;
    plan.unreserved.set(level, u);
  }
  return amountNanos;
}

export function planRecords(entries: readonly CostEntry[], reads: RecordReads, context: RecordContext): RecordPlan {
  const { nowMs } = context;
  const plan: RecordPlan = {
    results: [],
    ledger: [],
    projects: new Map(),
    labels: new Map(),
    settled: [],
    unreserved: new Map(),
    caps: emptyCapPlan(),
  };
  const written = new Map<string, LedgerRow>();
  const settledIds = new Set<string>();
  const projectPlan = (projectId: string): ProjectPlan => {
    let p = plan.projects.get(projectId);
    if (p === undefined) {
      const row = reads.totals.get(projectId);
      const keys = context.periodKeys(context.budgetOf(projectId)?.time_zone ?? timeZoneDefault);
      const totals = { lifetime: windowOf(row, ""), day: windowOf(row, "day_"), month: windowOf(row, "month_") };
      p = { projectId, keys, costNanos: 0n, inputTokens: 0n, outputTokens: 0n, recordCount: 0n, totals };
      plan.projects.set(projectId, p);
    }
    return p;
  };
  for (const entry of entries) {
    const refused = context.refusal(entry.projectId);
    if (refused !== null) {
      plan.results.push(refused);
      continue;
    }
    const key = recordKey(entry.projectId, entry.requestId);
    const prior = written.get(key) ?? reads.priors.get(key);
    if (prior !== undefined) {
      plan.results.push(duplicateOutcome(entry, prior));
      continue;
    }
    const holdId = entry.holdId ?? "";
    // A hold settled earlier in this batch is gone, as if its row were deleted.
    const hold = holdId === "" || settledIds.has(holdId) ? undefined : reads.holds.get(holdId);
    if (holdId !== "" && !isHoldActive(holdFactsFromRow(hold), entry.projectId, nowMs)) {
      plan.results.push({
        ok: false,
        error: new HoldNotActiveError(entry.projectId, holdId, whyInactive(holdFactsFromRow(hold), entry.projectId, nowMs)),
      });
      continue;
    }
    // Every level steps (the project, then each ancestor's rolled-up row);
    // an overflow at any level refuses the write at all of them.
    const chain = context.chainOf(entry.projectId);
    const levels = chain.map((id) => {
      const p = projectPlan(id);
      return {
        p,
        step: stepRecord(
          p.totals,
          id === entry.projectId ? entry : { ...entry, projectId: id },
          p.keys,
          alertLimitsOf(context.budgetOf(id)),
          nowMs,
        ),
      };
    });
    const overflow = levels.find((l) => !l.step.ok);
    if (overflow !== undefined && !overflow.step.ok) {
      plan.results.push({ ok: false, error: new TotalOverflowError(overflow.p.projectId, overflow.step.overflowing) });
      continue;
    }
    const crossings = [];
    for (const { p, step: levelStep } of levels) {
      if (!levelStep.ok) throw new Error("invariant: a level's step refused after the check");
      p.totals = levelStep.next;
      p.costNanos += entry.costNanos;
      p.inputTokens += entry.inputTokens;
      p.outputTokens += entry.outputTokens;
      p.recordCount += 1n;
      crossings.push(...levelStep.crossings);
    }
    const step = levels[0]!.step;
    if (!step.ok) throw new Error("invariant: the project's step refused after the check");
    let settledHoldNanos = 0n;
    if (hold !== undefined) {
      settledIds.add(holdId);
      settledHoldNanos = settle(plan, entry, hold, chain);
    }
    const pricing = pricingParams(entry);
    const after = step.next.lifetime;
    const row: LedgerRow = {
      project_id: entry.projectId,
      request_id: entry.requestId,
      cost_nanos: entry.costNanos,
      input_tokens: entry.inputTokens,
      output_tokens: entry.outputTokens,
      agent_id: entry.agentId,
      model: entry.model,
      recorded_at_ms: BigInt(nowMs),
      total_cost_nanos_after: after.costNanos,
      input_tokens_after: after.inputTokens,
      output_tokens_after: after.outputTokens,
      record_count_after: after.recordCount,
      hold_id: holdId,
      cached_input_tokens: pricing.cachedInputTokens,
      cache_write_tokens: pricing.cacheWriteTokens,
      cost_source: pricing.costSource,
      catalog_cost_nanos: pricing.catalogCostNanos,
      price_id: pricing.priceId,
      occurred_at_ms: pricing.occurredAtMs,
    };
    plan.ledger.push(row);
    written.set(key, row);
    addLabel(plan, entry, pricing.catalogCostNanos);
    planCaps(
      plan.caps,
      entry,
      chain.map((id) => capSettingsOf(id, context.budgetOf(id))),
      levels[0]!.p.keys,
      nowMs,
    );
    const totals = {
      projectId: entry.projectId,
      totalCostNanos: after.costNanos,
      inputTokens: after.inputTokens,
      outputTokens: after.outputTokens,
      recordCount: after.recordCount,
      updatedAtMs: nowMs,
    };
    plan.results.push({
      ok: true,
      value: { totals, duplicate: false, requestId: entry.requestId, crossings, settledHoldNanos },
    });
  }
  // Projects whose every write was refused are not written.
  for (const [projectId, p] of plan.projects) if (p.recordCount === 0n) plan.projects.delete(projectId);
  return plan;
}
