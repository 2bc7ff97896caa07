// The ledger: Tally's domain operations over a store, with every write through
// the unit of work. Inputs are already validated (src/api/validate.ts).
import { randomUUID } from "node:crypto";
import { decideBudget, type BudgetDecision } from "./budget.ts";
import type { LedgerStore } from "./store.ts";
import type { UnitOfWork } from "./unit-of-work.ts";
import type { Budget, BudgetChange, CostEntry, ProjectTotals, RecordOutcome } from "./types.ts";

export interface CheckOutcome {
  decision: BudgetDecision;
  currency: string;
}

export class Ledger {
  readonly #store: LedgerStore;
  readonly #uow: UnitOfWork;

  constructor(store: LedgerStore, uow: UnitOfWork) {
    this.#store = store;
    this.#uow = uow;
  }

  /** Records one call's cost. An empty requestId gets a fresh server key (such a
   * write is not safe to retry, which the contract tells clients). */
  recordCost(entry: CostEntry, signal?: AbortSignal): Promise<RecordOutcome> {
    const withKey = entry.requestId === "" ? { ...entry, requestId: `tally-${randomUUID()}` } : entry;
    return this.#uow.submit({ kind: "record", entry: withKey }, signal);
  }

  getProjectCost(projectId: string): Promise<ProjectTotals> {
    return this.#store.getTotals(projectId);
  }

  async checkBudget(projectId: string, estimatedCostNanos: bigint): Promise<CheckOutcome> {
    const { budget, totals } = await this.#store.getBudgetAndTotals(projectId);
    return { decision: decideBudget(budget.limitNanos, totals.totalCostNanos, estimatedCostNanos), currency: budget.currency };
  }

  setProjectBudget(change: BudgetChange, signal?: AbortSignal): Promise<Budget> {
    return this.#uow.submit({ kind: "setBudget", change }, signal);
  }

  getProjectBudget(projectId: string): Promise<Budget> {
    return this.#store.getBudget(projectId);
  }
}
