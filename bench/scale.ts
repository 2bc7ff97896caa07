// `npm run bench:scale`: do lookups slow down with history? GetProjectCost and
// CheckBudget latency against Tally on an empty database and on one with
// --rows cost records (default 10 million) over --projects projects (default
// 1 million), random projects per call; and Tally's resident memory with that
// many projects. The big file is built once and cached (bench/lib/scale-db.ts).
// Appends a "## Scale" section to bench/results.md (replacing an older one).
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { ghzAvailable, runGhz } from "./load/ghz.ts";
import { runNodeDriver } from "./load/node-driver.ts";
import type { LoadResult, Rpc } from "./load/types.ts";
import { intArg, parseArgs, repoRoot, rssKib, spawnServer, stopServer, tallyCli } from "./lib/process.ts";
import { fmt, machineDescription, table } from "./lib/report.ts";
import { scaleDatabase } from "./lib/scale-db.ts";

const args = parseArgs(process.argv.slice(2));
if (args.has("help")) {
  console.log(
    "usage: npm run bench:scale -- [--rows 10000000] [--projects 1000000] [--duration-ms 3000] [--concurrency 1,16] [--rounds 3] [--driver ghz|node] [--out bench/results.md]",
  );
  process.exit(0);
}
const rows = intArg(args, "rows", 10_000_000, 1, 100_000_000);
const projects = intArg(args, "projects", 1_000_000, 1, 10_000_000);
const durationMs = intArg(args, "duration-ms", 3_000, 200, 600_000);
const concurrencies = (args.get("concurrency") ?? "1,16").split(",").map(Number);
/** Each cell is measured this many times, alternating the two servers; the
 * median is reported, so a burst of load from elsewhere on the machine hits one
 * round, not the comparison. */
const rounds = intArg(args, "rounds", 3, 1, 20);
const outPath = args.get("out") ?? join(repoRoot, "bench/results.md");
let driver = args.get("driver");
if (driver !== "node") {
  const ok = spawnSync("bash", [join(repoRoot, "scripts/install-ghz.sh")], { stdio: "inherit" }).status === 0 && ghzAvailable();
  if (!ok && driver === "ghz") throw new Error("ghz could not be installed");
  driver = ok ? "ghz" : "node";
}
const drive = driver === "ghz" ? runGhz : runNodeDriver;
const machine = machineDescription();
const startedAt = new Date();
console.log(
  `bench:scale: ${rows.toLocaleString("en-US")} rows, ${projects.toLocaleString("en-US")} projects; driver ${driver}; load average ${machine.loadAverage}`,
);

const bigPath = await scaleDatabase(rows, projects, (m) => console.log(`bench:scale: ${m}`));
const dir = mkdtempSync(join(tmpdir(), "tally-scale-"));
const rpcs: Rpc[] = ["GetProjectCost", "CheckBudget"];

interface Row {
  db: string;
  rpc: Rpc;
  concurrency: number;
  result: LoadResult;
}
const results: Row[] = [];
const rss: Record<string, number | null> = {};
const servers = {
  empty: await spawnServer({
    args: [tallyCli, "serve"],
    env: { HOST: "127.0.0.1", PORT: "0", TALLY_DATABASE_URL: `sqlite:${join(dir, "empty.db")}`, TALLY_LOG_LEVEL: "info" },
    logPath: join(dir, "empty.log"),
  }),
  big: await spawnServer({
    args: [tallyCli, "serve"],
    env: { HOST: "127.0.0.1", PORT: "0", TALLY_DATABASE_URL: `sqlite:${bigPath}`, TALLY_LOG_LEVEL: "info" },
    logPath: join(dir, "big.log"),
    startTimeoutMs: 120_000,
  }),
};
rss.emptyIdle = rssKib(servers.empty.child.pid);
rss.bigIdle = rssKib(servers.big.child.pid);
// Same requests against both: random projects among `projects` (absent from the empty file).
for (const name of ["empty", "big"] as const) {
  await drive({
    address: servers[name].address,
    rpc: "GetProjectCost",
    concurrency: 16,
    durationMs: 1_000,
    tag: "warm",
    projectPrefix: "scale-p",
    projects,
    randomProject: true,
  });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
for (const rpc of rpcs) {
  for (const concurrency of concurrencies) {
    const samples = { empty: [] as LoadResult[], big: [] as LoadResult[] };
    for (let round = 0; round < rounds; round++) {
      for (const name of ["empty", "big"] as const) {
        const result = await drive({
          address: servers[name].address,
          rpc,
          concurrency,
          durationMs,
          tag: "scale",
          projectPrefix: "scale-p",
          projects,
          randomProject: true,
        });
        samples[name].push(result);
        console.log(
          `${rpc.padEnd(14)} c=${String(concurrency).padEnd(3)} ${name.padEnd(5)} round ${round + 1}: ${fmt(result.rps, 0).padStart(7)}/s  p50 ${fmt(result.p50Ms, 2).padStart(7)} ms  p99 ${fmt(result.p99Ms, 2).padStart(7)} ms`,
        );
      }
    }
    for (const name of ["empty", "big"] as const) {
      const s = samples[name];
      results.push({
        db: name,
        rpc,
        concurrency,
        result: {
          ok: s.reduce((a, r) => a + r.ok, 0),
          errors: s.reduce((a, r) => a + r.errors, 0),
          errorKinds: {},
          rps: median(s.map((r) => r.rps)),
          p50Ms: median(s.map((r) => r.p50Ms)),
          p99Ms: median(s.map((r) => r.p99Ms)),
        },
      });
    }
  }
}
rss.emptyLoaded = rssKib(servers.empty.child.pid);
rss.bigLoaded = rssKib(servers.big.child.pid);
for (const s of Object.values(servers)) await stopServer(s.child);

const get = (db: string, rpc: Rpc, c: number) => results.find((r) => r.db === db && r.rpc === rpc && r.concurrency === c)?.result;
const mib = (kib: number | null | undefined) => (kib == null ? "?" : `${Math.round(kib / 1024)} MiB`);
const lines = [
  "## Scale (npm run bench:scale)",
  "",
  `${startedAt.toISOString()}; ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, load average at start ${machine.loadAverage}; load generator ${driver}; ${durationMs} ms per cell, median of ${rounds} alternating rounds; a random project per call.`,
  "",
  `Big database: ${rows.toLocaleString("en-US")} cost records, ${projects.toLocaleString("en-US")} projects with budgets and totals (${(statSync(bigPath).size / 2 ** 30).toFixed(2)} GiB file). Empty database: same schema, no rows (every lookup finds nothing and answers zeros).`,
  "",
  ...table(
    [
      "RPC",
      "conc.",
      "empty p50 ms",
      "big p50 ms",
      "empty p99 ms",
      "big p99 ms",
      "big/empty p50",
      "big/empty p99",
      "empty calls/s",
      "big calls/s",
    ],
    rpcs.flatMap((rpc) =>
      concurrencies.map((c) => {
        const e = get("empty", rpc, c),
          b = get("big", rpc, c);
        return [
          rpc,
          String(c),
          fmt(e?.p50Ms, 2),
          fmt(b?.p50Ms, 2),
          fmt(e?.p99Ms, 2),
          fmt(b?.p99Ms, 2),
          fmt((b?.p50Ms ?? NaN) / (e?.p50Ms ?? NaN), 2),
          fmt((b?.p99Ms ?? NaN) / (e?.p99Ms ?? NaN), 2),
          fmt(e?.rps, 0),
          fmt(b?.rps, 0),
        ];
      }),
    ),
  ),
  "",
  `Target: lookup latency at ${rows.toLocaleString("en-US")} rows within 1.2 x the empty database.`,
  "",
  `Tally's resident memory: empty database ${mib(rss.emptyIdle)} idle, ${mib(rss.emptyLoaded)} after the run; ${projects.toLocaleString("en-US")} projects ${mib(rss.bigIdle)} idle, ${mib(rss.bigLoaded)} after the run (bounded: SQLite's page cache per connection, the read connection's and the writer thread's, and at most sqliteStateCacheEntriesMax projects' state rows held for reads).`,
  "",
];
let previous = "";
try {
  previous = readFileSync(outPath, "utf8");
} catch {
  previous = "# Benchmark results\n\n";
}
const at = previous.indexOf("## Scale");
writeFileSync(outPath, `${at >= 0 ? previous.slice(0, at) : previous.endsWith("\n\n") ? previous : `${previous}\n`}${lines.join("\n")}`);
console.log(lines.join("\n"));
rmSync(dir, { recursive: true, force: true });
