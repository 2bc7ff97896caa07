// commitBatch of the PostgreSQL store timed in-process, statement by
// statement, for `npm run bench`'s PostgreSQL section: what a batch sends,
// how long each statement takes, and how long the batch holds its project
// locks (from the moment the lock statement returned to the moment COMMIT
// returned: advisory transaction locks are released at the end of COMMIT).
// Takes a checkout (this one, or a baseline) and imports that checkout's store.
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { PoolClient } from "pg";
import type { WriteOp } from "../../src/ledger/store.ts";

export interface BatchAnatomy {
  tree: string;
  size: number;
  projects: number;
  /** Statements per batch (the same every run). */
  statements: number;
  medianMs: number;
  lockHeldMedianMs: number;
  /** Median ms per statement kind (its first words or prepared name), summed over a batch. */
  byStatement: Array<{ statement: string; count: number; medianMs: number }>;
}

const kindOf = (text: string, name: string | undefined) => {
  if (/pg_advisory_xact_lock/.test(text)) return /^BEGIN/.test(text) ? "BEGIN + locks" : "locks";
  if (name) return name;
  return text.trim().split(/\s+/).slice(0, 3).join(" ");
};

export async function timeBatches(
  tree: string,
  url: string,
  sizes: number[],
  projectCounts: number[],
  runs: number,
): Promise<BatchAnatomy[]> {
  const orm = (await import(pathToFileURL(join(resolve(tree), "src/store/orm.ts")).href)) as typeof import("../../src/store/orm.ts");
  const init = await orm.initORM(url);
  const pool = (init.store as unknown as { native: import("pg").Pool }).native;
  let log: Array<{ kind: string; startMs: number; endMs: number }> = [];
  const wrapped = new WeakSet<object>();
  const connect = pool.connect.bind(pool) as (callback?: unknown) => Promise<PoolClient>;
  (pool as unknown as { connect: (callback?: unknown) => unknown }).connect = (callback?: unknown) => {
    if (callback !== undefined) return connect(callback);
    return connect().then((client) => {
      if (!wrapped.has(client)) {
        wrapped.add(client);
        const query = client.query.bind(client) as (config: unknown, ...rest: unknown[]) => Promise<unknown>;
        (client as unknown as { query: unknown }).query = async (config: unknown, ...rest: unknown[]) => {
          const text = typeof config === "string" ? config : (config as { text: string }).text;
          const name = typeof config === "string" ? undefined : (config as { name?: string }).name;
          const startMs = performance.now();
          try {
            return await query(config, ...rest);
          } finally {
            log.push({ kind: kindOf(text, name), startMs, endMs: performance.now() });
          }
        };
      }
      return client;
    });
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const out: BatchAnatomy[] = [];
  let n = 0;
  try {
    for (const projects of projectCounts) {
      for (const size of sizes) {
        const totals: number[] = [];
        const held: number[] = [];
        const perKind = new Map<string, number[]>();
        let statements = 0;
        for (let run = 0; run < runs + 1; run++) {
          const ops: WriteOp[] = Array.from({ length: size }, (_, i) => ({
            kind: "record",
            entry: {
              projectId: `timing-${projects}-${i % projects}`,
              requestId: `t${n++}`,
              costNanos: 1000n,
              inputTokens: 10n,
              outputTokens: 5n,
              agentId: "",
              model: "bench",
            },
          }));
          log = [];
          const startMs = performance.now();
          await init.store.commitBatch(ops, Date.now());
          if (run === 0) continue; // first run: prepares the statements on this connection
          totals.push(performance.now() - startMs);
          const lock = log.find((e) => e.kind.includes("locks"));
          const commit = log.findLast((e) => e.kind === "COMMIT");
          if (lock && commit) held.push(commit.endMs - lock.endMs);
          statements = log.length;
          const sums = new Map<string, number>();
          for (const e of log) sums.set(e.kind, (sums.get(e.kind) ?? 0) + (e.endMs - e.startMs));
          for (const [kind, ms] of sums) perKind.set(kind, [...(perKind.get(kind) ?? []), ms]);
        }
        const counts = new Map<string, number>();
        for (const e of log) counts.set(e.kind, (counts.get(e.kind) ?? 0) + 1);
        out.push({
          tree,
          size,
          projects,
          statements,
          medianMs: median(totals),
          lockHeldMedianMs: median(held),
          byStatement: [...perKind].map(([statement, ms]) => ({ statement, count: counts.get(statement) ?? 0, medianMs: median(ms) })),
        });
      }
    }
  } finally {
    await init.store.close();
  }
  return out;
}
