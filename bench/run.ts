// `npm run bench`: Tally against the alternatives, side by side, same run, same
// machine, loopback only. Every server runs in its own process, started at
// once and idle while another is measured; cells are interleaved (for each RPC
// and concurrency, every server in turn) so drifting machine load hits all
// alike. The load generator is ghz (Go, separate process) when installed
// (scripts/install-ghz.sh, run first by this script), else bench/load/node-driver.ts.
//
//   tally        `node src/cli.ts serve`, as shipped (info logging to a file,
//                SQLite synchronous=FULL on a temp file)
//   ceiling      the same Connect stack with handlers that do nothing
//   naive-orm    MikroORM: load entity, add in JS, flush per request (same SQLite settings)
//   grpcjs       plain @grpc/grpc-js with an in-memory Map (not durable)
//   grpcjs-noop  plain @grpc/grpc-js, handlers that do nothing
//
// Then group commit: batch sizes and commit latency at each concurrency (Tally
// at debug level logs every commit), and commitBatch timed in-process for
// fixed batch sizes. Then PostgreSQL (bench/lib/postgres-section.ts): Tally on
// PostgreSQL (1 and 3 replicas) vs Tally on SQLite vs pgbench, 64 projects and
// one hot project, when a PostgreSQL role that may create databases is given
// (--postgres-url, else TALLY_BENCH_POSTGRES_URL or TALLY_TEST_POSTGRES_URL).
// Writes bench/results.md. Bounded: every cell is --duration-ms long, --rounds
// times; the whole default run takes about ten minutes.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from "node:fs";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { ghzAvailable, ghzBin, runGhz } from "./load/ghz.ts";
import { runNodeDriver } from "./load/node-driver.ts";
import type { LoadResult, LoadSpec, Rpc } from "./load/types.ts";
import { measureCommitBatch, type BatchTiming } from "./lib/commit-batch.ts";
import { summarizeCpuProfile, type ProfileSummary } from "./lib/cpuprofile.ts";
import { intArg, parseArgs, repoRoot, rssKib, spawnServer, stopServer, tallyCli, type ServerProcess } from "./lib/process.ts";
import { fmt, machineDescription, table } from "./lib/report.ts";
import { runPostgresSection } from "./lib/postgres-section.ts";

const usage = `usage: npm run bench -- [--duration-ms 1500] [--rounds 3] [--concurrency 1,16,64] [--rpcs RecordCost,CheckBudget,CheckBudgetReserve,GetProjectCost]
       [--variants tally,ceiling,naive-orm,grpcjs,grpcjs-noop] [--driver ghz|node] [--cpu-prof] [--no-group-commit]
       [--out bench/results.md] [--keep] [--postgres-url postgres://...] [--no-postgres] [--only-postgres] [--postgres-duration-ms 3000] [--postgres-baseline ../other-checkout]`;

const args = parseArgs(process.argv.slice(2));
if (args.has("help")) {
  console.log(usage);
  process.exit(0);
}
const durationMs = intArg(args, "duration-ms", 1_500, 200, 600_000);
/** Every cell is measured this many times, all servers in turn each round; the
 * median is reported, so a burst of load from elsewhere on a shared machine
 * hits one round of one server, not the comparison. */
const rounds = intArg(args, "rounds", 3, 1, 20);
const concurrencies = (args.get("concurrency") ?? "1,16,64").split(",").map(Number);
const rpcs = (args.get("rpcs") ?? "RecordCost,CheckBudget,CheckBudgetReserve,GetProjectCost").split(",") as Rpc[];
const variantNames = (args.get("variants") ?? "tally,ceiling,naive-orm,grpcjs,grpcjs-noop").split(",");
const outPath = args.get("out") ?? join(repoRoot, "bench/results.md");
const projects = 64;
for (const c of concurrencies) if (!Number.isInteger(c) || c < 1 || c > 1_000) throw new Error(`--concurrency: ${c} is not in 1..1000`);

let driverName = args.get("driver");
if (driverName === undefined || driverName === "ghz") {
  const install = spawnSync("bash", [join(repoRoot, "scripts/install-ghz.sh")], { stdio: "inherit" });
  if (install.status !== 0 || !ghzAvailable()) {
    if (driverName === "ghz") throw new Error("ghz could not be installed (scripts/install-ghz.sh)");
    console.error("bench: ghz unavailable, using the Node.js load generator");
    driverName = "node";
  } else driverName = "ghz";
}
const drive = driverName === "ghz" ? runGhz : runNodeDriver;

const postgresUrl = args.has("no-postgres")
  ? undefined
  : (args.get("postgres-url") ?? (process.env.TALLY_BENCH_POSTGRES_URL || process.env.TALLY_TEST_POSTGRES_URL || undefined));
const postgresDurationMs = intArg(args, "postgres-duration-ms", 3_000, 1_000, 600_000);
if (args.has("only-postgres") && postgresUrl === undefined)
  throw new Error(
    "--only-postgres needs --postgres-url (or TALLY_BENCH_POSTGRES_URL / TALLY_TEST_POSTGRES_URL): a role that may CREATE DATABASE",
  );
/** The PostgreSQL section's markdown (empty without a PostgreSQL URL). */
async function postgresLines(dir: string): Promise<string[]> {
  if (postgresUrl === undefined) {
    console.log("bench: no PostgreSQL URL (--postgres-url, TALLY_BENCH_POSTGRES_URL, TALLY_TEST_POSTGRES_URL): PostgreSQL section skipped");
    return [];
  }
  const { lines } = await runPostgresSection({
    adminUrl: postgresUrl,
    dir,
    durationMs: postgresDurationMs,
    rounds,
    concurrencies,
    drive,
    baselineTree: args.get("postgres-baseline"),
  });
  return [
    `Written by \`npm run bench\` on ${new Date().toISOString()} at commit ${gitCommit()}; machine load average at the end ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}.`,
    "",
    ...lines,
  ];
}
if (args.has("only-postgres")) {
  const dir = mkdtempSync(join(tmpdir(), "tally-bench-pg-"));
  const section = await postgresLines(dir);
  const heading = section.findIndex((l) => l.startsWith("## PostgreSQL"));
  const previous = (() => {
    try {
      return readFileSync(outPath, "utf8");
    } catch {
      return "";
    }
  })();
  // Only the PostgreSQL section is replaced; the rest of the file is kept.
  const start = previous.indexOf("## PostgreSQL");
  const end = previous.indexOf("## Scale");
  const head = start >= 0 ? previous.slice(0, start) : end >= 0 ? previous.slice(0, end) : previous;
  const tail = end >= 0 ? previous.slice(end) : "";
  const body = [section[heading] as string, "", ...section.slice(0, heading), ...section.slice(heading + 1)].join("\n");
  writeFileSync(outPath, `${head}${body}\n${tail}`);
  console.log(`\n${body}\nbench: wrote ${outPath}`);
  if (!args.has("keep")) rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

interface Variant {
  name: string;
  label: string;
  /** Keeps totals: lost updates can be counted. */
  stateful: boolean;
  start(dir: string): Promise<ServerProcess>;
}
const cpuProfDir = args.has("cpu-prof") ? mkdtempSync(join(tmpdir(), "tally-cpuprof-")) : undefined;
const allVariants: Variant[] = [
  {
    name: "tally",
    label: "Tally (as shipped)",
    stateful: true,
    start: (dir) =>
      spawnServer({
        args: [tallyCli, "serve"],
        env: { HOST: "127.0.0.1", PORT: "0", TALLY_DATABASE_URL: `sqlite:${join(dir, "tally.db")}`, TALLY_LOG_LEVEL: "info" },
        logPath: join(dir, "tally.log"),
        nodeFlags: cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`] : [],
      }),
  },
  {
    name: "ceiling",
    label: "Connect no-op (ceiling)",
    stateful: false,
    start: (dir) =>
      spawnServer({
        args: [join(repoRoot, "bench/servers/connect.ts")],
        env: { MODE: "noop", PORT: "0" },
        logPath: join(dir, "ceiling.log"),
      }),
  },
  {
    name: "naive-orm",
    label: "naive MikroORM",
    stateful: true,
    start: (dir) =>
      spawnServer({
        args: [join(repoRoot, "bench/servers/connect.ts")],
        env: { MODE: "naive-orm", PORT: "0", TALLY_DATABASE_URL: `sqlite:${join(dir, "naive.db")}` },
        logPath: join(dir, "naive.log"),
      }),
  },
  {
    name: "grpcjs",
    label: "grpc-js in-memory",
    stateful: true,
    start: (dir) =>
      spawnServer({
        args: [join(repoRoot, "bench/servers/grpc-js.ts")],
        env: { MODE: "memory", PORT: "0" },
        logPath: join(dir, "grpcjs.log"),
      }),
  },
  {
    name: "grpcjs-noop",
    label: "grpc-js no-op",
    stateful: false,
    start: (dir) =>
      spawnServer({
        args: [join(repoRoot, "bench/servers/grpc-js.ts")],
        env: { MODE: "noop", PORT: "0" },
        logPath: join(dir, "grpcjs-noop.log"),
      }),
  },
];
const variants = variantNames.map((name) => {
  const v = allVariants.find((x) => x.name === name);
  if (!v) throw new Error(`--variants: unknown ${name}; known: ${allVariants.map((x) => x.name).join(", ")}`);
  return v;
});

const startedAt = new Date();
const machine = machineDescription();
console.log(
  `bench: ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, load average ${machine.loadAverage}; driver ${driverName}; ${durationMs} ms per cell`,
);
const dir = mkdtempSync(join(tmpdir(), "tally-bench-"));
const running = new Map<string, ServerProcess>();
for (const v of variants) running.set(v.name, await v.start(dir));

const clientFor = (s: ServerProcess) => createClient(BudgetService, createGrpcTransport({ baseUrl: s.url }));
async function sumRecordCount(s: ServerProcess): Promise<bigint> {
  const client = clientFor(s);
  let sum = 0n;
  for (let p = 0; p < projects; p++) sum += (await client.getProjectCost({ projectId: `bench-p${p}` })).projectCost?.recordCount ?? 0n;
  return sum;
}

// Budgets so CheckBudget decides against a real limit; a warm-up per server.
for (const v of variants) {
  const s = running.get(v.name) as ServerProcess;
  const client = clientFor(s);
  for (let p = 0; p < projects; p++) await client.setProjectBudget({ projectId: `bench-p${p}`, limitNanos: 1_000_000_000_000_000n });
  for (const rpc of rpcs)
    await drive({
      address: s.address,
      rpc,
      concurrency: 16,
      durationMs: Math.min(1_000, durationMs),
      tag: `warm-${rpc}`,
      projectPrefix: "bench-p",
      projects,
    });
}

interface Cell {
  rpc: Rpc;
  concurrency: number;
  variant: string;
  result: LoadResult;
  /** RecordCost on a stateful server: acknowledged writes missing from the totals. */
  lostUpdates?: bigint;
}
const cells: Cell[] = [];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
for (const rpc of rpcs) {
  for (const concurrency of concurrencies) {
    const samples = new Map<string, { results: LoadResult[]; lost: bigint[] }>(variants.map((v) => [v.name, { results: [], lost: [] }]));
    for (let round = 0; round < rounds; round++) {
      for (const v of variants) {
        const s = running.get(v.name) as ServerProcess;
        const spec: LoadSpec = {
          address: s.address,
          rpc,
          concurrency,
          durationMs,
          tag: `${rpc}-c${concurrency}-r${round}`,
          projectPrefix: "bench-p",
          projects,
        };
        const before = rpc === "RecordCost" && v.stateful ? await sumRecordCount(s) : undefined;
        const result = await drive(spec);
        const sample = samples.get(v.name) as { results: LoadResult[]; lost: bigint[] };
        sample.results.push(result);
        if (before !== undefined) {
          // Calls cut off at the end of the run may have been applied: lost
          // updates are acknowledged writes the totals do not show.
          const applied = (await sumRecordCount(s)) - before;
          sample.lost.push(applied < BigInt(result.ok) ? BigInt(result.ok) - applied : 0n);
        }
        console.log(
          `${rpc.padEnd(14)} c=${String(concurrency).padEnd(3)} ${v.label.padEnd(24)} ${fmt(result.rps, 0).padStart(7)}/s  p50 ${fmt(result.p50Ms, 2).padStart(7)} ms  p99 ${fmt(result.p99Ms, 2).padStart(7)} ms${rounds > 1 ? `  (round ${round + 1})` : ""}`,
        );
      }
    }
    for (const v of variants) {
      const { results, lost } = samples.get(v.name) as { results: LoadResult[]; lost: bigint[] };
      const errorKinds: Record<string, number> = {};
      for (const r of results) for (const [k, n] of Object.entries(r.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
      cells.push({
        rpc,
        concurrency,
        variant: v.name,
        result: {
          ok: results.reduce((a, r) => a + r.ok, 0),
          errors: results.reduce((a, r) => a + r.errors, 0),
          errorKinds,
          rps: median(results.map((r) => r.rps)),
          p50Ms: median(results.map((r) => r.p50Ms)),
          p99Ms: median(results.map((r) => r.p99Ms)),
        },
        lostUpdates: lost.length ? lost.reduce((a, b) => a + b, 0n) : undefined,
      });
    }
  }
}
const rss = new Map(variants.map((v) => [v.name, rssKib(running.get(v.name)?.child.pid)]));
for (const s of running.values()) await stopServer(s.child);

// --- group commit -------------------------------------------------------------
interface BatchStats {
  concurrency: number;
  rps: number;
  p99Ms: number;
  batches: number;
  sizeMean: number;
  sizeP50: number;
  sizeMax: number;
  commitP50Ms: number;
  commitP99Ms: number;
}
const groupCommit: BatchStats[] = [];
let commitTimings: BatchTiming[] = [];
if (!args.has("no-group-commit")) {
  const logPath = join(dir, "tally-debug.log");
  const s = await spawnServer({
    args: [tallyCli, "serve"],
    env: { HOST: "127.0.0.1", PORT: "0", TALLY_DATABASE_URL: `sqlite:${join(dir, "tally-debug.db")}`, TALLY_LOG_LEVEL: "debug" },
    logPath,
  });
  await drive({
    address: s.address,
    rpc: "RecordCost",
    concurrency: 16,
    durationMs: Math.min(1_000, durationMs),
    tag: "warm",
    projectPrefix: "bench-p",
    projects,
  });
  for (const concurrency of concurrencies) {
    const offset = statSync(logPath).size;
    const result = await drive({
      address: s.address,
      rpc: "RecordCost",
      concurrency,
      durationMs,
      tag: `gc-c${concurrency}`,
      projectPrefix: "bench-p",
      projects,
    });
    const batches = readFileSync(logPath, "utf8")
      .slice(offset)
      .split("\n")
      .filter((l) => l.includes('"uow.batch_committed"'))
      .map((l) => JSON.parse(l) as { size: number; commitMs: number });
    const sizes = batches.map((b) => b.size).sort((a, b) => a - b);
    const commits = batches.map((b) => b.commitMs).sort((a, b) => a - b);
    const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN;
    groupCommit.push({
      concurrency,
      rps: result.rps,
      p99Ms: result.p99Ms,
      batches: batches.length,
      sizeMean: sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length),
      sizeP50: q(sizes, 0.5),
      sizeMax: sizes.at(-1) ?? 0,
      commitP50Ms: q(commits, 0.5),
      commitP99Ms: q(commits, 0.99),
    });
  }
  await stopServer(s.child);
  commitTimings = await measureCommitBatch(join(dir, "commit-batch.db"), [1, 16, 64, 256, 1024], 15);
}

// --- profile --------------------------------------------------------------------
// One profile per thread: CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile,
// thread 0 the main thread (event loop), the others the SQLite writer thread.
const profiles: Array<{ thread: string; summary: ProfileSummary }> = [];
if (cpuProfDir) {
  const files = readdirSync(cpuProfDir).filter((f) => f.endsWith(".cpuprofile"));
  const threadOf = (f: string) => Number(f.split(".").at(-3));
  for (const file of files.sort((a, b) => threadOf(a) - threadOf(b))) {
    const thread = threadOf(file) === 0 ? "main thread" : "SQLite writer thread";
    profiles.push({ thread, summary: summarizeCpuProfile(join(cpuProfDir, file)) });
    console.log(`bench: Tally CPU profile (${thread}) at ${join(cpuProfDir, file)}`);
  }
}

// --- report -----------------------------------------------------------------------
const cell = (rpc: Rpc, c: number, v: string) => cells.find((x) => x.rpc === rpc && x.concurrency === c && x.variant === v)?.result;
const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : NaN);
const has = (v: string) => variants.some((x) => x.name === v);
const cMax = Math.max(...concurrencies);
const lines: string[] = [];
lines.push("# Benchmark results", "");
lines.push(
  `Written by \`npm run bench\` on ${startedAt.toISOString()} (${Math.round((Date.now() - startedAt.getTime()) / 1000)} s) at commit ${gitCommit()}.`,
  "",
);
lines.push(
  `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGib} GiB, ${machine.os}; node ${machine.node}; load average at start ${machine.loadAverage}.`,
);
lines.push(
  `Load generator: ${driverName === "ghz" ? `ghz ${ghzVersion()} (gRPC, one HTTP/2 connection, --cpus 1)` : "bench/load/node-driver.ts (Connect gRPC transport, one HTTP/2 connection)"}; ${durationMs} ms per cell, median of ${rounds} rounds (servers in turn each round); ${projects} projects round robin; loopback.`,
  "",
);
lines.push(
  "Absolute numbers depend on the machine (and on whatever else it runs: this one is a shared 2-core VM, so treat single numbers as noisy); the ratios, measured in the same run with interleaved cells, are the claim.",
  "",
);

lines.push("## Ratios", "");
const ratioRows: string[][] = [];
for (const rpc of rpcs) {
  for (const c of concurrencies) {
    const t = cell(rpc, c, "tally");
    ratioRows.push([
      rpc,
      String(c),
      has("ceiling") ? fmt(ratio(t?.rps, cell(rpc, c, "ceiling")?.rps), 2) : "-",
      has("naive-orm") ? fmt(ratio(t?.rps, cell(rpc, c, "naive-orm")?.rps), 2) : "-",
      has("grpcjs") ? fmt(ratio(t?.rps, cell(rpc, c, "grpcjs")?.rps), 2) : "-",
      has("grpcjs-noop") ? fmt(ratio(t?.rps, cell(rpc, c, "grpcjs-noop")?.rps), 2) : "-",
      has("ceiling") ? fmt(ratio(t?.p99Ms, cell(rpc, c, "ceiling")?.p99Ms), 2) : "-",
    ]);
  }
}
lines.push(
  ...table(
    [
      "RPC",
      "conc.",
      "Tally/ceiling (throughput)",
      "Tally/naive ORM",
      "Tally/grpc-js memory",
      "Tally/grpc-js no-op",
      "Tally p99 / ceiling p99",
    ],
    ratioRows,
  ),
  "",
);

const recordC = cell("RecordCost", cMax, "tally");
const targets: string[][] = [];
if (recordC && has("ceiling"))
  targets.push([
    `durable RecordCost throughput >= 0.8 x ceiling at c=${cMax}`,
    fmt(ratio(recordC.rps, cell("RecordCost", cMax, "ceiling")?.rps), 2),
    ratio(recordC.rps, cell("RecordCost", cMax, "ceiling")?.rps) >= 0.8 ? "met" : "missed",
  ]);
if (recordC && has("naive-orm"))
  targets.push([
    `RecordCost throughput >= 10 x naive ORM at c=${cMax}`,
    fmt(ratio(recordC.rps, cell("RecordCost", cMax, "naive-orm")?.rps), 1),
    ratio(recordC.rps, cell("RecordCost", cMax, "naive-orm")?.rps) >= 10 ? "met" : "missed",
  ]);
const checkC = cell("CheckBudget", cMax, "tally");
if (checkC && has("ceiling"))
  targets.push([
    `CheckBudget p99 <= 2 x ceiling p99 at c=${cMax}`,
    fmt(ratio(checkC.p99Ms, cell("CheckBudget", cMax, "ceiling")?.p99Ms), 2),
    ratio(checkC.p99Ms, cell("CheckBudget", cMax, "ceiling")?.p99Ms) <= 2 ? "met" : "missed",
  ]);
if (targets.length) lines.push("Targets (issue 7):", "", ...table(["target", "measured", ""], targets), "");
lines.push(
  "CheckBudgetReserve is CheckBudget with `reserve = true` (a durable hold, 60 s TTL, through the group commit). The naive ORM and grpc-js servers do not implement holds and answer it as a plain check, so only Tally/ceiling is a like-for-like ratio there.",
  "",
);

lines.push("## Every cell", "");
lines.push(
  ...table(
    ["RPC", "conc.", "server", "calls/s", "p50 ms", "p99 ms", "errors (all rounds)", "lost updates"],
    cells.map((c) => [
      c.rpc,
      String(c.concurrency),
      variants.find((v) => v.name === c.variant)?.label ?? c.variant,
      fmt(c.result.rps, 0),
      fmt(c.result.p50Ms, 2),
      fmt(c.result.p99Ms, 2),
      c.result.errors
        ? `${c.result.errors} (${Object.entries(c.result.errorKinds)
            .map(([k, n]) => `${k}: ${n}`)
            .join("; ")})`
        : "0",
      c.lostUpdates === undefined ? "-" : String(c.lostUpdates),
    ]),
  ),
  "",
);
lines.push(
  "Lost updates: acknowledged RecordCost calls whose cost the project totals do not show afterwards (read-modify-write races).",
  "",
);
lines.push(
  `Resident memory after the run: ${variants.map((v) => `${v.label} ${rss.get(v.name) === null ? "?" : `${Math.round((rss.get(v.name) as number) / 1024)} MiB`}`).join(", ")}.`,
  "",
);

if (groupCommit.length) {
  lines.push("## Group commit (Tally, RecordCost, synchronous=FULL)", "");
  lines.push(
    ...table(
      ["conc.", "writes/s", "p99 ms", "batches", "batch size mean", "p50", "max", "commit p50 ms", "commit p99 ms"],
      groupCommit.map((g) => [
        String(g.concurrency),
        fmt(g.rps, 0),
        fmt(g.p99Ms, 2),
        String(g.batches),
        fmt(g.sizeMean, 1),
        String(g.sizeP50),
        String(g.sizeMax),
        fmt(g.commitP50Ms, 2),
        fmt(g.commitP99Ms, 2),
      ]),
    ),
    "",
  );
  lines.push("From Tally's own `uow.batch_committed` debug log lines (one per transaction; TALLY_LOG_LEVEL=debug).", "");
  lines.push("`commitBatch` timed in-process on a file with synchronous=FULL (median of 15; distinct projects and keys):", "");
  lines.push(
    ...table(
      ["batch size", "commit ms (median)", "µs per write"],
      commitTimings.map((t) => [String(t.size), fmt(t.medianMs, 2), fmt((t.medianMs * 1000) / t.size, 1)]),
    ),
    "",
  );
}

for (const { thread, summary: profile } of profiles) {
  lines.push(`## Where Tally's time goes: ${thread} (--cpu-prof, whole run, self time, idle excluded)`, "");
  lines.push("Samples are wall time on that thread: a blocking call (the writer's COMMIT waiting for fsync) counts while it waits.", "");
  lines.push(
    ...table(
      ["area", "ms", "share"],
      profile.byArea.map((a) => [a.area, fmt(a.ms, 0), `${fmt(a.share * 100, 1)}%`]),
    ),
    "",
  );
  lines.push(
    ...table(
      ["function", "where", "ms", "share"],
      profile.topFunctions.map((f) => [f.name, f.where, fmt(f.ms, 0), `${fmt(f.share * 100, 1)}%`]),
    ),
    "",
  );
}
lines.push(
  "Rerun: `npm run bench` (about ten minutes; `--only-postgres` for the PostgreSQL section alone; `--duration-ms 5000 --rounds 5` for steadier numbers, `--cpu-prof` to profile Tally, `--help` for the rest). Scale: `npm run bench:scale`.",
  "",
);
const pgSection = await postgresLines(dir);
const pgHeading = pgSection.findIndex((l) => l.startsWith("## PostgreSQL"));
if (pgHeading >= 0) lines.push(pgSection[pgHeading] as string, "", ...pgSection.slice(0, pgHeading), ...pgSection.slice(pgHeading + 1));

const scalePart = (() => {
  try {
    const previous = readFileSync(outPath, "utf8");
    const at = previous.indexOf("## Scale");
    return at >= 0 ? previous.slice(at) : "";
  } catch {
    return "";
  }
})();
writeFileSync(outPath, lines.join("\n") + (scalePart ? `\n${scalePart}` : ""));
console.log(`\n${lines.slice(lines.indexOf("## Ratios"), lines.indexOf("## Every cell")).join("\n")}`);
console.log(`bench: wrote ${outPath}`);
if (!args.has("keep")) rmSync(dir, { recursive: true, force: true });
else console.log(`bench: kept ${dir}`);

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: repoRoot, encoding: "utf8" }).trim();
  } catch {
    return "?";
  }
}

function ghzVersion(): string {
  try {
    return /ghz\s+(v[\w.-]+)/.exec(execFileSync("go", ["version", "-m", ghzBin], { encoding: "utf8" }))?.[1] ?? "?";
  } catch {
    return "?";
  }
}
void os;
