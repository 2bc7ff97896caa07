// `npm run failover`: proves that a PostgreSQL failover under a synchronous
// standby loses no write Tally acknowledged and counts none twice.
//
// 1. Two PostgreSQL clusters on this machine, run as the `postgres` user
//    (PostgreSQL refuses root): A primary, B a streaming standby made by
//    pg_basebackup -R; synchronous_standby_names = '*' and synchronous_commit =
//    remote_apply, so a COMMIT returns only once the standby applied it.
// 2. One Tally server given both hosts in one URL with
//    target_session_attrs=read-write; crash-test load processes
//    (bench/crashtest/load.ts) retry every write with the same request_id.
// 3. --failovers times: SIGKILL the primary's postmaster under load, promote
//    the standby, re-seed the old primary as the new standby (pg_basebackup).
//    The unavailability window is measured from the kill to the first write
//    acknowledged after it.
// 4. Stops the load, checks totals >= acknowledged, retries every unacknowledged
//    request to completion, then totals == the sum of all distinct requests, and
//    re-sent acknowledged requests come back as duplicates.
// Prints one summary line; exits 1 on any loss or double count, 2 on a usage error.
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { freePort, intArg, parseArgs, sleep, spawnServer, stopServer, tallyCli } from "../lib/process.ts";
import { retryable, type CrashRequest, type LoadReport } from "../crashtest/protocol.ts";

const usage = "usage: npm run failover -- [--failovers 3] [--seconds 300] [--workers 16] [--projects 8] [--keep]";
let failovers: number, secondsMax: number, workers: number, projects: number;
let args: Map<string, string>;
try {
  args = parseArgs(process.argv.slice(2));
  failovers = intArg(args, "failovers", 3, 1, 100);
  secondsMax = intArg(args, "seconds", 300, 30, 3_600);
  workers = intArg(args, "workers", 16, 1, 256);
  projects = intArg(args, "projects", 8, 1, 1_000);
} catch (error) {
  console.error(`failover: ${(error as Error).message}\n${usage}`);
  process.exit(2);
}

const pgRoot = "/usr/lib/postgresql";
const pgVersion = existsSync(pgRoot)
  ? readdirSync(pgRoot)
      .sort((a, b) => Number(a) - Number(b))
      .at(-1)
  : undefined;
if (pgVersion === undefined) {
  console.error(`failover: no PostgreSQL under ${pgRoot}; install the postgresql package (.ci/run does)`);
  process.exit(2);
}
const bin = (name: string) => join(pgRoot, pgVersion, "bin", name);
const asRoot = process.getuid?.() === 0;
/** PostgreSQL's binaries refuse to run as root: run them as `postgres` then. */
function pg(name: string, argv: string[]): string {
  const [file, full] = asRoot ? ["runuser", ["-u", "postgres", "--", bin(name), ...argv]] : [bin(name), argv];
  return execFileSync(file, full, { cwd: "/tmp", encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 });
}

const startedMs = Date.now();
const deadlineMs = startedMs + secondsMax * 1000;
const dir = mkdtempSync(join(tmpdir(), "tally-failover-"));
if (asRoot) execFileSync("chown", ["postgres:", dir]);
const problems: string[] = [];

interface Cluster {
  name: string;
  dataDir: string;
  port: number;
}
/** Three distinct free ports: A, B and Tally (freePort may hand out the same one twice). */
const ports = new Set<number>();
while (ports.size < 3) ports.add(await freePort());
const [portA, portB, portTally] = [...ports] as [number, number, number];
const clusters: [Cluster, Cluster] = [
  { name: "A", dataDir: join(dir, "A"), port: portA },
  { name: "B", dataDir: join(dir, "B"), port: portB },
];
const settings = (c: Cluster) =>
  [
    `port = ${c.port}`,
    "listen_addresses = '127.0.0.1'",
    // TCP only: a SIGKILLed postmaster's socket lock file would block the re-seeded one.
    "unix_socket_directories = ''",
    "wal_level = replica",
    "max_wal_senders = 10",
    "hot_standby = on",
    "synchronous_standby_names = '*'",
    "synchronous_commit = remote_apply",
    "wal_sender_timeout = 5s",
    "wal_receiver_status_interval = 1s",
    "fsync = on",
    "",
  ].join("\n");
const start = (c: Cluster) => pg("pg_ctl", ["-D", c.dataDir, "-l", join(dir, `${c.name}.log`), "-w", "-t", "60", "start"]);
/** A standby of `primary` in c.dataDir (pg_basebackup -R writes standby.signal and primary_conninfo). */
function seedStandby(c: Cluster, primary: Cluster): void {
  rmSync(c.dataDir, { recursive: true, force: true });
  pg("pg_basebackup", [
    "-h",
    "127.0.0.1",
    "-p",
    String(primary.port),
    "-U",
    "postgres",
    "-D",
    c.dataDir,
    "-R",
    "-X",
    "stream",
    "-c",
    "fast",
  ]);
  appendFileSync(join(c.dataDir, "postgresql.conf"), settings(c));
  start(c);
}

/** SIGKILL the postmaster, as a machine dying would; its backends exit when they see it gone. */
function killCluster(c: Cluster): void {
  const pid = Number(readFileSync(join(c.dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
  process.kill(pid, "SIGKILL");
}
function psql(c: Cluster, sql: string): string {
  return pg("psql", [
    "-h",
    "127.0.0.1",
    "-p",
    String(c.port),
    "-U",
    "postgres",
    "-d",
    "postgres",
    "-v",
    "ON_ERROR_STOP=1",
    "-qAtc",
    sql,
  ]).trim();
}

let [primary, standby] = clusters;
pg("initdb", ["-D", primary.dataDir, "-U", "postgres", "--auth=trust", "--no-sync"]);
appendFileSync(join(primary.dataDir, "postgresql.conf"), settings(primary));
start(primary);
seedStandby(standby, primary);
psql(primary, "CREATE DATABASE tally");
const url = `postgres://postgres@127.0.0.1:${clusters[0].port},127.0.0.1:${clusters[1].port}/tally?target_session_attrs=read-write`;

const env = {
  HOST: "127.0.0.1",
  PORT: String(portTally),
  TALLY_DATABASE_URL: url,
  TALLY_LOG_LEVEL: "info",
  TALLY_SHUTDOWN_DRAIN_MS: "5000",
};
const server = await spawnServer({ args: [tallyCli, "serve"], env, logPath: join(dir, "server.log"), startTimeoutMs: 60_000 });
const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
const limitNanos = 1_000_000_000_000_000n;
for (let p = 0; p < projects; p++) await client.setProjectBudget({ projectId: `crash-p${p}`, limitNanos });

// --- load (the crash test's retrying clients) ---------------------------------
const loadScript = fileURLToPath(new URL("../crashtest/load.ts", import.meta.url));
let acksSeen = 0;
const child: ChildProcess = fork(loadScript, [], {
  env: {
    ...process.env,
    CRASH_URL: server.url,
    CRASH_LOADER: "F0",
    CRASH_WORKERS: String(workers),
    CRASH_PROJECTS: String(projects),
    CRASH_ATTEMPT_TIMEOUT_MS: "3000",
    CRASH_RUN_MS_MAX: String(secondsMax * 1000),
  },
  stdio: ["ignore", "inherit", "inherit", "ipc"],
});
const reportPromise = new Promise<LoadReport>((resolve, reject) => {
  child.on("message", (message: { type: string; report?: LoadReport; acked?: number }) => {
    if (message.type === "report" && message.report) resolve(message.report);
    if (message.type === "progress" && message.acked !== undefined) acksSeen += message.acked;
  });
  child.once("exit", (code) => reject(new Error(`load process exited with ${code} before reporting`)));
});

// --- failovers ------------------------------------------------------------------
const finishReserveMs = Math.min(60_000, secondsMax * 250);
const windowsMs: number[] = [];
let done = 0;
while (done < failovers && Date.now() < deadlineMs - finishReserveMs) {
  const acksBefore = acksSeen;
  while (acksSeen < acksBefore + 50 && Date.now() < deadlineMs - finishReserveMs) await sleep(10);
  await sleep(Math.random() * 300);
  killCluster(primary);
  const killedMs = Date.now();
  const acksAtKill = acksSeen;
  // Promote as soon as the standby sees its primary gone (an operator or
  // Patroni would; here at once, so the window is Tally's part plus promotion).
  pg("pg_ctl", ["-D", standby.dataDir, "-w", "-t", "60", "promote"]);
  [primary, standby] = [standby, primary];
  // The new primary waits for a synchronous standby before any COMMIT returns:
  // re-seed the old primary from it so writes can be acknowledged again.
  seedStandby(standby, primary);
  // Progress reports arrive every few hundred ms; the first one after the kill
  // that counts new acks marks the end of the window.
  while (acksSeen === acksAtKill && Date.now() < deadlineMs) await sleep(5);
  windowsMs.push(Date.now() - killedMs);
  done++;
}
if (done < failovers) problems.push(`only ${done} of ${failovers} failovers within --seconds ${secondsMax}`);
await sleep(500);
child.send({ type: "stop" });
const report = await reportPromise;

// --- checks -----------------------------------------------------------------------
type Totals = { count: bigint; costNanos: bigint; inputTokens: bigint; outputTokens: bigint };
const zero = (): Totals => ({ count: 0n, costNanos: 0n, inputTokens: 0n, outputTokens: 0n });
const fields = ["count", "costNanos", "inputTokens", "outputTokens"] as const;
const acked = new Map<string, Totals>();
for (const [projectId, s] of Object.entries(report.acknowledged)) {
  acked.set(projectId, {
    count: BigInt(s.count),
    costNanos: BigInt(s.costNanos),
    inputTokens: BigInt(s.inputTokens),
    outputTokens: BigInt(s.outputTokens),
  });
}
for (const r of report.rejected) problems.push(`request ${r.request.projectId}/${r.request.requestId} refused: ${r.code} ${r.message}`);
const ackedCount = [...acked.values()].reduce((n, t) => n + t.count, 0n);
if (ackedCount === 0n) problems.push("no write was acknowledged: the load never ran");

async function withRetry<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!retryable(ConnectError.from(error).code) || attempt >= 200 || Date.now() > deadlineMs + 60_000) throw error;
      await sleep(50);
    }
  }
}
async function readTotals(projectId: string): Promise<Totals> {
  const { projectCost: c } = await withRetry(() => client.getProjectCost({ projectId }));
  return {
    count: c?.recordCount ?? 0n,
    costNanos: c?.totalCostNanos ?? 0n,
    inputTokens: c?.inputTokens ?? 0n,
    outputTokens: c?.outputTokens ?? 0n,
  };
}
const projectIds = [...new Set([...acked.keys(), ...report.unacknowledged.map((r) => r.projectId)])].sort();
for (const projectId of projectIds) {
  const stored = await readTotals(projectId);
  const want = acked.get(projectId) ?? zero();
  for (const f of fields)
    if (stored[f] < want[f]) problems.push(`LOST: ${projectId} ${f} is ${stored[f]}, below the ${want[f]} acknowledged`);
}
const all = new Map<string, Totals>([...acked].map(([k, t]) => [k, { ...t }]));
const send = (req: CrashRequest, holdId = req.holdId ?? "") =>
  withRetry(() =>
    client.recordCost({
      ...req,
      costNanos: BigInt(req.costNanos),
      inputTokens: BigInt(req.inputTokens),
      outputTokens: BigInt(req.outputTokens),
      model: "crash-test",
      holdId,
    }),
  );
let unackedCommitted = 0;
for (const req of report.unacknowledged) {
  const res = await send(req).catch((error: unknown) => {
    if (req.holdId && ConnectError.from(error).code === Code.FailedPrecondition) return send(req, "");
    throw error;
  });
  if (res.duplicate) unackedCommitted++;
  const t = all.get(req.projectId) ?? zero();
  t.count += 1n;
  t.costNanos += BigInt(req.costNanos);
  t.inputTokens += BigInt(req.inputTokens);
  t.outputTokens += BigInt(req.outputTokens);
  all.set(req.projectId, t);
}
for (const req of report.sample) {
  if (!(await send(req)).duplicate) problems.push(`DOUBLE: acknowledged ${req.projectId}/${req.requestId} was counted again when re-sent`);
}
for (const projectId of projectIds) {
  const stored = await readTotals(projectId);
  const want = all.get(projectId) ?? zero();
  for (const f of fields) {
    if (stored[f] < want[f]) problems.push(`LOST: ${projectId} ${f} is ${stored[f]}, expected exactly ${want[f]}`);
    if (stored[f] > want[f]) problems.push(`DOUBLE: ${projectId} ${f} is ${stored[f]}, expected exactly ${want[f]}`);
  }
}

const stop = await stopServer(server.child, 20_000);
if (stop.code !== 0) problems.push(`SIGTERM: server exited with ${stop.code ?? stop.signal}, expected 0`);
for (const c of clusters) {
  try {
    pg("pg_ctl", ["-D", c.dataDir, "-m", "immediate", "-w", "stop"]);
  } catch {
    // already down
  }
}
const sorted = [...windowsMs].sort((a, b) => a - b);
const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
const distinct = [...all.values()].reduce((n, t) => n + t.count, 0n);
for (const problem of problems.slice(0, 50)) console.error(`failover: ${problem}`);
console.log(
  `failover: ${problems.length === 0 ? "PASS" : "FAIL"} failovers=${done} acknowledged=${ackedCount} distinct=${distinct} ` +
    `unacknowledged_at_stop=${report.unacknowledged.length} (already_committed=${unackedCommitted}) duplicates_answered=${report.duplicatesAnswered} ` +
    `retries=${
      Object.entries(report.retriesByCode)
        .map(([c, n]) => `${c}:${n}`)
        .join(",") || "none"
    } ` +
    `unavailable_ms=${windowsMs.join(",")} (median ${median}) problems=${problems.length} seconds=${((Date.now() - startedMs) / 1000).toFixed(1)}${args.has("keep") ? ` dir=${dir}` : ""}`,
);
if (!args.has("keep")) rmSync(dir, { recursive: true, force: true });
process.exitCode = problems.length === 0 ? 0 : 1;
