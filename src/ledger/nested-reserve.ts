// A reservation over a tree of budgets, decided from the states of the
// project and of every ancestor read under the write's lock (nearest first):
// refused (nothing is written), refused for too many active holds at the
// project, or a hold to place at every level at once. The store writes the
// hold and the reserved increment of every level in the same transaction, so
// a hold is counted at all levels or at none
// (docs/decisions/0013-nested-budgets.md).
import { decideLimits, limitInputsOf } from "./budget.ts";
import { decideNested, projectLevel, type LevelInput, type NestedDecision } from "./nested-decision.ts";
import { planReserve, type ReservePlan } from "./reserve-plan.ts";
import type { BudgetState, HoldRequest } from "./types.ts";

export type NestedReservePlan = ReservePlan & { nested: NestedDecision };

/** `chain`: the project's state first, then each ancestor's rolled-up state;
 * `levels`: the levels to decide (src/ledger/cap-levels.ts: with the agent's
 * cap and the rates), the chain's projects alone when absent. */
export function planNestedReserve(
  request: HoldRequest,
  chain: readonly BudgetState[],
  nowMs: number,
  levels?: readonly LevelInput[],
): NestedReservePlan {
  const own = chain[0];
  if (own === undefined || own.budget.projectId !== request.projectId)
    throw new Error(`invariant: the chain of a reservation of "${request.projectId}" does not start with it`);
  const nested = decideNested(levels ?? chain.map((state) => projectLevel(state)), request.estimatedCostNanos, nowMs);
  if (!nested.allowed) {
    // The project's own limits, as stored for the v1 fields; the nested
    // decision says which level refused.
    const decision = decideLimits(limitInputsOf(own), own.reservedNanos, request.estimatedCostNanos);
    return { kind: "refused", outcome: { decision: { ...decision, allowed: false }, state: own, hold: null, nested }, nested };
  }
  // Every level allows: the project's own rule allows too, and places the
  // hold (or refuses for the count of active holds).
  return { ...planReserve(request, own, nowMs), nested };
}
