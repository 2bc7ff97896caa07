import type { LimitDecision, WindowedDecision } from "../ledger/budget.ts";
import { IdempotencyConflictError, ReservationEndedError } from "../ledger/errors.ts";
import { isHoldActive } from "../ledger/refusals.ts";
import type { OpResult, ReserveOutcome } from "../ledger/store.ts";
import type { BudgetState, HoldRequest } from "../ledger/types.ts";
import { type HoldRow, type Int8, holdFactsFromRow, holdFromRow } from "./rows.ts";

/** reserve_keys: which hold a reservation's request_id placed, and its answer. */
export interface ReserveKeyRow<N extends Int8 = Int8> {
  project_id: string;
  request_id: string;
  hold_id: string;
  amount_nanos: N;
  ttl_ms: N;
  created_at_ms: N;
  expires_at_ms: N;
  decision_json: string;
  token_fingerprint: string;
  /** Absent before agent caps (migration 20261205400000): none. */
  agent_id?: string;
}

/** A decision as reserve_keys.decision_json stores it: int64 values as decimal
 * strings (JSON numbers would pass through a float). */
export function encodeDecision(decision: WindowedDecision): string {
  const limit = (l: LimitDecision) => ({
    ...l,
    limitNanos: String(l.limitNanos),
    spentNanos: String(l.spentNanos),
    reservedNanos: String(l.reservedNanos),
    remainingNanos: String(l.remainingNanos),
  });
  return JSON.stringify({ ...decision, reservedNanos: String(decision.reservedNanos), limits: decision.limits.map(limit) });
}

export function decodeDecision(json: string): WindowedDecision {
  type Stored = Omit<WindowedDecision, "reservedNanos" | "limits"> & {
    reservedNanos: string;
    limits: Array<
      Omit<LimitDecision, "limitNanos" | "spentNanos" | "reservedNanos" | "remainingNanos"> &
        Record<"limitNanos" | "spentNanos" | "reservedNanos" | "remainingNanos", string>
    >;
  };
  const stored = JSON.parse(json) as Stored;
  return {
    ...stored,
    reservedNanos: BigInt(stored.reservedNanos),
    limits: stored.limits.map((l) => ({
      ...l,
      limitNanos: BigInt(l.limitNanos),
      spentNanos: BigInt(l.spentNanos),
      reservedNanos: BigInt(l.reservedNanos),
      remainingNanos: BigInt(l.remainingNanos),
    })),
  };
}

/** The answer to a reservation whose request_id is already in reserve_keys:
 * the same hold and decision while that hold is active (`hold` is its row, or
 * undefined once settled, released or swept); otherwise an error, and nothing
 * is reserved either way. `state` is the project's state now. */
export function replayReserve(
  request: HoldRequest,
  key: ReserveKeyRow,
  hold: HoldRow | undefined,
  state: BudgetState,
  nowMs: number,
): OpResult {
  const differences: string[] = [];
  const fingerprint = request.tokenFingerprint ?? "";
  if (key.token_fingerprint !== fingerprint)
    differences.push(
      `model and tokens: reserved ${key.token_fingerprint || "(an estimate in nanos)"}, now ${fingerprint || "(an estimate in nanos)"}`,
    );
  // By tokens the estimate follows from the fingerprint at the price of the
  // first call's time: a retry after a price change is still the same call.
  else if (fingerprint === "" && BigInt(key.amount_nanos) !== request.estimatedCostNanos)
    differences.push(`estimated_cost_nanos: reserved ${key.amount_nanos}, now ${request.estimatedCostNanos}`);
  if (BigInt(key.ttl_ms) !== BigInt(request.ttlMs)) differences.push(`hold_ttl: reserved ${key.ttl_ms} ms, now ${request.ttlMs} ms`);
  const agentId = request.agentId ?? "";
  if ((key.agent_id ?? "") !== agentId) differences.push(`agent_id: reserved "${key.agent_id ?? ""}", now "${agentId}"`);
  if (differences.length > 0)
    return { ok: false, error: new IdempotencyConflictError(request.projectId, request.requestId, differences.join("; "), "reserved") };
  if (hold === undefined || !isHoldActive(holdFactsFromRow(hold), request.projectId, nowMs)) {
    const expiresAtMs = Number(key.expires_at_ms);
    const why = expiresAtMs <= nowMs ? `it expired at ${new Date(expiresAtMs).toISOString()}` : "it was settled by RecordCost or released";
    return { ok: false, error: new ReservationEndedError(request.projectId, request.requestId, key.hold_id, why) };
  }
  const outcome: ReserveOutcome = { decision: decodeDecision(key.decision_json), state, hold: holdFromRow(hold), duplicate: true };
  return { ok: true, value: outcome };
}
