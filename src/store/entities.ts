// MikroORM entities: the schema of Tally's durable state. Defined with
// defineEntity (no decorators, no reflection). Timestamps are integer epoch
// milliseconds and amounts are int64 (`bigint` columns read as JS bigint), so no
// value ever passes through a float. The committed migrations under
// ./migrations must match these definitions; test/store/migrations.test.ts
// fails when they drift apart.
import { defineEntity, p } from "@mikro-orm/core";
import { currencyDefault, idLengthMax, modelLengthMax } from "../limits.ts";

/** One row per project that ever recorded a cost: its lifetime totals, updated
 * by atomic increments in SQL. Checks read this row, never the ledger. */
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
  },
  uniques: [{ name: "cost_records_project_id_request_id_unique", properties: ["projectId", "requestId"] }],
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
  },
});

export const entities = [ProjectTotalsEntity, CostRecordEntity, ProjectBudgetEntity];
