// `npm run crashtest`: proves that Tally never loses an acknowledged cost and
// never counts one twice, across repeated kill -9.
//
// 1. Starts `node src/cli.ts serve` on a fresh SQLite file and fixed loopback port.
// 2. Forks load processes (bench/crashtest/load.ts): retrying clients with
//    idempotent request_ids.
// 3. SIGKILLs the server at random moments while writes are flowing (each time
//    after the restarted server has acknowledged something), restarting it on the
//    same file, --kills times.
// 4. Stops the load and checks: every project's totals >= the sum of what was
//    acknowledged; after retrying every unacknowledged request to completion the
//    totals equal the sum of all distinct requests exactly (so nothing was lost
//    and nothing counted twice); re-sent acknowledged requests come back as
//    duplicates; no hold (CheckBudget reserve, 1 s TTL; some settled by
//    RecordCost hold_id, some abandoned) is counted once its TTL passed; after
//    a clean SIGTERM (exit 0) the ledger rows in the file add up to the totals.
// Prints one summary line; exits 1 on any loss or inconsistency, 2 on a usage
// error. Bounded by --kills and --seconds.
import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { exited, freePort, intArg, parseArgs, sleep, spawnServer, stopServer, tallyCli, type ServerProcess } from "../lib/process.ts";
import { retryable, type CrashRequest, type LoadReport } from "./protocol.ts";

const usage = `usage: npm run crashtest -- [--kills 20] [--seconds 300] [--loaders 2] [--workers 16]
       [--projects 8] [--max-uptime-ms 600] [--keep]`;

let args: Map<string, string>;
let kills: number, secondsMax: number, loaders: number, workers: number, projects: number, maxUptimeMs: number;
try {
  args = parseArgs(process.argv.slice(2));
  if (args.has("help")) {
    console.log(usage);
    process.exit(0);
  }
  kills = intArg(args, "kills", 20, 1, 1_000);
  secondsMax = intArg(args, "seconds", 300, 10, 3_600);
  loaders = intArg(args, "loaders", 2, 1, 8);
  workers = intArg(args, "workers", 16, 1, 256);
  projects = intArg(args, "projects", 8, 1, 1_000);
  maxUptimeMs = intArg(args, "max-uptime-ms", 600, 10, 60_000);
} catch (error) {
  console.error(`crashtest: ${(error as Error).message}\n${usage}`);
  process.exit(2);
}

const startedMs = Date.now();
const deadlineMs = startedMs + secondsMax * 1000;
/** Time kept back at the end for stopping the load, retrying and checking. */
const finishReserveMs = Math.min(60_000, secondsMax * 250);
const dir = mkdtempSync(join(tmpdir(), "tally-crashtest-"));
const dbPath = join(dir, "tally.db");
const logPath = join(dir, "server.log");
const port = await freePort();
const env = {
  HOST: "127.0.0.1",
  PORT: String(port),
  TALLY_DATABASE_URL: `sqlite:${dbPath}`,
  TALLY_LOG_LEVEL: "info",
  TALLY_SHUTDOWN_DRAIN_MS: "5000",
};
const problems: string[] = [];

const start = () => spawnServer({ args: [tallyCli, "serve"], env, logPath, startTimeoutMs: 30_000 });
let server: ServerProcess = await start();

// Limits high enough never to refuse, so reserve = true places real holds.
{
  const setup = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
  for (let p = 0; p < projects; p++) await setup.setProjectBudget({ projectId: `crash-p${p}`, limitNanos: 1_000_000_000_000_000n });
}

// --- load ---------------------------------------------------------------------
const loadScript = fileURLToPath(new URL("./load.ts", import.meta.url));
let acksSeen = 0;
const children: ChildProcess[] = [];
const reports: Promise<LoadReport>[] = [];
for (let l = 0; l < loaders; l++) {
  const child = fork(loadScript, [], {
    env: {
      ...process.env,
      CRASH_URL: server.url,
      CRASH_LOADER: `L${l}`,
      CRASH_WORKERS: String(workers),
      CRASH_PROJECTS: String(projects),
      CRASH_ATTEMPT_TIMEOUT_MS: "3000",
      CRASH_RUN_MS_MAX: String(secondsMax * 1000),
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.push(child);
  reports.push(
    new Promise((resolve, reject) => {
      child.on("message", (message: { type: string; report?: LoadReport; acked?: number }) => {
        if (message.type === "report" && message.report) resolve(message.report);
        if (message.type === "progress" && message.acked !== undefined) acksSeen += message.acked;
      });
      child.once("exit", (code) => reject(new Error(`load process L${l} exited with ${code} before reporting`)));
    }),
  );
}

// --- kills --------------------------------------------------------------------
let killsDone = 0;
const downtimesMs: number[] = [];
while (killsDone < kills && Date.now() < deadlineMs - finishReserveMs) {
  // Kill only once the (re)started server has acknowledged writes, so every
  // kill lands under load; then at a random moment.
  const acksAtStart = acksSeen;
  while (acksSeen === acksAtStart && Date.now() < deadlineMs - finishReserveMs) await sleep(10);
  await sleep(Math.random() * maxUptimeMs);
  server.child.kill("SIGKILL");
  const killedMs = Date.now();
  const { signal } = await exited(server.child);
  if (signal !== "SIGKILL") problems.push(`server exited by itself (${signal}) before kill ${killsDone + 1}`);
  killsDone++;
  server = await start();
  downtimesMs.push(Date.now() - killedMs);
}
if (killsDone < kills) problems.push(`only ${killsDone} of ${kills} kills within --seconds ${secondsMax}`);

// Let the last incarnation take load for a moment, then stop the load.
await sleep(300);
for (const child of children) child.send({ type: "stop" });
const loadReports = await Promise.all(reports);

// --- checks -------------------------------------------------------------------
const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
type Totals = { count: bigint; costNanos: bigint; inputTokens: bigint; outputTokens: bigint };
const zero = (): Totals => ({ count: 0n, costNanos: 0n, inputTokens: 0n, outputTokens: 0n });
const add = (t: Totals, r: { costNanos: string; inputTokens: string; outputTokens: string }, count = 1n) => {
  t.count += count;
  t.costNanos += BigInt(r.costNanos);
  t.inputTokens += BigInt(r.inputTokens);
  t.outputTokens += BigInt(r.outputTokens);
};
const acked = new Map<string, Totals>();
const unacked: CrashRequest[] = [];
let attempts = 0;
let duplicatesAnswered = 0;
const retriesByCode: Record<string, number> = {};
for (const report of loadReports) {
  for (const [projectId, sums] of Object.entries(report.acknowledged)) {
    const t = acked.get(projectId) ?? zero();
    add(t, sums, BigInt(sums.count));
    acked.set(projectId, t);
  }
  unacked.push(...report.unacknowledged);
  attempts += report.attempts;
  duplicatesAnswered += report.duplicatesAnswered;
  for (const [code, n] of Object.entries(report.retriesByCode)) retriesByCode[code] = (retriesByCode[code] ?? 0) + n;
  for (const r of report.rejected) problems.push(`request ${r.request.projectId}/${r.request.requestId} refused: ${r.code} ${r.message}`);
}
const ackedCount = [...acked.values()].reduce((n, t) => n + t.count, 0n);
if (ackedCount === 0n) problems.push("no write was acknowledged: the load never ran");

async function readTotals(projectId: string): Promise<Totals> {
  const { projectCost } = await withRetry(() => client.getProjectCost({ projectId }));
  return {
    count: projectCost?.recordCount ?? 0n,
    costNanos: projectCost?.totalCostNanos ?? 0n,
    inputTokens: projectCost?.inputTokens ?? 0n,
    outputTokens: projectCost?.outputTokens ?? 0n,
  };
}

async function withRetry<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const code = ConnectError.from(error).code;
      if (!retryable(code) || attempt >= 50 || Date.now() > deadlineMs) throw error;
      await sleep(50);
    }
  }
}

const fields = ["count", "costNanos", "inputTokens", "outputTokens"] as const;
const projectIds = [...new Set([...acked.keys(), ...unacked.map((r) => r.projectId)])].sort();

// Every acknowledged write is in the totals (some unacknowledged ones may be too).
for (const projectId of projectIds) {
  const stored = await readTotals(projectId);
  const want = acked.get(projectId) ?? zero();
  for (const f of fields)
    if (stored[f] < want[f]) problems.push(`LOST: ${projectId} ${f} is ${stored[f]}, below the ${want[f]} acknowledged`);
}

// Retry every unacknowledged request to completion; those that had committed
// before a kill come back as duplicates.
const all = new Map<string, Totals>([...acked].map(([k, t]) => [k, { ...t }]));
let unackedCommitted = 0;
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
for (const req of unacked) {
  const res = await send(req).catch((error: unknown) => {
    // Its hold expired and it was never recorded: record it without (the contract's advice).
    if (req.holdId && ConnectError.from(error).code === Code.FailedPrecondition) return send(req, "");
    throw error;
  });
  if (res.duplicate) unackedCommitted++;
  const t = all.get(req.projectId) ?? zero();
  add(t, req);
  all.set(req.projectId, t);
}

// Re-sending acknowledged requests adds nothing.
let resent = 0;
for (const req of loadReports.flatMap((r) => r.sample)) {
  const res = await send(req);
  resent++;
  if (!res.duplicate) problems.push(`DOUBLE: acknowledged ${req.projectId}/${req.requestId} was counted again when re-sent`);
}

// Exactly the distinct requests: nothing lost, nothing twice.
const finalTotals = new Map<string, Totals>();
for (const projectId of projectIds) {
  const stored = await readTotals(projectId);
  finalTotals.set(projectId, stored);
  const want = all.get(projectId) ?? zero();
  for (const f of fields) {
    if (stored[f] < want[f]) problems.push(`LOST: ${projectId} ${f} is ${stored[f]}, expected exactly ${want[f]}`);
    if (stored[f] > want[f]) problems.push(`DOUBLE: ${projectId} ${f} is ${stored[f]}, expected exactly ${want[f]}`);
  }
}

// No hold is counted past its TTL: every hold in this run had a 1 s TTL and
// the last was placed before the load stopped; wait that out (plus margin),
// then no project may show reserved money or an active hold.
const holdsPlaced = loadReports.reduce((n, r) => n + r.holdsPlaced, 0);
const holdsSettled = loadReports.reduce((n, r) => n + r.holdsSettled, 0);
const holdsAbandoned = loadReports.reduce((n, r) => n + r.holdsAbandoned, 0);
const holdsExpiredBeforeSettle = loadReports.reduce((n, r) => n + r.holdsExpiredBeforeSettle, 0);
const reserveRetries = loadReports.reduce((n, r) => n + r.reserveRetries, 0);
if (holdsPlaced === 0) problems.push("no hold was placed: the hold part of the load never ran");
await sleep(1_500);
for (const projectId of projectIds) {
  const { projectCost } = await withRetry(() => client.getProjectCost({ projectId }));
  if ((projectCost?.reservedNanos ?? 0n) !== 0n || (projectCost?.activeHoldCount ?? 0n) !== 0n) {
    problems.push(
      `HOLD: ${projectId} still counts ${projectCost?.activeHoldCount} holds (${projectCost?.reservedNanos} nanos) after every TTL passed`,
    );
  }
  const check = await withRetry(() => client.checkBudget({ projectId, estimatedCostNanos: 0n }));
  const spent = finalTotals.get(projectId)?.costNanos ?? 0n;
  if (check.remainingNanos !== 1_000_000_000_000_000n - spent)
    problems.push(
      `HOLD: ${projectId} CheckBudget remaining ${check.remainingNanos}, expected limit - spent = ${1_000_000_000_000_000n - spent}`,
    );
}

// A clean stop, then the file itself: ledger rows add up to the totals.
const stop = await stopServer(server.child, 20_000);
if (stop.code !== 0) problems.push(`SIGTERM: server exited with ${stop.code ?? stop.signal}, expected 0`);
const db = new Database(dbPath, { readonly: true });
db.defaultSafeIntegers(true);
const rows = db
  .prepare(
    `SELECT t.project_id AS projectId, t.record_count AS count, t.total_cost_nanos AS cost, t.input_tokens AS input, t.output_tokens AS output,
            (SELECT count(*) FROM cost_records r WHERE r.project_id = t.project_id) AS ledgerCount,
            (SELECT coalesce(sum(cost_nanos), 0) FROM cost_records r WHERE r.project_id = t.project_id) AS ledgerCost
       FROM project_totals t`,
  )
  .all() as Array<{ projectId: string; count: bigint; cost: bigint; ledgerCount: bigint; ledgerCost: bigint }>;
db.close();
for (const row of rows) {
  if (row.count !== row.ledgerCount || row.cost !== row.ledgerCost) {
    problems.push(
      `LEDGER: ${row.projectId} totals (${row.count} records, ${row.cost} nanos) differ from its cost_records (${row.ledgerCount}, ${row.ledgerCost})`,
    );
  }
  if (!finalTotals.has(row.projectId)) problems.push(`LEDGER: unexpected project ${row.projectId} in the file`);
}

const distinct = [...all.values()].reduce((n, t) => n + t.count, 0n);
const seconds = ((Date.now() - startedMs) / 1000).toFixed(1);
const downtime = downtimesMs.length ? `${Math.round(downtimesMs.reduce((a, b) => a + b, 0) / downtimesMs.length)}ms` : "-";
const retries =
  Object.entries(retriesByCode)
    .map(([c, n]) => `${c}:${n}`)
    .join(",") || "none";
const verdict = problems.length === 0 ? "PASS" : "FAIL";
for (const problem of problems.slice(0, 50)) console.error(`crashtest: ${problem}`);
console.log(
  `crashtest: ${verdict} kills=${killsDone} acknowledged=${ackedCount} distinct=${distinct} unacknowledged_at_stop=${unacked.length} (already_committed=${unackedCommitted}) ` +
    `duplicates_answered=${duplicatesAnswered} resent_duplicates=${resent} attempts=${attempts} retries=${retries} projects=${projectIds.length} ` +
    `holds=${holdsPlaced} (settled=${holdsSettled} abandoned=${holdsAbandoned} expired_before_settle=${holdsExpiredBeforeSettle} answered_on_retry=${reserveRetries}, none counted past TTL: ${problems.some((p) => p.startsWith("HOLD")) ? "no" : "yes"}) ` +
    `mean_restart=${downtime} problems=${problems.length} seconds=${seconds}${args.has("keep") ? ` dir=${dir}` : ""}`,
);
if (!args.has("keep")) rmSync(dir, { recursive: true, force: true });
process.exitCode = problems.length === 0 ? 0 : 1;
