// The rows both stores read (the same tables on SQLite and PostgreSQL) and
// their mapping to the ledger's types. Integer columns arrive as bigint from
// better-sqlite3 (safeIntegers) and as strings from pg (int8's default): the
// mappers take either, through BigInt.
import { currencyDefault, timeZoneDefault } from "../limits.ts";
import { capsFromRow, noCaps, type CapColumns } from "./cap-rows.ts";
import { IdempotencyConflictError } from "../ledger/errors.ts";
import type { WindowAlerts } from "../ledger/alerts.ts";
import type { StoredPeriodTotals, StoredTotals } from "../ledger/budget-state.ts";
import type { HoldFacts } from "../ledger/refusals.ts";
import type { OpResult } from "../ledger/store.ts";
import {
  sameEntry,
  type Budget,
  type CostEntry,
  type CostRecordView,
  type CostSource,
  type Hold,
  type ProjectTotals,
} from "../ledger/types.ts";

/** An int8 column as a driver returns it. */
export type Int8 = string | bigint;

/** project_totals: lifetime totals, and the current day's and month's. */
export interface TotalsRow<N extends Int8 = Int8> {
  project_id: string;
  total_cost_nanos: N;
  input_tokens: N;
  output_tokens: N;
  record_count: N;
  updated_at_ms: N;
  alerted_bps: N;
  alerted_limit_nanos: N;
  day_period: string;
  day_cost_nanos: N;
  day_input_tokens: N;
  day_output_tokens: N;
  day_record_count: N;
  day_alerted_bps: N;
  day_alerted_limit_nanos: N;
  month_period: string;
  month_cost_nanos: N;
  month_input_tokens: N;
  month_output_tokens: N;
  month_record_count: N;
  month_alerted_bps: N;
  month_alerted_limit_nanos: N;
}

/** project_budgets. */
export interface BudgetRow<N extends Int8 = Int8> extends CapColumns<N> {
  project_id: string;
  limit_nanos: N;
  currency: string;
  updated_at_ms: N;
  daily_limit_nanos: N;
  monthly_limit_nanos: N;
  time_zone: string;
  alert_thresholds_bps: string;
  /** Absent in statements that do not select it (then: no parent). */
  parent_id?: string;
}

/** holds. */
export interface HoldRow<N extends Int8 = Int8> {
  hold_id: string;
  project_id: string;
  amount_nanos: N;
  created_at_ms: N;
  expires_at_ms: N;
}

/** cost_records: one recorded call, with the project's totals after it. */
export interface RecordRow<N extends Int8 = Int8> {
  request_id: string;
  cost_nanos: N;
  input_tokens: N;
  output_tokens: N;
  agent_id: string;
  model: string;
  recorded_at_ms: N;
  total_cost_nanos_after: N;
  input_tokens_after: N;
  output_tokens_after: N;
  record_count_after: N;
  hold_id: string;
  cached_input_tokens: N;
  cache_write_tokens: N;
  cost_source: string;
  catalog_cost_nanos: N | null;
  price_id: string;
  occurred_at_ms: N | null;
}

/** The answer to a record whose (project, request_id) is already in `row`:
 * the original's totals-after as a duplicate when the payload is the same,
 * IdempotencyConflictError naming the differing fields when it is not. */
export function duplicateOutcome(entry: CostEntry, row: RecordRow): OpResult {
  const original: CostEntry = {
    projectId: entry.projectId,
    requestId: row.request_id,
    costNanos: BigInt(row.cost_nanos),
    inputTokens: BigInt(row.input_tokens),
    outputTokens: BigInt(row.output_tokens),
    agentId: row.agent_id,
    model: row.model,
    holdId: row.hold_id,
    cachedInputTokens: BigInt(row.cached_input_tokens),
    cacheWriteTokens: BigInt(row.cache_write_tokens),
    costSource: costSourceOf(row.cost_source),
    occurredAtMs: row.occurred_at_ms === null ? null : Number(row.occurred_at_ms),
  };
  if (!sameEntry(original, entry)) {
    return { ok: false, error: new IdempotencyConflictError(entry.projectId, entry.requestId, describeDifference(original, entry)) };
  }
  const totals: ProjectTotals = {
    projectId: entry.projectId,
    totalCostNanos: BigInt(row.total_cost_nanos_after),
    inputTokens: BigInt(row.input_tokens_after),
    outputTokens: BigInt(row.output_tokens_after),
    recordCount: BigInt(row.record_count_after),
    updatedAtMs: Number(row.recorded_at_ms),
  };
  const priced = {
    costNanos: BigInt(row.cost_nanos),
    catalogCostNanos: row.catalog_cost_nanos === null ? null : BigInt(row.catalog_cost_nanos),
    priceId: row.price_id,
  };
  return { ok: true, value: { totals, duplicate: true, requestId: entry.requestId, crossings: [], settledHoldNanos: 0n, pricing: priced } };
}

export function recordViewFromRow(row: RecordRow & { id: Int8 }): CostRecordView {
  return {
    id: BigInt(row.id),
    requestId: row.request_id,
    costNanos: BigInt(row.cost_nanos),
    inputTokens: BigInt(row.input_tokens),
    outputTokens: BigInt(row.output_tokens),
    agentId: row.agent_id,
    model: row.model,
    holdId: row.hold_id,
    recordedAtMs: Number(row.recorded_at_ms),
    totalCostNanosAfter: BigInt(row.total_cost_nanos_after),
    cachedInputTokens: BigInt(row.cached_input_tokens),
    cacheWriteTokens: BigInt(row.cache_write_tokens),
    costSource: costSourceOf(row.cost_source),
    catalogCostNanos: row.catalog_cost_nanos === null ? null : BigInt(row.catalog_cost_nanos),
    priceId: row.price_id,
    occurredAtMs: row.occurred_at_ms === null ? null : Number(row.occurred_at_ms),
  };
}

function costSourceOf(stored: string): CostSource {
  if (stored === "reported" || stored === "catalog") return stored;
  throw new Error(`cost_records.cost_source holds "${stored}", which is neither "reported" nor "catalog"`);
}

/** The same, as PostgreSQL's record statement binds them ($12..$17, int8 as text). */
export function pricingValues(entry: CostEntry): Array<string | null> {
  const p = pricingParams(entry);
  return [
    p.cachedInputTokens.toString(),
    p.cacheWriteTokens.toString(),
    p.costSource,
    p.catalogCostNanos?.toString() ?? null,
    p.priceId,
    p.occurredAtMs?.toString() ?? null,
  ];
}

/** The record's pricing columns as the insert statements bind them. */
export function pricingParams(entry: CostEntry): {
  cachedInputTokens: bigint;
  cacheWriteTokens: bigint;
  costSource: CostSource;
  catalogCostNanos: bigint | null;
  priceId: string;
  occurredAtMs: bigint | null;
} {
  return {
    cachedInputTokens: entry.cachedInputTokens ?? 0n,
    cacheWriteTokens: entry.cacheWriteTokens ?? 0n,
    costSource: entry.costSource ?? "reported",
    catalogCostNanos: entry.catalogCostNanos ?? null,
    priceId: entry.priceId ?? "",
    occurredAtMs: entry.occurredAtMs === undefined || entry.occurredAtMs === null ? null : BigInt(entry.occurredAtMs),
  };
}

export function totalsFromRow(row: TotalsRow, projectId: string = row.project_id): ProjectTotals {
  return {
    projectId,
    totalCostNanos: BigInt(row.total_cost_nanos),
    inputTokens: BigInt(row.input_tokens),
    outputTokens: BigInt(row.output_tokens),
    recordCount: BigInt(row.record_count),
    updatedAtMs: Number(row.updated_at_ms),
  };
}

/** A totals row as the ledger's state rules take it: lifetime, day and month. */
export function storedTotalsFromRow(row: TotalsRow, projectId: string = row.project_id): StoredTotals {
  const period = (w: "day" | "month"): StoredPeriodTotals => ({
    period: row[`${w}_period`],
    totalCostNanos: BigInt(row[`${w}_cost_nanos`]),
    inputTokens: BigInt(row[`${w}_input_tokens`]),
    outputTokens: BigInt(row[`${w}_output_tokens`]),
    recordCount: BigInt(row[`${w}_record_count`]),
  });
  return { lifetime: totalsFromRow(row, projectId), day: period("day"), month: period("month") };
}

/** The alert state of each window: limits from the budget, spend and alert
 * state from the totals row a record just incremented. */
export function alertStatesFromRows(budget: BudgetRow, totals: TotalsRow): WindowAlerts {
  return {
    lifetime: {
      period: "",
      limitNanos: BigInt(budget.limit_nanos),
      spentNanos: BigInt(totals.total_cost_nanos),
      alertedBps: BigInt(totals.alerted_bps),
      alertedLimitNanos: BigInt(totals.alerted_limit_nanos),
    },
    day: {
      period: totals.day_period,
      limitNanos: BigInt(budget.daily_limit_nanos),
      spentNanos: BigInt(totals.day_cost_nanos),
      alertedBps: BigInt(totals.day_alerted_bps),
      alertedLimitNanos: BigInt(totals.day_alerted_limit_nanos),
    },
    month: {
      period: totals.month_period,
      limitNanos: BigInt(budget.monthly_limit_nanos),
      spentNanos: BigInt(totals.month_cost_nanos),
      alertedBps: BigInt(totals.month_alerted_bps),
      alertedLimitNanos: BigInt(totals.month_alerted_limit_nanos),
    },
  };
}

/** What the hold rules (src/ledger/refusals.ts) need of a hold row. */
export function holdFactsFromRow(row: HoldRow | null | undefined): HoldFacts | null {
  return row === null || row === undefined ? null : { projectId: row.project_id, expiresAtMs: Number(row.expires_at_ms) };
}

export function budgetFromRow(row: BudgetRow): Budget {
  return {
    projectId: row.project_id,
    limitNanos: BigInt(row.limit_nanos),
    currency: row.currency,
    configured: true,
    updatedAtMs: Number(row.updated_at_ms),
    dailyLimitNanos: BigInt(row.daily_limit_nanos),
    monthlyLimitNanos: BigInt(row.monthly_limit_nanos),
    timeZone: row.time_zone,
    alertThresholdsBps: parseThresholds(row.alert_thresholds_bps),
    parentId: row.parent_id ?? "",
    ...capsFromRow(row),
  };
}

/** The budget of a project that never set one: no limits, the defaults. */
export function unsetBudget(projectId: string): Budget {
  return {
    projectId,
    limitNanos: 0n,
    currency: currencyDefault,
    configured: false,
    updatedAtMs: null,
    dailyLimitNanos: 0n,
    monthlyLimitNanos: 0n,
    timeZone: timeZoneDefault,
    alertThresholdsBps: [],
    parentId: "",
    ...noCaps,
  };
}

/** alert_thresholds_bps is stored as "5000,8000" ("" for none). */
export function parseThresholds(stored: string): number[] {
  return stored === "" ? [] : stored.split(",").map(Number);
}

export function holdFromRow(row: HoldRow): Hold {
  return {
    holdId: row.hold_id,
    projectId: row.project_id,
    amountNanos: BigInt(row.amount_nanos),
    createdAtMs: Number(row.created_at_ms),
    expiresAtMs: Number(row.expires_at_ms),
  };
}

/** The entry with its optional fields at their defaults (absent = not given). */
function normalized(e: CostEntry) {
  return {
    ...e,
    holdId: e.holdId ?? "",
    cachedInputTokens: e.cachedInputTokens ?? 0n,
    cacheWriteTokens: e.cacheWriteTokens ?? 0n,
    costSource: e.costSource ?? "reported",
    occurredAtMs: e.occurredAtMs ?? null,
  };
}

/** What a reused request_id changed, for IdempotencyConflictError. */
function describeDifference(original: CostEntry, retry: CostEntry): string {
  const fields = [
    "costNanos",
    "inputTokens",
    "outputTokens",
    "agentId",
    "model",
    "holdId",
    "cachedInputTokens",
    "cacheWriteTokens",
    "costSource",
    "occurredAtMs",
  ] as const;
  return fields
    .filter((field) => !(field === "costNanos" && original.costSource === "catalog"))
    .filter((field) => normalized(original)[field] !== normalized(retry)[field])
    .map((field) => `${field}: recorded ${String(normalized(original)[field])}, now ${String(normalized(retry)[field])}`)
    .join("; ");
}
