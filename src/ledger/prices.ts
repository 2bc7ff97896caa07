// Prices in the ledger's terms: the catalog (add, list, the entry in effect),
// a call priced from its token usage, and the worst-case estimates CheckBudget
// decides on and advises from. Pure arithmetic is in pricing.ts; storage is
// the PriceCatalogStore port.
import { decideLimits, limitInputsOf } from "./budget.ts";
import { occurredAtFutureMsMax, occurredAtPastMsMax } from "../limits.ts";
import {
  NoPriceError,
  OccurredAtRangeError,
  PriceCurrencyError,
  type NewPrice,
  type PriceCatalogStore,
  type PriceListQuery,
} from "./price-catalog.ts";
import { CostOverflowError, priceUsage, worstCaseCost, type PriceEntry } from "./pricing.ts";
import type { BudgetState, CostEntry } from "./types.ts";

/** One model's worst-case estimate for a call about to be made. */
export interface ModelEstimate {
  model: string;
  estimatedCostNanos: bigint;
  price: PriceEntry;
}

export class Prices {
  readonly #store: PriceCatalogStore;
  readonly #now: () => number;

  constructor(store: PriceCatalogStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  setPrice(price: NewPrice): Promise<{ price: PriceEntry; duplicate: boolean }> {
    return this.#store.addPrice(price, this.#now());
  }

  /** One page; `more` says whether another follows (one extra row read). */
  async listPrices(query: PriceListQuery): Promise<{ prices: PriceEntry[]; more: boolean }> {
    const prices = await this.#store.listPrices({ ...query, limit: query.limit + 1 });
    const more = prices.length > query.limit;
    if (more) prices.length = query.limit;
    return { prices, more };
  }

  /** The entry in effect for the model and project at atMs, in the project's
   * currency; NoPriceError or PriceCurrencyError otherwise (never a price of 0). */
  async priceFor(model: string, projectId: string, currency: string, atMs: number): Promise<PriceEntry> {
    const price = await this.#store.priceInEffect(model, projectId, atMs);
    if (price === null) throw new NoPriceError(model, projectId, atMs);
    if (price.currency !== currency) throw new PriceCurrencyError(model, projectId, price.currency, currency);
    return price;
  }

  /** The entry as it is to be recorded: a CATALOG call priced (NoPriceError
   * when nothing prices it: never 0), a REPORTED one with the catalog's cost
   * beside it when an entry prices its model (none, or one so large it leaves
   * int64, leaves the record without a catalog cost: the reported cost is what
   * counts). Priced at occurred_at, or now. */
  async priceEntry(entry: CostEntry, currencyOf: () => Promise<string>): Promise<CostEntry> {
    const nowMs = this.#now();
    const occurredAtMs = entry.occurredAtMs ?? null;
    if (occurredAtMs !== null && (occurredAtMs > nowMs + occurredAtFutureMsMax || occurredAtMs < nowMs - occurredAtPastMsMax)) {
      throw new OccurredAtRangeError(occurredAtMs, nowMs, occurredAtFutureMsMax, occurredAtPastMsMax);
    }
    const atMs = occurredAtMs ?? nowMs;
    const usage = {
      inputTokens: entry.inputTokens,
      cachedInputTokens: entry.cachedInputTokens ?? 0n,
      cacheWriteTokens: entry.cacheWriteTokens ?? 0n,
      outputTokens: entry.outputTokens,
    };
    if (entry.costSource === "catalog") {
      const price = await this.priceFor(entry.model, entry.projectId, await currencyOf(), atMs);
      const costNanos = priceUsage(price, usage);
      return { ...entry, costNanos, catalogCostNanos: costNanos, priceId: price.priceId };
    }
    const none = { ...entry, catalogCostNanos: null, priceId: "" };
    const price = await this.#store.priceInEffect(entry.model, entry.projectId, atMs);
    if (price === null || price.currency !== (await currencyOf())) return none;
    try {
      return { ...entry, catalogCostNanos: priceUsage(price, usage), priceId: price.priceId };
    } catch (error) {
      if (error instanceof CostOverflowError) return none;
      throw error;
    }
  }

  /** Worst-case estimates of each model, in order, at the time of the check. */
  async estimates(
    models: readonly string[],
    projectId: string,
    currency: string,
    inputTokens: bigint,
    maxOutputTokens: bigint,
  ): Promise<ModelEstimate[]> {
    const atMs = this.#now();
    const estimates: ModelEstimate[] = [];
    for (const model of models) {
      const price = await this.priceFor(model, projectId, currency, atMs);
      estimates.push({ model, estimatedCostNanos: worstCaseCost(price, inputTokens, maxOutputTokens), price });
    }
    return estimates;
  }
}

/** Whether an estimate fits every set limit in `state` (the decision rule of
 * CheckBudget, applied to each candidate on the state the decision saw). */
export function fitsEveryLimit(state: BudgetState, estimatedCostNanos: bigint): boolean {
  return decideLimits(limitInputsOf(state), state.reservedNanos, estimatedCostNanos).allowed;
}

/** The first estimate that fits, in order of preference; "" when none does. */
export function advisedModel(state: BudgetState, estimates: readonly ModelEstimate[]): string {
  return estimates.find((estimate) => fitsEveryLimit(state, estimate.estimatedCostNanos))?.model ?? "";
}
