// What a reservation does, decided from the project's state read under its
// write lock: refused (the decision says why, nothing is written), refused for
// too many active holds, or a hold to place. The store then writes the hold,
// the reservation increment (which alone can still refuse: int64 overflow) and
// the idempotency key, in the same transaction.
import { activeHoldsPerProjectMax } from "../limits.ts";
import { decideLimits, limitInputsOf, type WindowedDecision } from "./budget.ts";
import { HoldLimitError } from "./errors.ts";
import type { ReserveOutcome } from "./store.ts";
import type { BudgetState, Hold, HoldRequest } from "./types.ts";

export type ReservePlan =
  | { kind: "refused"; outcome: ReserveOutcome }
  | { kind: "tooManyHolds"; error: HoldLimitError }
  | { kind: "place"; decision: WindowedDecision; state: BudgetState; hold: Hold };

export function planReserve(request: HoldRequest, state: BudgetState, nowMs: number): ReservePlan {
  const decision = decideLimits(limitInputsOf(state), state.reservedNanos, request.estimatedCostNanos);
  if (!decision.allowed) return { kind: "refused", outcome: { decision, state, hold: null } };
  if (state.activeHoldCount >= BigInt(activeHoldsPerProjectMax))
    return { kind: "tooManyHolds", error: new HoldLimitError(request.projectId, activeHoldsPerProjectMax) };
  const hold: Hold = {
    holdId: request.holdId,
    projectId: request.projectId,
    amountNanos: request.estimatedCostNanos,
    createdAtMs: nowMs,
    expiresAtMs: nowMs + request.ttlMs,
  };
  return { kind: "place", decision, state, hold };
}
