// The PostgreSQL part of `npm run bench` (issue 22): RecordCost through Tally
// on PostgreSQL (one replica, and three replicas on one database with the
// load split over them) beside Tally on SQLite, and pgbench sending the same
// work one transaction per write (bench/lib/pgbench.ts), for 64 projects and
// for one hot project, at each concurrency; cells interleaved (every system in
// turn, each round), medians reported with the spread of the rounds.
//
// After every run the database is checked (bench/lib/ledger-check.ts): ledger,
// totals and breakdown agree exactly, every record's totals-after is its
// running total, and no acknowledged write is missing. CPU per write of Tally
// (all replicas) and of PostgreSQL (every postgres process: backends, WAL
// writer, checkpointer) comes from /proc before and after each run.
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { initORM } from "../../src/store/orm.ts";
import type { LoadResult, LoadSpec } from "../load/types.ts";
import { checkPostgresLedger, checkSqliteLedger, type LedgerCheck } from "./ledger-check.ts";
import { runPgbench } from "./pgbench.ts";
import { timeBatches, type BatchAnatomy } from "./pg-batch-timing.ts";
import { repoRoot, spawnServer, stopServer, tallyCli, type ServerProcess } from "./process.ts";
import { fmt, table } from "./report.ts";

export interface PostgresSectionOptions {
  /** A role that may CREATE DATABASE; scratch databases are made and dropped. */
  adminUrl: string;
  dir: string;
  durationMs: number;
  rounds: number;
  concurrencies: number[];
  drive: (spec: LoadSpec) => Promise<LoadResult>;
  /** Environment for every Tally server (e.g. TALLY_LOG_LEVEL). */
  tallyEnv?: Record<string, string>;
  /** Another Tally checkout (e.g. the commit before a change) measured beside
   * this one on PostgreSQL, 1 and 3 replicas, in the same rounds: a before/after
   * comparison that the machine's load hits alike. */
  baselineTree?: string;
}

type SystemName = "sqlite" | "pg1" | "pg3" | "pgbench" | "pg1base" | "pg3base";
const systemLabels: Record<SystemName, string> = {
  sqlite: "Tally on SQLite",
  pg1: "Tally on PostgreSQL, 1 replica",
  pg3: "Tally on PostgreSQL, 3 replicas",
  pgbench: "pgbench, 1 write per transaction",
  pg1base: "baseline Tally on PostgreSQL, 1 replica",
  pg3base: "baseline Tally on PostgreSQL, 3 replicas",
};
const workloads = [
  { name: "64 projects", prefix: "pgw64-p", projects: 64 },
  { name: "one hot project", prefix: "pgwhot-p", projects: 1 },
] as const;

interface Sample {
  result: LoadResult;
  applied: bigint;
  check: LedgerCheck;
  tallyCpuUsPerWrite: number;
  postgresCpuUsPerWrite: number;
  /** ghz (or pgbench) itself: the bench's reaped children during the run. */
  loadCpuUsPerWrite: number;
  /** Share of the machine's CPU time idle during the run (all cores). */
  idleShare: number;
  /** Mean number of this database's backends waiting for a lock (a project's
   * advisory lock, or a row lock for pgbench), sampled during the run. */
  lockWaiters: number;
}
export interface PostgresCell {
  workload: string;
  concurrency: number;
  system: SystemName;
  samples: Sample[];
}

const ticksPerSecond = 100;
/** utime + stime, plus cutime + cstime when `children`: PostgreSQL's backends
 * end with their connections, and their CPU then moves to the postmaster's
 * children's time. */
function cpuMsOf(pid: number, children = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const own = Number(fields[11]) + Number(fields[12]);
    return ((children ? own + Number(fields[13]) + Number(fields[14]) : own) * 1000) / ticksPerSecond;
  } catch {
    return 0;
  }
}
/** CPU of this process's children that ended and were waited for: the load
 * generators (ghz, pgbench) run as such children during a run. */
function reapedChildrenCpuMs(): number {
  return cpuMsOf(process.pid, true) - cpuMsOf(process.pid);
}
/** [idle, total] ticks of all cores since boot (/proc/stat). */
function machineTicks(): [number, number] {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  return [(fields[3] ?? 0) + (fields[4] ?? 0), fields.slice(0, 8).reduce((a, b) => a + b, 0)];
}
/** CPU of every process named postgres (the server's backends and helpers,
 * and backends that ended, counted in the postmaster's children's time). */
function postgresCpuMs(): number {
  let ms = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() === "postgres") ms += cpuMsOf(Number(entry), true);
    } catch {
      // exited meanwhile
    }
  }
  return ms;
}

/** Samples pg_stat_activity every `everyMs` until stopped: how many of the
 * database's backends wait for a lock (wait_event_type 'Lock': advisory locks
 * and row or transaction locks alike). */
async function sampleLockWaits(url: string, everyMs: number): Promise<{ stop: () => Promise<number> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const name = new URL(url).pathname.slice(1);
  let samples = 0;
  let waiting = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        [name],
      );
      waiting += Number(rows[0]?.n ?? 0);
      samples++;
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      await client.end();
      return samples === 0 ? NaN : waiting / samples;
    },
  };
}

async function adminQuery(adminUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function runPostgresSection(options: PostgresSectionOptions): Promise<{ cells: PostgresCell[]; lines: string[] }> {
  const { adminUrl, dir, durationMs, rounds, concurrencies, drive } = options;
  const suffix = `${process.pid}_${randomBytes(3).toString("hex")}`;
  const databases = new Map<string, string>();
  const urlOf = (name: string) => {
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    return url.toString();
  };
  const baseline = options.baselineTree === undefined ? undefined : resolve(options.baselineTree, "src/cli.ts");
  for (const key of ["pg1", "pg3", "pgbench", "timing", ...(baseline ? ["pg1base", "pg3base", "timingbase"] : [])]) {
    const name = `tally_bench_${key}_${suffix}`;
    await adminQuery(adminUrl, `CREATE DATABASE "${name}"`);
    databases.set(key, urlOf(name));
  }
  const servers = new Map<SystemName, ServerProcess[]>();
  try {
    // pgbench's database gets Tally's schema from Tally's own migrations.
    const migrated = await initORM(databases.get("pgbench") as string);
    await migrated.store.close();
    const sqlitePath = join(dir, "pg-section-sqlite.db");
    const start = (name: string, url: string, cli = tallyCli) =>
      spawnServer({
        args: [cli, "serve"],
        env: { HOST: "127.0.0.1", PORT: "0", TALLY_DATABASE_URL: url, TALLY_LOG_LEVEL: "info", ...options.tallyEnv },
        logPath: join(dir, `${name}.log`),
      });
    const replicaCount: Record<SystemName, number> = { sqlite: 1, pg1: 1, pg3: 3, pgbench: 0, pg1base: 1, pg3base: 3 };
    const urlFor = (system: SystemName) => (system === "sqlite" ? `sqlite:${sqlitePath}` : (databases.get(system) as string));
    const budgeted = new Set<SystemName>();
    // Tally on PostgreSQL runs only during its own cells: PostgreSQL allows 100
    // connections, and idle replicas' pools (10 each, kept 30 s) beside
    // pgbench's 64 would not fit. Each start is warmed up (JIT, connections,
    // prepared statements) with a second of the cell's own load before measuring.
    async function up(system: SystemName, warm: Omit<LoadSpec, "address" | "tag" | "durationMs">): Promise<ServerProcess[]> {
      let replicas = servers.get(system);
      if (replicas === undefined) {
        replicas = [];
        for (let i = 0; i < replicaCount[system]; i++)
          replicas.push(await start(`pg-section-${system}-${i}`, urlFor(system), system.endsWith("base") ? baseline : tallyCli));
        servers.set(system, replicas);
        if (!budgeted.has(system)) {
          budgeted.add(system);
          const client = createClient(BudgetService, createGrpcTransport({ baseUrl: (replicas[0] as ServerProcess).url }));
          for (const w of workloads)
            for (let p = 0; p < w.projects; p++)
              await client.setProjectBudget({ projectId: `${w.prefix}${p}`, limitNanos: 1_000_000_000_000_000n });
        }
        await driveSpread(drive, replicas, { ...warm, durationMs: 1_000, tag: `pgwarm-${system}-${randomBytes(4).toString("hex")}` });
      }
      return replicas;
    }
    async function down(system: SystemName): Promise<void> {
      for (const s of servers.get(system) ?? []) await stopServer(s.child);
      servers.delete(system);
    }
    const check = (system: SystemName) =>
      system === "sqlite" ? Promise.resolve(checkSqliteLedger(sqlitePath)) : checkPostgresLedger(databases.get(system) as string);

    const cells: PostgresCell[] = [];
    const systems: SystemName[] = ["sqlite", "pg1", "pg3", "pgbench", ...(baseline ? (["pg1base", "pg3base"] as const) : [])];
    for (const w of workloads) {
      for (const concurrency of concurrencies) {
        const bySystem = new Map<SystemName, Sample[]>(systems.map((s) => [s, []]));
        for (let round = 0; round < rounds; round++) {
          for (const system of systems) {
            const tag = `pg-${w.projects}-c${concurrency}-r${round}-${system}`;
            const load = { rpc: "RecordCost" as const, concurrency, projectPrefix: w.prefix, projects: w.projects };
            const replicas = system === "pgbench" ? [] : await up(system, load);
            const before = await check(system);
            const pids = replicas.map((s) => s.child.pid as number);
            const tallyCpu0 = pids.reduce((a, pid) => a + cpuMsOf(pid), 0);
            const pgCpu0 = postgresCpuMs();
            const loadCpu0 = reapedChildrenCpuMs();
            const ticks0 = machineTicks();
            const locks = system === "sqlite" ? null : await sampleLockWaits(databases.get(system) as string, 20);
            const result =
              system === "pgbench"
                ? await runPgbench({
                    url: databases.get("pgbench") as string,
                    concurrency,
                    durationMs,
                    projects: w.projects,
                    projectPrefix: w.prefix,
                    dir,
                    tag,
                  })
                : await driveSpread(drive, replicas, { ...load, durationMs, tag });
            const pgCpu = postgresCpuMs() - pgCpu0;
            const loadCpu = reapedChildrenCpuMs() - loadCpu0;
            const ticks = machineTicks();
            const lockWaiters = locks === null ? NaN : await locks.stop();
            const tallyCpu = pids.reduce((a, pid) => a + cpuMsOf(pid), 0) - tallyCpu0;
            const after = await check(system);
            if (system !== "sqlite" && system !== "pgbench") await down(system);
            const applied = after.records - before.records;
            const problems = [...after.problems];
            if (applied < BigInt(result.ok)) problems.push(`${BigInt(result.ok) - applied} acknowledged writes missing`);
            const sample: Sample = {
              result,
              applied,
              check: { records: after.records, problems },
              tallyCpuUsPerWrite: applied > 0n ? (tallyCpu * 1000) / Number(applied) : NaN,
              postgresCpuUsPerWrite: applied > 0n ? (pgCpu * 1000) / Number(applied) : NaN,
              loadCpuUsPerWrite: applied > 0n ? (loadCpu * 1000) / Number(applied) : NaN,
              idleShare: (ticks[0] - ticks0[0]) / Math.max(1, ticks[1] - ticks0[1]),
              lockWaiters,
            };
            (bySystem.get(system) as Sample[]).push(sample);
            console.log(
              `PostgreSQL ${w.name.padEnd(15)} c=${String(concurrency).padEnd(3)} ${systemLabels[system].padEnd(34)} ${fmt(result.rps, 0).padStart(7)}/s  p50 ${fmt(result.p50Ms, 2).padStart(7)} ms  p99 ${fmt(result.p99Ms, 2).padStart(7)} ms  cpu/write tally ${fmt(sample.tallyCpuUsPerWrite, 0)} µs pg ${fmt(sample.postgresCpuUsPerWrite, 0)} µs load ${fmt(sample.loadCpuUsPerWrite, 0)} µs  idle ${fmt(sample.idleShare * 100, 0)}%  lock waiters ${fmt(lockWaiters, 2)}  ${problems.length ? `NOT EXACT: ${problems.join("; ")}` : "exact"}  (round ${round + 1})`,
            );
          }
        }
        for (const system of systems) cells.push({ workload: w.name, concurrency, system, samples: bySystem.get(system) as Sample[] });
      }
    }
    // The anatomy of one batch, in-process, on idle databases of its own.
    const anatomy = await timeBatches(repoRoot, databases.get("timing") as string, [1, 16, 64, 256], [64, 1], 7);
    if (options.baselineTree)
      anatomy.push(...(await timeBatches(options.baselineTree, databases.get("timingbase") as string, [1, 16, 64, 256], [64, 1], 7)));
    for (const a of anatomy)
      console.log(
        `PostgreSQL batch ${a.tree} size ${a.size} over ${a.projects} projects: ${a.statements} statements, ${fmt(a.medianMs, 2)} ms, locks held ${fmt(a.lockHeldMedianMs, 2)} ms`,
      );
    return {
      cells,
      lines: [...report(cells, { durationMs, rounds, concurrencies, baselineTree: options.baselineTree }), ...anatomyReport(anatomy)],
    };
  } finally {
    for (const list of servers.values()) for (const s of list) await stopServer(s.child);
    for (const url of databases.values()) {
      const name = new URL(url).pathname.slice(1);
      await adminQuery(adminUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch((error: unknown) =>
        console.error(`bench: could not drop database ${name}: ${String(error)}`),
      );
    }
  }
}

/** Splits `concurrency` clients over the replicas (as evenly as possible,
 * one driver each, all at once) and merges the results: calls/s summed,
 * percentiles over every call of every driver. */
async function driveSpread(
  drive: (spec: LoadSpec) => Promise<LoadResult>,
  replicas: ServerProcess[],
  spec: Omit<LoadSpec, "address">,
): Promise<LoadResult> {
  if (replicas.length === 1) return drive({ ...spec, address: (replicas[0] as ServerProcess).address });
  const shares = replicas.map((_, i) => Math.floor(spec.concurrency / replicas.length) + (i < spec.concurrency % replicas.length ? 1 : 0));
  const results = await Promise.all(
    replicas.flatMap((s, i) =>
      (shares[i] as number) > 0
        ? [drive({ ...spec, address: s.address, concurrency: shares[i] as number, tag: `${spec.tag}-${i}`, keepLatencies: true })]
        : [],
    ),
  );
  const latencies = results.flatMap((r) => r.latenciesMs ?? []).sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  const errorKinds: Record<string, number> = {};
  for (const r of results) for (const [k, n] of Object.entries(r.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
  return {
    ok: results.reduce((a, r) => a + r.ok, 0),
    errors: results.reduce((a, r) => a + r.errors, 0),
    errorKinds,
    rps: results.reduce((a, r) => a + r.rps, 0),
    p50Ms: q(0.5),
    p99Ms: q(0.99),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const spread = (xs: number[]) => `${fmt(Math.min(...xs), 0)}-${fmt(Math.max(...xs), 0)}`;

function report(
  cells: PostgresCell[],
  run: { durationMs: number; rounds: number; concurrencies: number[]; baselineTree?: string | undefined },
): string[] {
  const find = (workload: string, c: number, system: SystemName) =>
    cells.find((x) => x.workload === workload && x.concurrency === c && x.system === system);
  const rps = (cell: PostgresCell | undefined) => (cell ? median(cell.samples.map((s) => s.result.rps)) : NaN);
  const lines: string[] = ["## PostgreSQL (issue 22)", ""];
  lines.push(
    `RecordCost, ${run.durationMs} ms per cell (pgbench: whole seconds, at least 1), median of ${run.rounds} rounds (every system in turn each round), spread = lowest-highest round. ` +
      "Tally on SQLite, on PostgreSQL with 1 replica, and with 3 replicas on one database (the clients split over them, one load generator each); " +
      "pgbench runs the same work as one autocommit statement per write (bench/lib/pgbench.ts). Budgets set on every project. Every run is checked exact afterwards (ledger = totals = breakdown, every record's totals-after its running total, no acknowledged write missing).",
    "",
  );
  if (run.baselineTree)
    lines.push(
      `Baseline: the Tally checkout at ${run.baselineTree}, measured in the same rounds (before/after under the same machine load).`,
      "",
    );
  const cMax = Math.max(...run.concurrencies);
  const targets: string[][] = [];
  for (const w of workloads) {
    const pg1 = find(w.name, cMax, "pg1");
    const ratioSqlite = rps(pg1) / rps(find(w.name, cMax, "sqlite"));
    const ratioPgbench = rps(pg1) / rps(find(w.name, cMax, "pgbench"));
    const needPgbench = w.projects === 1 ? 2 : 1;
    const p99 = pg1 ? median(pg1.samples.map((s) => s.result.p99Ms)) : NaN;
    targets.push([`${w.name}: PostgreSQL / SQLite >= 0.8 at c=${cMax}`, fmt(ratioSqlite, 2), ratioSqlite >= 0.8 ? "met" : "missed"]);
    targets.push([
      `${w.name}: PostgreSQL / pgbench >= ${needPgbench} at c=${cMax}`,
      fmt(ratioPgbench, 2),
      ratioPgbench >= needPgbench ? "met" : "missed",
    ]);
    targets.push([`${w.name}: p99 <= 50 ms at c=${cMax}, 1 replica`, `${fmt(p99, 1)} ms`, p99 <= 50 ? "met" : "missed"]);
    const ratio3 = rps(find(w.name, cMax, "pg3")) / rps(pg1);
    targets.push([`${w.name}: 3 replicas >= 1 replica at c=${cMax}`, fmt(ratio3, 2), ratio3 >= 1 ? "met" : "missed"]);
  }
  lines.push(...table(["target (issue 22)", "measured", ""], targets), "");
  lines.push(
    ...table(
      [
        "workload",
        "conc.",
        "system",
        "calls/s (median)",
        "spread",
        "p50 ms",
        "p99 ms",
        "vs SQLite",
        "vs pgbench",
        "vs baseline",
        "Tally CPU µs/write",
        "PostgreSQL CPU µs/write",
        "load generator CPU µs/write",
        "machine idle",
        "backends waiting for a lock (mean)",
        "exact",
      ],
      cells.map((cell) => {
        const m = rps(cell);
        const problems = cell.samples.flatMap((s) => s.check.problems);
        return [
          cell.workload,
          String(cell.concurrency),
          systemLabels[cell.system],
          fmt(m, 0),
          spread(cell.samples.map((s) => s.result.rps)),
          fmt(median(cell.samples.map((s) => s.result.p50Ms)), 2),
          fmt(median(cell.samples.map((s) => s.result.p99Ms)), 2),
          fmt(m / rps(find(cell.workload, cell.concurrency, "sqlite")), 2),
          fmt(m / rps(find(cell.workload, cell.concurrency, "pgbench")), 2),
          cell.system === "pg1" || cell.system === "pg3"
            ? fmt(m / rps(find(cell.workload, cell.concurrency, `${cell.system}base` as SystemName)), 2)
            : "-",
          cell.system === "pgbench" ? "-" : fmt(median(cell.samples.map((s) => s.tallyCpuUsPerWrite)), 0),
          fmt(median(cell.samples.map((s) => s.postgresCpuUsPerWrite)), 0),
          fmt(median(cell.samples.map((s) => s.loadCpuUsPerWrite)), 0),
          `${fmt(median(cell.samples.map((s) => s.idleShare)) * 100, 0)}%`,
          cell.system === "sqlite" ? "-" : fmt(median(cell.samples.map((s) => s.lockWaiters)), 2),
          problems.length ? `NO: ${[...new Set(problems)].join("; ")}` : `yes (${cell.samples.length} runs)`,
        ];
      }),
    ),
    "",
  );
  lines.push(
    "CPU per write: CPU time over the run, divided by the records the run added, of the Tally process(es), of every postgres process on the machine (so other users of the same PostgreSQL server count in it: on the SQLite and pgbench rows too), and of the load generator (ghz, one process per replica, each limited to one core by --cpus 1; or pgbench). Machine idle: the share of all cores' time idle during the run (near 0%: the run was CPU-bound, and every process's CPU per write limits its throughput). Backends waiting for a lock: pg_stat_activity sampled every 20 ms during the run, the mean count of the database's backends with wait_event_type 'Lock' (Tally: a project's advisory lock; pgbench: the hot totals row).",
    "",
  );
  return lines;
}

function anatomyReport(anatomy: BatchAnatomy[]): string[] {
  return [
    "### One batch of RecordCost writes, timed in-process (PostgreSQL store's commitBatch, median of 7 after a warm-up)",
    "",
    "Locks held: from the return of the statement that took the projects' advisory locks to the return of COMMIT (transaction locks are released at its end, after the WAL flush).",
    "",
    ...table(
      [
        "checkout",
        "projects",
        "batch size",
        "statements",
        "commit ms",
        "locks held ms",
        "per statement kind: count x, median ms summed over the batch",
      ],
      anatomy.map((a) => [
        a.tree === repoRoot ? "this one" : a.tree,
        String(a.projects),
        String(a.size),
        String(a.statements),
        fmt(a.medianMs, 2),
        fmt(a.lockHeldMedianMs, 2),
        a.byStatement.map((s) => `${s.statement} ${s.count}x ${fmt(s.medianMs, 2)}`).join("; "),
      ]),
    ),
    "",
  ];
}
