// The tables of a Tally database that hold its state, as the operator commands
// see them: `tally migrate-data` copies exactly these (every column the source
// has, found at run time), `tally check` counts their rows. A table added to
// src/store/entities.ts must be added here too (test/ops/tables.test.ts fails
// until it is): that is all it takes for migrate-data to copy it.

export interface CopiedTable {
  table: string;
  /** Its primary key: the order rows are copied in. */
  key: readonly string[];
  /** "append": rows are only ever added, in key order (a new row has a higher
   * key), so an interrupted copy resumes after the target's last key.
   * "replace": rows change in place, so each run copies the table whole, in
   * one transaction. */
  mode: "append" | "replace";
  /** A serial column: on PostgreSQL its sequence is moved past the copied
   * values, so the next row gets a new one. */
  serial?: string;
}

export const copiedTables: readonly CopiedTable[] = [
  { table: "project_budgets", key: ["project_id"], mode: "replace" },
  { table: "project_archives", key: ["project_id"], mode: "replace" },
  { table: "model_prices", key: ["price_id"], mode: "replace", serial: "price_id" },
  { table: "project_totals", key: ["project_id"], mode: "replace" },
  { table: "project_label_totals", key: ["project_id", "agent_id", "model"], mode: "replace" },
  { table: "project_reservations", key: ["project_id"], mode: "replace" },
  { table: "holds", key: ["hold_id"], mode: "replace" },
  { table: "reserve_keys", key: ["project_id", "request_id"], mode: "replace" },
  { table: "agent_windows", key: ["project_id", "agent_id"], mode: "replace" },
  { table: "rate_buckets", key: ["project_id", "agent_id", "bucket_ms"], mode: "replace" },
  { table: "rate_holds", key: ["project_id", "hold_id"], mode: "replace" },
  { table: "cost_records", key: ["id"], mode: "append", serial: "id" },
];
