// `npm run bench:cpu`: CPU per call, per thread, of servers driven in turn by
// ghz — for A/B comparisons of changes on a machine too noisy for throughput.
//
// On a shared 2-core VM, ghz throughput moves 15-50% between runs; the CPU a
// server spends per call, read from /proc/<pid>/task/*/stat before and after
// each cell, moves far less, and says which thread pays (the event loop,
// "tally-sqlite-wr" the SQLite writer, "V8Worker" V8's GC and compiler helpers,
// "libuv-worker" the thread pool). Each round measures every server once, in
// turn; the summary is the median per server.
//
//   npm run bench:cpu -- --rpc RecordCost [--rounds 3] [--duration-ms 4000] [--concurrency 64]
//     --servers .,../other-checkout,.#TALLY_SQLITE_SYNCHRONOUS=NORMAL,grpcjs-noop
//
// A server is a Tally checkout (its src/cli.ts, with its own node_modules or
// this one's), optionally `#NAME=value;NAME=value` environment for it, or
// grpcjs-noop (bench/servers/grpc-js.ts doing nothing). Loopback only; every
// cell is bounded by --duration-ms.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { ghzAvailable, runGhz } from "./load/ghz.ts";
import type { Rpc } from "./load/types.ts";
import { intArg, parseArgs, repoRoot, spawnServer, stopServer, type ServerProcess } from "./lib/process.ts";
import { fmt, machineDescription, table } from "./lib/report.ts";

const usage = `usage: npm run bench:cpu -- --rpc RecordCost|GetProjectCost|CheckBudget|CheckBudgetReserve --servers <tree[#ENV=V;...]|grpcjs-noop>,...
       [--rounds 3] [--duration-ms 4000] [--concurrency 64]`;
const args = parseArgs(process.argv.slice(2));
if (args.has("help") || !args.has("rpc") || !args.has("servers")) {
  console.log(usage);
  process.exit(args.has("help") ? 0 : 2);
}
const rpc = args.get("rpc") as Rpc;
const rounds = intArg(args, "rounds", 3, 1, 20);
const durationMs = intArg(args, "duration-ms", 4_000, 500, 60_000);
const concurrency = intArg(args, "concurrency", 64, 1, 1_000);
const projects = 64;
/** Kernel clock ticks per second of /proc's utime and stime (USER_HZ; 100 on Linux). */
const ticksPerSecond = 100;

if (spawnSync("bash", [join(repoRoot, "scripts/install-ghz.sh")], { stdio: "inherit" }).status !== 0 || !ghzAvailable()) {
  throw new Error("bench:cpu needs ghz (scripts/install-ghz.sh)");
}

interface Server {
  label: string;
  process: ServerProcess;
}

/** CPU milliseconds per thread of a process, by thread name ("main" for the process's first thread). */
function threadCpuMs(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const name = Number(tid) === pid ? "main" : readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      byName.set(name, (byName.get(name) ?? 0) + ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond);
    } catch {
      // the thread ended between listing and reading
    }
  }
  return byName;
}

/** Busy and idle CPU milliseconds of the whole machine. */
function machineCpuMs(): { busy: number; idle: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] as string).trim().split(/\s+/).slice(1).map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: ((total - idle) * 1000) / ticksPerSecond, idle: (idle * 1000) / ticksPerSecond };
}

const dir = mkdtempSync(join(tmpdir(), "tally-bench-cpu-"));
const servers: Server[] = [];
for (const [i, spec] of (args.get("servers") as string).split(",").entries()) {
  const [tree, envText] = spec.split("#", 2) as [string, string | undefined];
  const env = Object.fromEntries(
    (envText ?? "")
      .split(";")
      .filter((kv) => kv !== "")
      .map((kv) => kv.split("=", 2) as [string, string]),
  );
  const logPath = join(dir, `server-${i}.log`);
  const process =
    tree === "grpcjs-noop"
      ? await spawnServer({
          args: [join(repoRoot, "bench/servers/grpc-js.ts")],
          env: { MODE: "noop", HOST: "127.0.0.1", PORT: "0" },
          logPath,
        })
      : await spawnServer({
          args: [join(resolve(tree), "src/cli.ts"), "serve"],
          env: {
            HOST: "127.0.0.1",
            PORT: "0",
            TALLY_DATABASE_URL: `sqlite:${join(dir, `server-${i}.db`)}`,
            TALLY_LOG_LEVEL: "info",
            ...env,
          },
          logPath,
        });
  if (tree !== "grpcjs-noop") {
    const client = createClient(BudgetService, createGrpcTransport({ baseUrl: process.url }));
    for (let p = 0; p < projects; p++) await client.setProjectBudget({ projectId: `bench-p${p}`, limitNanos: 1_000_000_000_000_000n });
  }
  await runGhz({ address: process.address, rpc, concurrency: 16, durationMs: 1_000, tag: `warm-${i}`, projectPrefix: "bench-p", projects });
  servers.push({ label: spec, process });
}

const machine = machineDescription();
console.log(
  `bench:cpu: ${machine.cpu}, ${machine.cores} cores, node ${machine.node}, load average ${machine.loadAverage}; ${rpc} c=${concurrency}, ${durationMs} ms per cell, ${rounds} rounds`,
);
interface Cell {
  callsPerSecond: number;
  p99Ms: number;
  perCallUs: Map<string, number>;
  processUs: number;
  machineBusyUs: number;
  machineIdleShare: number;
}
const cells = servers.map(() => [] as Cell[]);
try {
  for (let round = 0; round < rounds; round++) {
    for (const [i, server] of servers.entries()) {
      const pid = server.process.child.pid as number;
      const threadsBefore = threadCpuMs(pid);
      const machineBefore = machineCpuMs();
      const result = await runGhz({
        address: server.process.address,
        rpc,
        concurrency,
        durationMs,
        tag: `r${round}-${i}`,
        projectPrefix: "bench-p",
        projects,
      });
      const threadsAfter = threadCpuMs(pid);
      const machineAfter = machineCpuMs();
      const calls = Math.max(1, result.ok + result.errors);
      const perCallUs = new Map<string, number>();
      let processMs = 0;
      for (const [name, ms] of threadsAfter) {
        const spent = ms - (threadsBefore.get(name) ?? 0);
        processMs += spent;
        if (spent > 0) perCallUs.set(name, (spent * 1000) / calls);
      }
      const busy = machineAfter.busy - machineBefore.busy;
      const idle = machineAfter.idle - machineBefore.idle;
      const cell = {
        callsPerSecond: result.rps,
        p99Ms: result.p99Ms,
        perCallUs,
        processUs: (processMs * 1000) / calls,
        machineBusyUs: (busy * 1000) / calls,
        machineIdleShare: idle / Math.max(1, busy + idle),
      };
      cells[i]?.push(cell);
      const threads = [...perCallUs].map(([name, us]) => `${name} ${fmt(us, 1)}`).join(", ");
      console.log(
        `round ${round + 1} ${server.label}: ${fmt(cell.callsPerSecond, 0)} calls/s, p99 ${fmt(cell.p99Ms, 1)} ms; µs per call: process ${fmt(cell.processUs, 1)} (${threads}); machine busy ${fmt(cell.machineBusyUs, 1)}, idle ${fmt(cell.machineIdleShare * 100, 0)}%`,
      );
    }
  }
} finally {
  for (const server of servers) await stopServer(server.process.child);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const threadNames = [...new Set(cells.flatMap((list) => list.flatMap((c) => [...c.perCallUs.keys()])))].sort();
console.log("");
console.log(
  table(
    ["server", "calls/s", "p99 ms", "process µs/call", ...threadNames.map((n) => `${n} µs/call`)],
    servers.map((server, i) => {
      const list = cells[i] ?? [];
      return [
        server.label,
        fmt(median(list.map((c) => c.callsPerSecond)), 0),
        fmt(median(list.map((c) => c.p99Ms)), 1),
        fmt(median(list.map((c) => c.processUs)), 1),
        ...threadNames.map((name) => fmt(median(list.map((c) => c.perCallUs.get(name) ?? 0)), 1)),
      ];
    }),
  ).join("\n"),
);
console.log(`(medians of ${rounds} rounds; logs in ${dir})`);
