// Catalog lookups made in the same turn of the event loop, on both stores:
// each gets exactly the entry the catalog's rule gives (the ledger's
// priceInEffect over every entry, as oracle). On PostgreSQL they go as one
// statement per priceLookupsPerStatementMax lookups (src/store/postgres/
// price-lookups.ts), counted on the pool.
import { afterEach, describe, expect, it } from "vitest";
import type { NewPrice } from "../../src/ledger/price-catalog.ts";
import { priceInEffect, type PriceEntry } from "../../src/ledger/pricing.ts";
import { priceLookupsPerStatementMax } from "../../src/limits.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import type { PostgresLedgerStore } from "../../src/store/postgres/store.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { tempDatabaseUrl } from "../helpers.ts";

const price = (model: string, projectId: string, effectiveFromMs: number, inputNanosPerMillion: bigint): NewPrice => ({
  model,
  projectId,
  currency: "USD",
  inputNanosPerMillion,
  cachedInputNanosPerMillion: 0n,
  cacheWriteNanosPerMillion: 0n,
  outputNanosPerMillion: 1n,
  effectiveFromMs,
  source: "test",
});

for (const kind of databaseKinds)
  describe(`price lookups on ${kind}`, () => {
    const databases = new TestDatabases(kind, tempDatabaseUrl);
    let opened: InitializedStore | undefined;
    afterEach(async () => {
      await opened?.store.close();
      opened = undefined;
      await databases.cleanup();
    });

    it("answers every lookup of one turn with the entry in effect for its model, project and time, overrides first", async () => {
      opened = await initORM(await databases.scratch());
      const catalog = opened.prices;
      const entries: PriceEntry[] = [];
      for (const p of [
        price("m1", "", 1_000, 10n),
        price("m1", "", 2_000, 20n),
        price("m1", "acme", 1_500, 15n),
        price("m2", "", 3_000, 30n),
        price("m2", "beta", 500, 5n),
      ]) {
        entries.push((await catalog.addPrice(p, 100)).price);
      }
      let statements = 0;
      if (kind === "postgresql") {
        const pool = (opened.store as PostgresLedgerStore).native as unknown as { query: (...args: unknown[]) => unknown };
        const query = pool.query.bind(pool);
        pool.query = (config: unknown, ...rest: unknown[]) => {
          if ((config as { name?: string }).name === "tally_price_lookups") statements++;
          return query(config, ...rest);
        };
      }
      const asks: Array<[string, string, number]> = [];
      for (const model of ["m1", "m2", "m3"])
        for (const projectId of ["acme", "beta", "other"])
          for (const atMs of [499, 500, 1_000, 1_499, 1_500, 1_999, 2_000, 3_000, 9_000]) asks.push([model, projectId, atMs]);
      // Enough for two statements on PostgreSQL.
      while (asks.length <= priceLookupsPerStatementMax) asks.push(...asks.slice(0, 81));
      const answers = await Promise.all(asks.map(([model, projectId, atMs]) => catalog.priceInEffect(model, projectId, atMs)));
      answers.forEach((answer, i) => {
        const [model, projectId, atMs] = asks[i] as [string, string, number];
        expect(answer?.priceId ?? null, `${model} ${projectId} ${atMs}`).toBe(
          priceInEffect(entries, model, projectId, atMs)?.priceId ?? null,
        );
      });
      expect(answers.filter((a) => a !== null).length).toBeGreaterThan(asks.length / 3);
      if (kind === "postgresql") expect(statements).toBe(Math.ceil(asks.length / priceLookupsPerStatementMax));
      // A lookup alone is answered too (one statement of one).
      expect((await catalog.priceInEffect("m1", "acme", 1_600))?.inputNanosPerMillion).toBe(15n);
    });
  });
