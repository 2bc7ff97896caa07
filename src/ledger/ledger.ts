// The ledger: Tally's domain operations over a store, with every write through
// the unit of work. Inputs are already validated (src/api/validate.ts).
//
// Events (threshold crossings, exhaustion, budget changes) are logged and
// published to watchers here, after the unit of work resolved, i.e. after the
// transaction that produced them committed; the store reports each crossing to
// exactly one write, so each is logged and published once.
import { randomUUID } from "node:crypto";
import { deleteProjectRecordsMax, watchQueueDepthMax, watchSubscribersMax, watchSubscribersPerKeyMax } from "../limits.ts";
import { LogEvent, type Logger } from "../log.ts";
import { decideLimits, limitInputsOf, type BudgetDecision, type WindowedDecision } from "./budget.ts";
import { BudgetEventHub, type BudgetEvent, type Subscription } from "./events.ts";
import { formatNanos } from "./money.ts";
import {
  hasCalendarLimit,
  limitWarnings,
  projectLimitsView,
  thresholdsReached,
  type LimitWarning,
  type ProjectLimitsView,
  type ThresholdReached,
} from "./limit-views.ts";
import type {
  ArchiveOutcome,
  CurrencyReserved,
  CurrencySpend,
  DeleteOutcome,
  ProjectEntry,
  ProjectListQuery,
  ProjectPage,
  UnarchiveOutcome,
} from "./projects.ts";
import { decideNested, flatNested, type NestedDecision } from "./nested-decision.ts";
import { NoCatalogError, type PriceCatalogStore } from "./price-catalog.ts";
import { Prices } from "./prices.ts";
import type { LedgerStore } from "./store.ts";
import type { UnitOfWork } from "./unit-of-work.ts";
import {
  Window,
  type Breakdown,
  type Budget,
  type BudgetChange,
  type BudgetState,
  type CostEntry,
  type CostRecordQuery,
  type CostRecordView,
  type Dimension,
  type Hold,
  type ProjectTotals,
  type RecordOutcome,
  type ThresholdCrossing,
} from "./types.ts";

export type { ThresholdReached };

export interface CheckOutcome {
  /** The v1 view: lifetime limit and spend, remaining after holds, and the
   * overall verdict and reason. */
  decision: BudgetDecision;
  /** Every set limit and which one decided. */
  windowed: WindowedDecision;
  state: BudgetState;
  currency: string;
  /** The hold placed (reserve, when allowed); null otherwise. */
  hold: Hold | null;
  /** A retried reservation answered from its request_id: nothing reserved now. */
  duplicate: boolean;
  thresholdsReached: ThresholdReached[];
  /** The decision in its nested form: every level, and which one decided. */
  nested: NestedDecision;
}

export interface CostReport {
  /** Rolled up over the project's descendants. */
  state: BudgetState;
  /** The project's own calls (equal to state.totals without children). */
  own: ProjectTotals;
  breakdowns: Breakdown[];
}

export interface WatchStart {
  subscription: Subscription;
  /** The project as it stood right after subscribing. */
  snapshot: BudgetState;
  atMs: number;
}

export interface LedgerOptions {
  /** The clock of reads (the unit of work has the same one for writes). */
  now?: () => number;
  events?: BudgetEventHub;
  logger?: Logger;
  /** The price catalog (SetModelPrice, catalog-priced RecordCost, CheckBudget
   * by tokens); without it those calls are FAILED_PRECONDITION. */
  prices?: PriceCatalogStore;
}

export class Ledger {
  readonly #store: LedgerStore;
  readonly #uow: UnitOfWork;
  readonly #now: () => number;
  readonly #logger: Logger | undefined;
  /** Watchers of budget events. */
  readonly events: BudgetEventHub;
  /** The price catalog; null when the ledger was built without one. */
  readonly prices: Prices | null;

  constructor(store: LedgerStore, uow: UnitOfWork, options: LedgerOptions = {}) {
    this.#store = store;
    this.#uow = uow;
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger;
    this.prices = options.prices === undefined ? null : new Prices(options.prices, this.#now);
    this.events =
      options.events ??
      new BudgetEventHub({
        queueDepthMax: watchQueueDepthMax,
        subscribersMax: watchSubscribersMax,
        subscribersPerOwnerMax: watchSubscribersPerKeyMax,
      });
  }

  /** Records one call's cost (settling entry.holdId when given). An empty
   * requestId gets a fresh server key (such a write is not safe to retry,
   * which the contract tells clients). */
  async recordCost(entry: CostEntry, signal?: AbortSignal): Promise<RecordOutcome> {
    const withKey = await this.#priced(entry.requestId === "" ? { ...entry, requestId: `tally-${randomUUID()}` } : entry);
    const outcome = await this.#uow.submit({ kind: "record", entry: withKey }, signal);
    for (const crossing of outcome.crossings) this.#crossed(crossing);
    return {
      ...outcome,
      pricing: outcome.pricing ?? {
        costNanos: withKey.costNanos,
        catalogCostNanos: withKey.catalogCostNanos ?? null,
        priceId: withKey.priceId ?? "",
      },
    };
  }

  /** The entry with its catalog price (src/ledger/prices.ts): needed for a
   * CATALOG call, and beside a REPORTED one that names a model. */
  async #priced(entry: CostEntry): Promise<CostEntry> {
    if (this.prices === null) {
      if (entry.costSource === "catalog") throw new NoCatalogError();
      return entry;
    }
    if (entry.model === "") return entry;
    // The budget row (for the currency) is read only once a price was found.
    return this.prices.priceEntry(entry, async () => (await this.#store.getBudget(entry.projectId)).currency);
  }

  /** Whether the store keeps trees of budgets (parents). */
  get treesStored(): boolean {
    return this.#store.treesStored;
  }

  /** The project and its ancestors, nearest first (who may read it with a
   * key scoped to a parent: src/auth/auth.ts). */
  async projectChain(projectId: string): Promise<string[]> {
    const chain = await this.#store.getChainStates(projectId, this.#now());
    return chain.map((state) => state.budget.projectId);
  }

  getProjectCost(projectId: string): Promise<ProjectTotals> {
    return this.#store.getTotals(projectId);
  }

  /** Lifetime, day and month totals, active holds, and optional breakdowns. */
  async getCostReport(projectId: string, dimensions: readonly Dimension[], entriesMax: number): Promise<CostReport> {
    const state = await this.#store.getBudgetState(projectId, this.#now());
    // Without children the rolled-up totals are the project's own.
    const own = state.hasChildren === false ? state.totals : await this.#store.getOwnTotals(projectId);
    const breakdowns: Breakdown[] = [];
    for (const dimension of dimensions) breakdowns.push(await this.#store.getBreakdown(projectId, dimension, entriesMax));
    return { state, own, breakdowns };
  }

  /** The budget decision. Without `reserve` a read; with it a write that
   * decides and places the hold in one transaction, so concurrent reservers
   * can never together pass a limit. */
  async checkBudget(
    projectId: string,
    estimatedCostNanos: bigint,
    reserve?: { ttlMs: number; requestId?: string; tokenFingerprint?: string } | null,
    signal?: AbortSignal,
    agentId = "",
  ): Promise<CheckOutcome> {
    let state: BudgetState;
    let windowed: WindowedDecision;
    let hold: Hold | null = null;
    let duplicate = false;
    let nested: NestedDecision;
    if (reserve) {
      const request = {
        projectId,
        estimatedCostNanos,
        holdId: `hold-${randomUUID()}`,
        ttlMs: reserve.ttlMs,
        requestId: reserve.requestId ?? "",
        tokenFingerprint: reserve.tokenFingerprint ?? "",
        agentId,
      };
      const outcome = await this.#uow.submit({ kind: "reserve", request }, signal);
      ({ state, decision: windowed, hold } = outcome);
      duplicate = outcome.duplicate === true;
      // A store without trees (or a replayed reservation) decided one level.
      nested = outcome.nested ?? flatNested(projectId, windowed);
    } else {
      const nowMs = this.#now();
      const { chain, levels } = await this.#store.getDecisionLevels(projectId, agentId, nowMs);
      state = chain[0]!;
      windowed = decideLimits(limitInputsOf(state), state.reservedNanos, estimatedCostNanos);
      // One level without a rate is 0004's decision (a property test checks
      // decideNested agrees); the flat form skips the work.
      nested =
        levels.length === 1 && levels[0]!.rate === null ? flatNested(projectId, windowed) : decideNested(levels, estimatedCostNanos, nowMs);
    }
    const lifetime = windowed.limits.find((limit) => limit.window === Window.lifetime);
    const decision: BudgetDecision = {
      // The project's own lifetime figures; allowed only if every level allows.
      allowed: nested.allowed,
      reason: windowed.reason,
      limitNanos: state.budget.limitNanos,
      spentNanos: state.totals.totalCostNanos,
      remainingNanos: lifetime?.remainingNanos ?? 0n,
    };
    return {
      decision,
      windowed,
      state,
      currency: state.budget.currency,
      hold,
      duplicate,
      thresholdsReached: thresholdsReached(limitInputsOf(state), state.budget.alertThresholdsBps),
      nested,
    };
  }

  /** Gives back an active hold without spending. */
  releaseHold(projectId: string, holdId: string, signal?: AbortSignal): Promise<Hold> {
    return this.#uow.submit({ kind: "release", projectId, holdId }, signal);
  }

  async setProjectBudget(change: BudgetChange, signal?: AbortSignal): Promise<Budget> {
    const budget = await this.#uow.submit({ kind: "setBudget", change }, signal);
    const atMs = budget.updatedAtMs ?? this.#now();
    this.#logger?.info({
      event: LogEvent.budgetChanged,
      projectId: budget.projectId,
      limitNanos: budget.limitNanos.toString(),
      dailyLimitNanos: budget.dailyLimitNanos.toString(),
      monthlyLimitNanos: budget.monthlyLimitNanos.toString(),
      timeZone: budget.timeZone,
      alertThresholdsBps: budget.alertThresholdsBps,
    });
    this.events.publish({ kind: "limit_changed", projectId: budget.projectId, atMs, budget });
    return budget;
  }

  /** The set limits already used up in their current window (advice for
   * whoever just set them; a read, so a write in between may change it). */
  async limitWarnings(projectId: string): Promise<LimitWarning[]> {
    return limitWarnings(await this.#store.getBudgetState(projectId, this.#now()));
  }

  getProjectBudget(projectId: string): Promise<Budget> {
    return this.#store.getBudget(projectId);
  }

  /** One page of projects; `next` is set when more may follow. */
  async listProjects(query: ProjectListQuery): Promise<ProjectPage<ProjectEntry & ProjectLimitsView>> {
    if (!(Number.isInteger(query.limit) && query.limit >= 1))
      throw new Error(`listProjects: limit must be a positive integer, got ${query.limit}`);
    // One extra row tells whether another page exists, so the last page never
    // hands out a token that leads to an empty page.
    const nowMs = this.#now();
    const rows = await this.#store.listProjects({ ...query, limit: query.limit + 1 }, nowMs);
    const next = rows.length > query.limit ? rows[query.limit - 1]! : null;
    if (next !== null) rows.length = query.limit;
    // A project with a daily or monthly limit needs its current day's and
    // month's spend: one state read each (bounded by the page size), only for
    // those projects; the others are complete from the listing row.
    const entries = [];
    for (const entry of rows)
      entries.push({
        ...entry,
        ...projectLimitsView(entry, hasCalendarLimit(entry) ? await this.#store.getBudgetState(entry.totals.projectId, nowMs) : null),
      });
    return { entries, next: next === null ? null : { projectId: next.totals.projectId, spentNanos: next.totals.totalCostNanos } };
  }

  /** Hides a project from listings and refuses its writes; totals are kept. */
  async archiveProject(projectId: string, signal?: AbortSignal): Promise<ArchiveOutcome> {
    const outcome = await this.#uow.submit({ kind: "archive", projectId }, signal);
    this.#logger?.info({ event: LogEvent.projectArchived, projectId, archivedAtMs: outcome.archivedAtMs });
    return outcome;
  }

  async unarchiveProject(projectId: string, signal?: AbortSignal): Promise<UnarchiveOutcome> {
    const outcome = await this.#uow.submit({ kind: "unarchive", projectId }, signal);
    if (outcome.wasArchived) this.#logger?.info({ event: LogEvent.projectUnarchived, projectId });
    return outcome;
  }

  /** Removes a project with no records since `noRecordsSinceMs` for good. */
  async deleteProject(projectId: string, noRecordsSinceMs: number, signal?: AbortSignal): Promise<DeleteOutcome> {
    const outcome = await this.#uow.submit({ kind: "delete", projectId, noRecordsSinceMs, recordsMax: deleteProjectRecordsMax }, signal);
    this.#logger?.info({
      event: LogEvent.projectDeleted,
      projectId,
      totalCostNanos: outcome.totals.totalCostNanos.toString(),
      recordCount: outcome.totals.recordCount.toString(),
      deletedRecordCount: outcome.deletedRecordCount.toString(),
    });
    return outcome;
  }

  /** Spend per currency over every project (for metrics). */
  spendByCurrency(): Promise<CurrencySpend[]> {
    return this.#store.spendByCurrency();
  }

  /** Active holds per currency over every project, now (for metrics). */
  reservedByCurrency(): Promise<CurrencyReserved[]> {
    return this.#store.reservedByCurrency(this.#now());
  }

  listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]> {
    return this.#store.listCostRecords(query);
  }

  /** Subscribes to a project's events, then reads its state: nothing committed
   * after the snapshot can be missed (an event may repeat what the snapshot
   * already shows). */
  async watch(projectId: string, owner: string | null = null): Promise<WatchStart> {
    const subscription = this.events.subscribe(projectId, owner);
    try {
      const atMs = this.#now();
      return { subscription, snapshot: await this.#store.getBudgetState(projectId, atMs), atMs };
    } catch (error) {
      subscription.close();
      throw error;
    }
  }

  #crossed(crossing: ThresholdCrossing): void {
    const exhausted = crossing.thresholdBps >= 10_000;
    this.#logger?.info({
      event: exhausted ? LogEvent.budgetExhausted : LogEvent.budgetThresholdCrossed,
      projectId: crossing.projectId,
      window: crossing.window,
      period: crossing.period,
      thresholdBps: crossing.thresholdBps,
      limitNanos: crossing.limitNanos.toString(),
      spentNanos: crossing.spentNanos.toString(),
      spent: formatNanos(crossing.spentNanos),
      requestId: crossing.requestId,
    });
    const event: BudgetEvent = {
      kind: exhausted ? "exhausted" : "threshold_crossed",
      projectId: crossing.projectId,
      atMs: crossing.atMs,
      crossing,
    };
    this.events.publish(event);
  }
}
