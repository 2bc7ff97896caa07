// Nested budgets' limits (issue 18, docs/decisions/0013-nested-budgets.md),
// with the reason for each value; exported through ./limits.ts with every
// other limit.

/** Nested budgets: the most levels a tree of budgets may have (a root at level
 * 1). The organisation > team > project uses three; the fourth covers a
 * business unit or a per-environment split. Each level adds a locked totals
 * row, an upsert and an alert check to every write below it, so the depth
 * bounds what one RecordCost or reservation costs (the benchmark compares a
 * depth-4 project with a flat one). */
export const budgetTreeDepthMax = 4;
/** Per-agent cap overrides of one project, replaced as a whole list by one
 * SetProjectBudget: an entry is at most ~180 bytes (a 128-character agent_id
 * and four int64s), so 256 of them (~46 KiB) fit under requestBytesMax with
 * the rest of the request. Fleets with more agents use the project's default
 * agent caps and override only the exceptions. */
export const agentLimitOverridesMax = 256;
/** The runaway guard's window: spend rates are "at most N nanos per rolling
 * 60 s" (recorded plus reserved), the period the issue names. Long enough to
 * smooth one slow call, short enough that a looping agent is stopped within a
 * minute, long before a daily or lifetime limit is gone. */
export const rateWindowMs = 60_000;
/** Records count toward a rate in buckets this wide (one row per level and
 * bucket, not per record), each as if at the bucket's last millisecond: a
 * rate never counts a record for less than its 60 s, at most 1 s longer. */
export const rateBucketMs = 1_000;

/** Parent links a PostgreSQL replica remembers (src/store/postgres/tree-writes.ts)
 * to lock a batch's ancestors with its projects in the first attempt: a
 * wrong or missing entry costs one retry of the batch (the links read under
 * the locks are checked and replace it), never a wrong write. An entry is two
 * ids (< 300 bytes), so this bounds the map near 20 MiB; past it the map is
 * cleared and relearned. */
export const postgresParentCacheEntriesMax = 65_536;
