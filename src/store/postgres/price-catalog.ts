// The price catalog on PostgreSQL: one statement per call on the pool (no
// transaction needed: an insert either takes the key or finds the entry that
// holds it, and entries never change). Lookups are one index range on the
// unique (model, project_id, effective_from_ms) constraint's index, those of
// one turn of the event loop sent together (./price-lookups.ts).
import type { Pool } from "pg";
import { StoreUnavailableError } from "../../ledger/errors.ts";
import { PriceConflictError, type NewPrice, type PriceCatalogStore, type PriceListQuery } from "../../ledger/price-catalog.ts";
import { samePrice, type PriceEntry } from "../../ledger/pricing.ts";
import { isPostgresUnavailable } from "./errors.ts";
import { PriceLookups } from "./price-lookups.ts";
import { priceColumns, priceOfRow, type PriceRow } from "../price-rows.ts";

export class PostgresPriceCatalog implements PriceCatalogStore {
  readonly #pool: Pool;
  readonly #lookups: PriceLookups;

  constructor(pool: Pool) {
    this.#pool = pool;
    this.#lookups = new PriceLookups(pool, (error) => (isPostgresUnavailable(error) ? new StoreUnavailableError(error, "read") : error));
  }

  async addPrice(price: NewPrice, nowMs: number): Promise<{ price: PriceEntry; duplicate: boolean }> {
    const inserted = await this.#query(
      "write",
      "tally_price_insert",
      `
      INSERT INTO model_prices (model, project_id, currency, input_nanos_per_million, cached_input_nanos_per_million,
        cache_write_nanos_per_million, output_nanos_per_million, effective_from_ms, source, created_at_ms)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
      ON CONFLICT (model, project_id, effective_from_ms) DO NOTHING
      RETURNING ${priceColumns}`,
      [
        price.model,
        price.projectId,
        price.currency,
        price.inputNanosPerMillion.toString(),
        price.cachedInputNanosPerMillion.toString(),
        price.cacheWriteNanosPerMillion.toString(),
        price.outputNanosPerMillion.toString(),
        String(price.effectiveFromMs),
        price.source,
        String(nowMs),
      ],
    );
    if (inserted.length === 1) return { price: priceOfRow(inserted[0]!), duplicate: false };
    const rows = await this.#query(
      "read",
      "tally_price_by_key",
      `SELECT ${priceColumns} FROM model_prices WHERE model = $1 AND project_id = $2 AND effective_from_ms = $3`,
      [price.model, price.projectId, String(price.effectiveFromMs)],
    );
    const existing = priceOfRow(rows[0]!);
    if (!samePrice(existing, price)) throw new PriceConflictError(existing);
    return { price: existing, duplicate: true };
  }

  async listPrices(query: PriceListQuery): Promise<PriceEntry[]> {
    const rows = await this.#query(
      "read",
      "tally_price_list",
      `
      SELECT ${priceColumns} FROM model_prices
      WHERE ($1 = '' OR model = $1) AND ($2 = '' OR project_id = $2)
        AND ($3::boolean IS NOT TRUE OR (model COLLATE "C", project_id COLLATE "C", effective_from_ms) > ($4::text COLLATE "C", $5::text COLLATE "C", $6::bigint))
      ORDER BY model COLLATE "C", project_id COLLATE "C", effective_from_ms LIMIT $7`,
      [
        query.model,
        query.projectId,
        query.after !== null,
        query.after?.model ?? "",
        query.after?.projectId ?? "",
        String(query.after?.effectiveFromMs ?? 0),
        query.limit,
      ],
    );
    return rows.map(priceOfRow);
  }

  /** Coalesced with the other lookups of this turn (./price-lookups.ts). */
  priceInEffect(model: string, projectId: string, atMs: number): Promise<PriceEntry | null> {
    return this.#lookups.lookup(model, projectId, atMs);
  }

  async #query(action: "read" | "write", name: string, text: string, values: unknown[]): Promise<PriceRow[]> {
    try {
      return (await this.#pool.query<PriceRow>({ name, text, values })).rows;
    } catch (error) {
      if (isPostgresUnavailable(error)) throw new StoreUnavailableError(error, action);
      throw error;
    }
  }
}
