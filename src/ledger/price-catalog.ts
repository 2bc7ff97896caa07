// The price catalog port and its domain errors. Entries are append-only (a new
// price is a new entry with a later effective_from), so reading "the entry in
// effect" needs no transaction with the write it prices: an entry never
// changes once written, and the record stores which one priced it.
import type { PriceEntry } from "./pricing.ts";

/** A new entry as SetModelPrice asks for it (validated). */
export type NewPrice = Omit<PriceEntry, "priceId" | "createdAtMs">;

/** A page request over the catalog in (model, projectId, effectiveFromMs) order. */
export interface PriceListQuery {
  /** "" for every model. */
  model: string;
  /** "" for every entry, else only this project's overrides. */
  projectId: string;
  after: { model: string; projectId: string; effectiveFromMs: number } | null;
  limit: number;
}

export interface PriceCatalogStore {
  /** Inserts the entry, or answers with the stored one and duplicate = true
   * when an identical entry has the same key (model, projectId,
   * effectiveFromMs); PriceConflictError when that key holds a different one. */
  addPrice(price: NewPrice, nowMs: number): Promise<{ price: PriceEntry; duplicate: boolean }>;
  listPrices(query: PriceListQuery): Promise<PriceEntry[]>;
  /** The project's own latest entry for the model with effectiveFromMs <=
   * atMs, else the latest such global one (priceInEffect's rule, by index
   * range), else null. */
  priceInEffect(model: string, projectId: string, atMs: number): Promise<PriceEntry | null>;
}

/** SetModelPrice reused a key (model, project, effective_from) for a different entry. */
export class PriceConflictError extends Error {
  override name = "PriceConflictError";
  constructor(existing: PriceEntry) {
    const scope = existing.projectId === "" ? "globally" : `for project "${existing.projectId}"`;
    super(
      `model "${existing.model}" already has a different price ${scope} from ${new Date(existing.effectiveFromMs).toISOString()} (price_id ${existing.priceId}); entries are never edited in place: add a new entry with a later effective_from`,
    );
  }
}

/** No catalog entry prices this model for this project at that time. */
export class NoPriceError extends Error {
  override name = "NoPriceError";
  constructor(model: string, projectId: string, atMs: number) {
    super(
      `model "${model}" has no price in the catalog for project "${projectId}" at ${new Date(atMs).toISOString()}; nothing was written (add one with SetModelPrice or \`tally prices set\`, or report cost_nanos yourself)`,
    );
  }
}

/** The entry in effect is in another currency than the project's. */
export class PriceCurrencyError extends Error {
  override name = "PriceCurrencyError";
  constructor(model: string, projectId: string, priceCurrency: string, projectCurrency: string) {
    super(
      `model "${model}" is priced in ${priceCurrency} but project "${projectId}" counts in ${projectCurrency}; nothing was written (add a ${projectCurrency} price for this project)`,
    );
  }
}

/** RecordCost's occurred_at is too far from the server's clock to be the
 * time of a call being recorded now. */
export class OccurredAtRangeError extends Error {
  override name = "OccurredAtRangeError";
  constructor(occurredAtMs: number, nowMs: number, futureMsMax: number, pastMsMax: number) {
    super(
      `occurred_at ${new Date(occurredAtMs).toISOString()} is more than ${futureMsMax / 60_000} minutes after or ${pastMsMax / 3_600_000} hours before the server's time ${new Date(nowMs).toISOString()}; nothing was recorded`,
    );
  }
}

/** A catalog-priced call reached a ledger built without a catalog. */
export class NoCatalogError extends Error {
  override name = "NoCatalogError";
  constructor() {
    super("this server has no price catalog: cost_source CATALOG cannot be priced; nothing was recorded");
  }
}
