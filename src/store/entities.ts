// MikroORM entities: the schema of Tally's durable state. Defined with
// defineEntity (no decorators, no reflection). Timestamps are integer epoch
// milliseconds and amounts are int64 (`bigint` columns read as JS bigint), so no
// value ever passes through a float. The committed migrations under
// ./migrations must match these definitions; the first test of
// test/store/sqlite-store.test.ts fails when they drift apart.
import { defineEntity, p } from "@mikro-orm/core";
import { currencyDefault, idLengthMax, modelLengthMax, priceSourceLengthMax, timeZoneDefault, timeZoneLengthMax } from "../limits.ts";

/** One row per project that ever recorded a cost: its lifetime totals and its
 * current day and month, updated by atomic increments in SQL. Checks read this
 * row, never the ledger. */
export const ProjectTotalsEntity = defineEntity({
  name: "ProjectTotals",
  tableName: "project_totals",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    totalCostNanos: p.bigint("bigint"),
    inputTokens: p.bigint("bigint"),
    outputTokens: p.bigint("bigint"),
    recordCount: p.bigint("bigint"),
    createdAtMs: p.bigint("bigint"),
    updatedAtMs: p.bigint("bigint"),
    /** Alert state of the lifetime limit: the highest threshold (basis points)
     * already reported, and the limit it was measured against (a changed limit
     * re-arms every threshold). */
    alertedBps: p.bigint("bigint").default(0),
    alertedLimitNanos: p.bigint("bigint").default(0),
    /** The current calendar day in the project's time zone ("2026-11-27", ""
     * before the first record) and its totals and alert state. A record of a
     * later day resets them in the same upsert (CASE), so windows cost no
     * extra statement; a record stamped earlier (clock stepped back) is
     * added to the current day, never lost. */
    dayPeriod: p.string().length(16).default(""),
    dayCostNanos: p.bigint("bigint").default(0),
    dayInputTokens: p.bigint("bigint").default(0),
    dayOutputTokens: p.bigint("bigint").default(0),
    dayRecordCount: p.bigint("bigint").default(0),
    dayAlertedBps: p.bigint("bigint").default(0),
    dayAlertedLimitNanos: p.bigint("bigint").default(0),
    /** The current calendar month ("2026-11"), same rules as the day. */
    monthPeriod: p.string().length(16).default(""),
    monthCostNanos: p.bigint("bigint").default(0),
    monthInputTokens: p.bigint("bigint").default(0),
    monthOutputTokens: p.bigint("bigint").default(0),
    monthRecordCount: p.bigint("bigint").default(0),
    monthAlertedBps: p.bigint("bigint").default(0),
    monthAlertedLimitNanos: p.bigint("bigint").default(0),
  },
});

/** The cost ledger: one row per distinct recorded call. (project_id, request_id)
 * is unique: it is the idempotency key. Each row keeps the project's totals right
 * after it was applied, so a retried request gets exactly its original answer. */
export const CostRecordEntity = defineEntity({
  name: "CostRecord",
  tableName: "cost_records",
  properties: {
    id: p.bigint("bigint").primary().autoincrement(),
    projectId: p.string().length(idLengthMax),
    requestId: p.string().length(idLengthMax),
    costNanos: p.bigint("bigint"),
    inputTokens: p.bigint("bigint"),
    outputTokens: p.bigint("bigint"),
    agentId: p.string().length(idLengthMax).default(""),
    model: p.string().length(modelLengthMax).default(""),
    recordedAtMs: p.bigint("bigint").index("cost_records_recorded_at_ms_index"),
    totalCostNanosAfter: p.bigint("bigint"),
    inputTokensAfter: p.bigint("bigint"),
    outputTokensAfter: p.bigint("bigint"),
    recordCountAfter: p.bigint("bigint"),
    /** The hold this call settled; "" when recorded without one. */
    holdId: p.string().length(idLengthMax).default(""),
    /** Prompt-cache reads and writes of the call (issue 17), not in input_tokens. */
    cachedInputTokens: p.bigint("bigint").default(0),
    cacheWriteTokens: p.bigint("bigint").default(0),
    /** "reported" (cost_nanos as the caller sent it) or "catalog" (priced by Tally). */
    costSource: p.string().length(16).default("reported"),
    /** The catalog's price of this call at occurred_at; null when no entry priced the model. */
    catalogCostNanos: p.bigint("bigint").nullable(),
    /** model_prices.price_id of that entry; "" when none. Never changes. */
    priceId: p.string().length(32).default(""),
    /** RecordCostRequest.occurred_at when given (null: the time the server received it). */
    occurredAtMs: p.bigint("bigint").nullable(),
  },
  uniques: [{ name: "cost_records_project_id_request_id_unique", properties: ["projectId", "requestId"] }],
  // ListCostRecords pages by (recorded_at_ms, id) within a project.
  indexes: [{ name: "cost_records_project_id_recorded_at_ms_id_index", properties: ["projectId", "recordedAtMs", "id"] }],
});

/** A project's spending limit and currency. Absent row = no limit, USD. */
export const ProjectBudgetEntity = defineEntity({
  name: "ProjectBudget",
  tableName: "project_budgets",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    limitNanos: p.bigint("bigint"),
    currency: p.string().length(3).default(currencyDefault),
    createdAtMs: p.bigint("bigint"),
    updatedAtMs: p.bigint("bigint"),
    /** 0 = no daily / monthly limit. */
    dailyLimitNanos: p.bigint("bigint").default(0),
    monthlyLimitNanos: p.bigint("bigint").default(0),
    /** IANA name; days and months of the window limits are local to it. */
    timeZone: p.string().length(timeZoneLengthMax).default(timeZoneDefault),
    /** Ascending basis points, comma-separated ("5000,8000"); "" = none. */
    alertThresholdsBps: p.string().length(64).default(""),
    /** The parent project of a tree of budgets (issue 18); "" = a root. */
    parentId: p.string().length(idLengthMax).default("").index("project_budgets_parent_id_index"),
    /** Each agent's caps in this project (issue 18); 0 = none. */
    agentLimitNanos: p.bigint("bigint").default(0),
    agentDailyLimitNanos: p.bigint("bigint").default(0),
    agentMonthlyLimitNanos: p.bigint("bigint").default(0),
    agentRateLimitNanosPerMinute: p.bigint("bigint").default(0),
    /** Named agents' own caps, JSON, replaced as a list (src/store/cap-rows.ts); "" = none. */
    agentLimitOverrides: p.text().default(""),
    /** The runaway guard over the subtree; 0 = none. */
    rateLimitNanosPerMinute: p.bigint("bigint").default(0),
  },
});

/** Active holds (two-phase spending): an estimate reserved by CheckBudget with
 * reserve = true until RecordCost settles it, ReleaseHold gives it back, or it
 * expires. Expired rows stop counting at once (every query compares
 * expires_at_ms with now) and the hold sweeper deletes them. */
export const HoldEntity = defineEntity({
  name: "Hold",
  tableName: "holds",
  properties: {
    holdId: p.string().primary().length(idLengthMax),
    projectId: p.string().length(idLengthMax),
    amountNanos: p.bigint("bigint"),
    createdAtMs: p.bigint("bigint"),
    expiresAtMs: p.bigint("bigint").index("holds_expires_at_ms_index"),
    /** The agent whose cap counts this hold (CheckBudgetRequest.agent_id); "" = none. */
    agentId: p.string().length(idLengthMax).default(""),
  },
  indexes: [
    { name: "holds_project_id_expires_at_ms_index", properties: ["projectId", "expiresAtMs"] },
    // An agent's active holds in a project, for its cap.
    { name: "holds_project_id_agent_id_expires_at_ms_index", properties: ["projectId", "agentId", "expiresAtMs"] },
  ],
});

/** The idempotency keys of reservations (CheckBudget reserve with request_id):
 * which hold a key placed, with what estimate and TTL, and the decision it was
 * answered with, so a retry gets that answer again instead of a second hold.
 * Written in the same transaction as the hold; kept after the hold ends (so a
 * late retry is told it ended) until reserveKeyKeepMs past its expiry. */
export const ReserveKeyEntity = defineEntity({
  name: "ReserveKey",
  tableName: "reserve_keys",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    requestId: p.string().primary().length(idLengthMax),
    holdId: p.string().length(idLengthMax),
    amountNanos: p.bigint("bigint"),
    ttlMs: p.bigint("bigint"),
    createdAtMs: p.bigint("bigint"),
    expiresAtMs: p.bigint("bigint").index("reserve_keys_expires_at_ms_index"),
    /** The WindowedDecision answered, as JSON with int64 values as strings. */
    decisionJson: p.text(),
    /** CheckBudget by tokens: model, input_tokens, max_output_tokens and
     * candidate_models as one string, compared on retry ("" for an estimate in nanos). */
    tokenFingerprint: p.text().default(""),
    /** The reservation's agent_id, compared on retry ("" for none). */
    agentId: p.string().length(idLengthMax).default(""),
  },
});

/** Per project: the sum and count of its hold rows (expired ones included
 * until swept), kept by increments in the same transaction as the hold row. A
 * decision subtracts the project's expired rows (an index range) from it. */
export const ProjectReservationsEntity = defineEntity({
  name: "ProjectReservations",
  tableName: "project_reservations",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    reservedNanos: p.bigint("bigint"),
    holdCount: p.bigint("bigint"),
    updatedAtMs: p.bigint("bigint"),
  },
});

/** Lifetime totals per (agent_id, model) pair ("" for a missing label),
 * incremented with the lifetime totals: one upsert per record serves both the
 * per-agent and the per-model breakdown (GROUP BY on read, which is rare). */
export const ProjectLabelTotalsEntity = defineEntity({
  name: "ProjectLabelTotals",
  tableName: "project_label_totals",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    agentId: p.string().primary().length(idLengthMax),
    model: p.string().primary().length(modelLengthMax),
    totalCostNanos: p.bigint("bigint"),
    inputTokens: p.bigint("bigint"),
    outputTokens: p.bigint("bigint"),
    recordCount: p.bigint("bigint"),
    updatedAtMs: p.bigint("bigint"),
    /** Sum of catalog_cost_nanos of the records that had a catalog price. */
    catalogCostNanos: p.bigint("bigint").default(0),
    /** Sum of cost_nanos of those same records (catalog vs recorded, like for like). */
    pricedCostNanos: p.bigint("bigint").default(0),
    /** Records with no catalog price. */
    unpricedRecordCount: p.bigint("bigint").default(0),
  },
});

/** Archived projects (ArchiveProject): one row per archived project, deleted
 * by UnarchiveProject or DeleteProject. A table of its own so archiving
 * touches no other row and every write checks one primary-key lookup. */
export const ProjectArchiveEntity = defineEntity({
  name: "ProjectArchive",
  tableName: "project_archives",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    archivedAtMs: p.bigint("bigint"),
  },
});

/** The price catalog (SetModelPrice): append-only entries, one per (model,
 * project_id, effective_from_ms), project_id "" for the global ones. The
 * unique index is also the lookup path of "the entry in effect". price_id is
 * what a cost record stores to say which entry priced it. */
export const ModelPriceEntity = defineEntity({
  name: "ModelPrice",
  tableName: "model_prices",
  properties: {
    priceId: p.bigint("bigint").primary().autoincrement(),
    model: p.string().length(modelLengthMax),
    projectId: p.string().length(idLengthMax).default(""),
    currency: p.string().length(3),
    inputNanosPerMillion: p.bigint("bigint"),
    cachedInputNanosPerMillion: p.bigint("bigint"),
    cacheWriteNanosPerMillion: p.bigint("bigint"),
    outputNanosPerMillion: p.bigint("bigint"),
    effectiveFromMs: p.bigint("bigint"),
    source: p.string().length(priceSourceLengthMax),
    createdAtMs: p.bigint("bigint"),
  },
  uniques: [{ name: "model_prices_model_project_id_effective_from_ms_unique", properties: ["model", "projectId", "effectiveFromMs"] }],
});

/** Per (project, agent): the agent's spend in the current day and month of
 * the project's time zone, for its daily and monthly caps (its lifetime spend
 * is in project_label_totals). Incremented by every record naming an agent,
 * so a cap set later counts the period's spend before it. */
export const AgentWindowsEntity = defineEntity({
  name: "AgentWindows",
  tableName: "agent_windows",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    agentId: p.string().primary().length(idLengthMax),
    dayPeriod: p.string().length(16),
    dayCostNanos: p.bigint("bigint"),
    monthPeriod: p.string().length(16),
    monthCostNanos: p.bigint("bigint"),
    updatedAtMs: p.bigint("bigint"),
  },
});

/** Recorded spend per rateBucketMs bucket of a level with a rate limit (a
 * project: agent_id ""; an agent's cap: its agent_id), kept only while the
 * rate is set; buckets that left the window are deleted by the sweeper. */
export const RateBucketEntity = defineEntity({
  name: "RateBucket",
  tableName: "rate_buckets",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    agentId: p.string().primary().length(idLengthMax),
    bucketMs: p.bigint("bigint").primary().index("rate_buckets_bucket_ms_index"),
    recordedNanos: p.bigint("bigint"),
  },
});

/** The holds a project's rate counts (the holds placed at it or below it
 * while it had a rate), deleted with the hold (settled, released) or by the
 * sweeper once expired. */
export const RateHoldEntity = defineEntity({
  name: "RateHold",
  tableName: "rate_holds",
  properties: {
    projectId: p.string().primary().length(idLengthMax),
    holdId: p.string().primary().length(idLengthMax).index("rate_holds_hold_id_index"),
    placedAtMs: p.bigint("bigint"),
    expiresAtMs: p.bigint("bigint").index("rate_holds_expires_at_ms_index"),
    amountNanos: p.bigint("bigint"),
  },
});

export const entities = [
  ProjectTotalsEntity,
  CostRecordEntity,
  ProjectBudgetEntity,
  HoldEntity,
  ReserveKeyEntity,
  ProjectReservationsEntity,
  ProjectLabelTotalsEntity,
  ProjectArchiveEntity,
  ModelPriceEntity,
  AgentWindowsEntity,
  RateBucketEntity,
  RateHoldEntity,
];
