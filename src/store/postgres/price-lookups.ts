// Catalog lookups on PostgreSQL, coalesced. Every RecordCost that names a
// model looks its price up before it is queued (decision 0010): on PostgreSQL
// that was one statement, one round trip and one pooled connection per call,
// beside the batch's four statements for all of them (decision 0012). Lookups
// that arrive in the same turn of the event loop are now sent as ONE
// statement over arrays (unnest ... WITH ORDINALITY, one LATERAL lookup per
// element). Each gets the row its own statement would have returned: the same
// rule (the project's override in effect at its time, else the global entry)
// read from one snapshot, and a failure fails every lookup of the statement
// as it would have failed each.
import type { Pool } from "pg";
import type { PriceEntry } from "../../ledger/pricing.ts";
import { priceLookupsPerStatementMax } from "../../limits.ts";
import { priceColumns, priceOfRow, type PriceRow } from "../price-rows.ts";

const m = (alias: string) =>
  priceColumns
    .split(", ")
    .map((c) => `${alias}.${c}`)
    .join(", ");

// $1 models, $2 projects, $3 times (parallel arrays); one row per lookup that
// found a price, `i` its 1-based position.
export const priceLookupsSql = `
SELECT k.i, p.* FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS k(model, project_id, at_ms, i)
CROSS JOIN LATERAL (
  (SELECT ${m("o")}, 0 AS rank FROM model_prices o WHERE o.model = k.model AND o.project_id = k.project_id AND o.effective_from_ms <= k.at_ms ORDER BY o.effective_from_ms DESC LIMIT 1)
  UNION ALL
  (SELECT ${m("g")}, 1 AS rank FROM model_prices g WHERE g.model = k.model AND g.project_id = '' AND g.effective_from_ms <= k.at_ms ORDER BY g.effective_from_ms DESC LIMIT 1)
  ORDER BY rank LIMIT 1
) p`;

interface Lookup {
  model: string;
  projectId: string;
  atMs: number;
  resolve: (price: PriceEntry | null) => void;
  reject: (error: unknown) => void;
}

export class PriceLookups {
  readonly #pool: Pool;
  readonly #mapError: (error: unknown) => unknown;
  #pending: Lookup[] = [];
  #scheduled = false;

  /** `mapError` turns a failed statement into what each lookup rejects with. */
  constructor(pool: Pool, mapError: (error: unknown) => unknown) {
    this.#pool = pool;
    this.#mapError = mapError;
  }

  lookup(model: string, projectId: string, atMs: number): Promise<PriceEntry | null> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ model, projectId, atMs, resolve, reject });
      if (this.#scheduled) return;
      this.#scheduled = true;
      // Everything parsed from the sockets in this turn joins the statement.
      setImmediate(() => {
        this.#scheduled = false;
        const pending = this.#pending;
        this.#pending = [];
        for (let i = 0; i < pending.length; i += priceLookupsPerStatementMax)
          void this.#send(pending.slice(i, i + priceLookupsPerStatementMax));
      });
    });
  }

  async #send(lookups: Lookup[]): Promise<void> {
    try {
      const { rows } = await this.#pool.query<PriceRow & { i: string }>({
        name: "tally_price_lookups",
        text: priceLookupsSql,
        values: [lookups.map((l) => l.model), lookups.map((l) => l.projectId), lookups.map((l) => String(l.atMs))],
      });
      const found = new Map(rows.map((row) => [Number(row.i), row]));
      lookups.forEach((l, index) => {
        const row = found.get(index + 1);
        l.resolve(row === undefined ? null : priceOfRow(row));
      });
    } catch (error) {
      const mapped = this.#mapError(error);
      for (const l of lookups) l.reject(mapped);
    }
  }
}
