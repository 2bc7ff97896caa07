// The ledger: Tally's domain operations over a store, with every write through
// the unit of work. Inputs are already validated (src/api/validate.ts).
import { randomUUID } from "node:crypto";
import { decideBudget, type BudgetDecision } from "./budget.ts";
import type { CurrencySpend, ProjectListQuery, ProjectPage } from "./projects.ts";
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

  /** One page of projects; `next` is set when more may follow. */
  async listProjects(query: ProjectListQuery): Promise<ProjectPage> {
    if (!(Number.isInteger(query.limit) && query.limit >= 1)) throw new Error(`listProjects: limit must be a positive integer, got ${query.limit}`);
    // One extra row tells whether another page exists, so the last page never
    // hands out a token that leads to an empty page.
    const entries = await this.#store.listProjects({ ...query, limit: query.limit + 1 });
    if (entries.length <= query.limit) return { entries, next: null };
    entries.length = query.limit;
    const last = entries[query.limit - 1]!;
    return { entries, next: { projectId: last.totals.projectId, spentNanos: last.totals.totalCostNanos } };
  }

  /** Spend per currency over every project (for metrics). */
  spendByCurrency(): Promise<CurrencySpend[]> {
    return this.#store.spendByCurrency();
  }
}
