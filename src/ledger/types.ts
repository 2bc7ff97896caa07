// The ledger's domain values. Amounts and counters are bigint (exact int64);
// timestamps are epoch milliseconds.
import type { AgentCapConfig, AgentLimitOverride } from "./agent-caps.ts";

export interface ProjectTotals {
  projectId: string;
  totalCostNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
  /** null for a project that never recorded anything. */
  updatedAtMs: number | null;
}

/** One LLM call's cost, validated, as the ledger records it. */
export interface CostEntry {
  projectId: string;
  /** Idempotency key, unique within the project. */
  requestId: string;
  costNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  /** "" when not given. */
  agentId: string;
  /** "" when not given. */
  model: string;
  /** The hold this call settles; "" (or absent, for callers that predate
   * holds) when none. Part of the payload an idempotent retry must repeat. */
  holdId?: string;
  /** Prompt-cache reads and writes (absent = 0), billed at their own prices. */
  cachedInputTokens?: bigint;
  cacheWriteTokens?: bigint;
  /** Who priced the call (absent = "reported"). For "catalog", costNanos is
   * the catalog's price, derived from the other fields: a retry is compared
   * on those fields, not on a cost a later price could change. */
  costSource?: CostSource;
  /** RecordCostRequest.occurred_at when given; null/absent when not. */
  occurredAtMs?: number | null;
  /** Beside the record, not part of its payload: what the catalog charges for
   * it (null when no entry priced the model) and the entry's price_id. */
  catalogCostNanos?: bigint | null;
  priceId?: string;
}

export type CostSource = "reported" | "catalog";

export interface RecordOutcome {
  /** Totals right after this write (for a duplicate: after the original write). */
  totals: ProjectTotals;
  duplicate: boolean;
  requestId: string;
  /** Thresholds this write made spend reach (empty for a duplicate). */
  crossings: ThresholdCrossing[];
  /** The estimate of the hold this write settled; 0n without a hold (or for a duplicate). */
  settledHoldNanos: bigint;
  /** How the record was priced: for a duplicate the original's (a catalog
   * cost is the original's, whatever the catalog says now); the store sets it
   * for duplicates, the ledger for new records. */
  pricing?: { costNanos: bigint; catalogCostNanos: bigint | null; priceId: string };
}

export interface Budget {
  projectId: string;
  /** 0 = enforcement disabled. */
  limitNanos: bigint;
  currency: string;
  configured: boolean;
  updatedAtMs: number | null;
  /** 0 = no daily limit. */
  dailyLimitNanos: bigint;
  /** 0 = no monthly limit. */
  monthlyLimitNanos: bigint;
  /** IANA time zone of the day and month windows. */
  timeZone: string;
  /** Ascending, distinct, each 1..10000. */
  alertThresholdsBps: number[];
  /** The parent of a tree of budgets; "" = none (a root). */
  parentId: string;
  /** Each agent's caps in this project, and the named agents' own
   * (src/ledger/agent-caps.ts); all zeros and no overrides = none. */
  agentCaps: AgentCapConfig;
  /** The runaway guard: at most this much recorded plus reserved per rolling
   * rateWindowMs, counted over the whole subtree; 0 = none. */
  rateLimitNanosPerMinute: bigint;
}

/** The cap and rate fields of a budget change, named alike in the contract
 * (ProjectBudget, SetProjectBudgetRequest). */
export type CapFieldName =
  | "agentLimitNanos"
  | "agentDailyLimitNanos"
  | "agentMonthlyLimitNanos"
  | "agentRateLimitNanosPerMinute"
  | "agentLimitOverrides"
  | "rateLimitNanosPerMinute";

export interface BudgetChange {
  projectId: string;
  limitNanos: bigint;
  /** null keeps the current currency. */
  currency: string | null;
  /** null (or absent) keeps the current value of each of these. */
  dailyLimitNanos?: bigint | null;
  monthlyLimitNanos?: bigint | null;
  /** A canonical IANA name (validated by the caller). */
  timeZone?: string | null;
  /** Ascending, distinct, each 1..10000 (validated by the caller). */
  alertThresholdsBps?: number[] | null;
  /** null (or absent) keeps the parent; "" detaches; else the new parent. */
  parentId?: string | null;
  /** null (or absent) keeps each of these; 0 removes that cap. */
  agentLimitNanos?: bigint | null;
  agentDailyLimitNanos?: bigint | null;
  agentMonthlyLimitNanos?: bigint | null;
  agentRateLimitNanosPerMinute?: bigint | null;
  /** null (or absent) keeps them; else the whole new list. */
  agentLimitOverrides?: AgentLimitOverride[] | null;
  rateLimitNanosPerMinute?: bigint | null;
}

/** The windows a budget can limit: lifetime, calendar day, calendar month. */
export const Window = { lifetime: "lifetime", day: "day", month: "month" } as const;
export type Window = (typeof Window)[keyof typeof Window];

/** Spend of one window reaching one alert threshold. */
export interface ThresholdCrossing {
  projectId: string;
  window: Window;
  /** "2026-11-27", "2026-11", or "" for lifetime. */
  period: string;
  thresholdBps: number;
  limitNanos: bigint;
  spentNanos: bigint;
  /** The write that crossed it. */
  requestId: string;
  atMs: number;
}

/** A reservation request (CheckBudget with reserve = true), validated. */
export interface HoldRequest {
  projectId: string;
  estimatedCostNanos: bigint;
  /** Chosen by the ledger (random), so stores need no randomness. */
  holdId: string;
  ttlMs: number;
  /** The caller's idempotency key for this reservation; "" for none. */
  requestId: string;
  /** CheckBudget by tokens: what the estimate was asked for (model, tokens,
   * candidates) as one string, part of the reservation's idempotent payload;
   * "" (or absent) for an estimate in nanos. */
  tokenFingerprint?: string;
  /** The agent that will spend (CheckBudgetRequest.agent_id); "" (or
   * absent) for none. Its cap counts the hold until it ends. */
  agentId?: string;
}

export interface Hold {
  holdId: string;
  projectId: string;
  amountNanos: bigint;
  createdAtMs: number;
  expiresAtMs: number;
}

/** Spend within the current calendar period of a window. */
export interface PeriodTotals {
  window: "day" | "month";
  period: string;
  timeZone: string;
  totalCostNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
}

/** Everything a budget decision reads, consistent with itself, at one instant. */
export interface BudgetState {
  budget: Budget;
  totals: ProjectTotals;
  day: PeriodTotals;
  month: PeriodTotals;
  /** Sum and count of active (unexpired) holds. */
  reservedNanos: bigint;
  activeHoldCount: bigint;
  /** Whether the project has child projects, when the store read it with the
   * state (then its totals are rolled up and its own calls differ). */
  hasChildren?: boolean;
}

export const Dimension = { agent: "agent", model: "model", child: "child" } as const;
export type Dimension = (typeof Dimension)[keyof typeof Dimension];

export interface BreakdownEntry {
  key: string;
  totalCostNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  recordCount: bigint;
  /** Catalog cost, and recorded cost, of the records that had a catalog price. */
  catalogCostNanos: bigint;
  pricedCostNanos: bigint;
  unpricedRecordCount: bigint;
}

export interface Breakdown {
  dimension: Dimension;
  /** Highest cost first, ties by key. */
  entries: BreakdownEntry[];
  truncated: boolean;
}

/** One stored cost record, as ListCostRecords returns it. */
export interface CostRecordView {
  /** Position in the ledger (commit order); used for keyset paging only. */
  id: bigint;
  requestId: string;
  costNanos: bigint;
  inputTokens: bigint;
  outputTokens: bigint;
  agentId: string;
  model: string;
  holdId: string;
  recordedAtMs: number;
  cachedInputTokens: bigint;
  cacheWriteTokens: bigint;
  costSource: CostSource;
  catalogCostNanos: bigint | null;
  priceId: string;
  occurredAtMs: number | null;
  /** The project's lifetime total_cost_nanos right after this record (the
   * running total kept in the record row since v1: a point of spend over time). */
  totalCostNanosAfter: bigint;
}

/** A page request over one project's ledger: [startMs, endMs), after the
 * keyset position (afterMs, afterId) when given, at most limit rows. */
export interface CostRecordQuery {
  projectId: string;
  startMs: number | null;
  endMs: number | null;
  after: { recordedAtMs: number; id: bigint } | null;
  limit: number;
}

export function zeroTotals(projectId: string): ProjectTotals {
  return { projectId, totalCostNanos: 0n, inputTokens: 0n, outputTokens: 0n, recordCount: 0n, updatedAtMs: null };
}

/** Whether a retry carries the same payload as the original record. */
export function sameEntry(a: CostEntry, b: CostEntry): boolean {
  return (
    a.projectId === b.projectId &&
    a.requestId === b.requestId &&
    a.inputTokens === b.inputTokens &&
    a.outputTokens === b.outputTokens &&
    a.agentId === b.agentId &&
    a.model === b.model &&
    (a.holdId ?? "") === (b.holdId ?? "") &&
    (a.cachedInputTokens ?? 0n) === (b.cachedInputTokens ?? 0n) &&
    (a.cacheWriteTokens ?? 0n) === (b.cacheWriteTokens ?? 0n) &&
    (a.costSource ?? "reported") === (b.costSource ?? "reported") &&
    (a.occurredAtMs ?? null) === (b.occurredAtMs ?? null) &&
    // A catalog cost is derived from the fields above at the price of its
    // time; a retry is the same call even if the catalog changed since.
    ((a.costSource ?? "reported") === "catalog" || a.costNanos === b.costNanos)
  );
}
