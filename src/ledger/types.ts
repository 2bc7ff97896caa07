// The ledger's domain values. Amounts and counters are bigint (exact int64);
// timestamps are epoch milliseconds.

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
}

export interface RecordOutcome {
  /** Totals right after this write (for a duplicate: after the original write). */
  totals: ProjectTotals;
  duplicate: boolean;
  requestId: string;
}

export interface Budget {
  projectId: string;
  /** 0 = enforcement disabled. */
  limitNanos: bigint;
  currency: string;
  configured: boolean;
  updatedAtMs: number | null;
}

export interface BudgetChange {
  projectId: string;
  limitNanos: bigint;
  /** null keeps the current currency. */
  currency: string | null;
}

export function zeroTotals(projectId: string): ProjectTotals {
  return { projectId, totalCostNanos: 0n, inputTokens: 0n, outputTokens: 0n, recordCount: 0n, updatedAtMs: null };
}

/** Whether a retry carries the same payload as the original record. */
export function sameEntry(a: CostEntry, b: CostEntry): boolean {
  return (
    a.projectId === b.projectId &&
    a.requestId === b.requestId &&
    a.costNanos === b.costNanos &&
    a.inputTokens === b.inputTokens &&
    a.outputTokens === b.outputTokens &&
    a.agentId === b.agentId &&
    a.model === b.model
  );
}
