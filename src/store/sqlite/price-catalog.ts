// The price catalog on SQLite. Catalog writes are rare admin calls: they run
// on the main connection in their own short IMMEDIATE transaction, and
// SQLite's write lock (with busy_timeout) orders them with the writer thread's
// batches. Lookups are one index range on the unique (model, project_id,
// effective_from_ms) index.
import type Database from "better-sqlite3";
import { StoreUnavailableError } from "../../ledger/errors.ts";
import { PriceConflictError, type NewPrice, type PriceCatalogStore, type PriceListQuery } from "../../ledger/price-catalog.ts";
import { samePrice, type PriceEntry } from "../../ledger/pricing.ts";
import { priceColumns, priceOfRow, type PriceRow } from "../price-rows.ts";

export class SqlitePriceCatalog implements PriceCatalogStore {
  readonly #db: Database.Database;
  readonly #insert: Database.Statement;
  readonly #byKey: Database.Statement;
  readonly #inEffect: Database.Statement;
  readonly #add: (price: NewPrice, nowMs: number) => { price: PriceEntry; duplicate: boolean };

  constructor(db: Database.Database) {
    this.#db = db;
    const prepare = (sql: string) => db.prepare(sql).safeIntegers(true);
    this.#insert = prepare(`
      INSERT INTO model_prices (model, project_id, currency, input_nanos_per_million, cached_input_nanos_per_million,
        cache_write_nanos_per_million, output_nanos_per_million, effective_from_ms, source, created_at_ms)
      VALUES (@model, @projectId, @currency, @input, @cachedInput, @cacheWrite, @output, @effectiveFromMs, @source, @nowMs)
      ON CONFLICT (model, project_id, effective_from_ms) DO NOTHING
      RETURNING ${priceColumns}`);
    this.#byKey = prepare(`SELECT ${priceColumns} FROM model_prices WHERE model = ? AND project_id = ? AND effective_from_ms = ?`);
    this.#inEffect = prepare(`
      SELECT ${priceColumns} FROM model_prices
      WHERE model = ? AND project_id = ? AND effective_from_ms <= ?
      ORDER BY effective_from_ms DESC LIMIT 1`);
    this.#add = db.transaction((price: NewPrice, nowMs: number) => {
      const inserted = this.#insert.get({
        model: price.model,
        projectId: price.projectId,
        currency: price.currency,
        input: price.inputNanosPerMillion,
        cachedInput: price.cachedInputNanosPerMillion,
        cacheWrite: price.cacheWriteNanosPerMillion,
        output: price.outputNanosPerMillion,
        effectiveFromMs: BigInt(price.effectiveFromMs),
        source: price.source,
        nowMs: BigInt(nowMs),
      }) as PriceRow | undefined;
      if (inserted !== undefined) return { price: priceOfRow(inserted), duplicate: false };
      const existing = priceOfRow(this.#byKey.get(price.model, price.projectId, BigInt(price.effectiveFromMs)) as PriceRow);
      if (!samePrice(existing, price)) throw new PriceConflictError(existing);
      return { price: existing, duplicate: true };
    }).immediate;
  }

  async addPrice(price: NewPrice, nowMs: number): Promise<{ price: PriceEntry; duplicate: boolean }> {
    return unavailableOnSqliteError("write", () => this.#add(price, nowMs));
  }

  async listPrices(query: PriceListQuery): Promise<PriceEntry[]> {
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: query.limit };
    if (query.model !== "") {
      where.push("model = @model");
      params.model = query.model;
    }
    if (query.projectId !== "") {
      where.push("project_id = @projectId");
      params.projectId = query.projectId;
    }
    if (query.after !== null) {
      where.push("(model, project_id, effective_from_ms) > (@afterModel, @afterProject, @afterMs)");
      Object.assign(params, {
        afterModel: query.after.model,
        afterProject: query.after.projectId,
        afterMs: BigInt(query.after.effectiveFromMs),
      });
    }
    const sql = `SELECT ${priceColumns} FROM model_prices ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY model, project_id, effective_from_ms LIMIT @limit`;
    return unavailableOnSqliteError("read", () => (this.#db.prepare(sql).safeIntegers(true).all(params) as PriceRow[]).map(priceOfRow));
  }

  async priceInEffect(model: string, projectId: string, atMs: number): Promise<PriceEntry | null> {
    return unavailableOnSqliteError("read", () => {
      const own = this.#inEffect.get(model, projectId, BigInt(atMs)) as PriceRow | undefined;
      if (own !== undefined) return priceOfRow(own);
      const global = this.#inEffect.get(model, "", BigInt(atMs)) as PriceRow | undefined;
      return global === undefined ? null : priceOfRow(global);
    });
  }
}

/** Busy beyond busy_timeout, I/O errors, a closed handle: UNAVAILABLE to the
 * caller; anything else (a bug, a domain error) stays what it is. */
function unavailableOnSqliteError<T>(action: "read" | "write", run: () => T): T {
  try {
    return run();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if ((typeof code === "string" && code.startsWith("SQLITE_")) || /database connection is not open/.test((error as Error).message)) {
      throw new StoreUnavailableError(error, action);
    }
    throw error;
  }
}
