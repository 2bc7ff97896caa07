// `node bench/ops/backup-load.ts`: `tally backup` of a served SQLite file
// while --writers clients write to it, then proof that each backup holds every
// write acknowledged before it began, nothing half-applied, and keys that
// still make retries duplicates:
// 1. starts `tally serve` on a fresh file (or a copy of a --preload-rows
//    database built by bench/lib/scale-db.ts, for realistic sizes);
// 2. runs --writers agents in this process: RecordCost with unique
//    request_ids, retried until acknowledged; every 8th call reserves a hold
//    first (CheckBudget reserve) and settles it;
// 3. --backups times: notes the acknowledged set, runs `tally backup` as a
//    separate process (timed), and keeps writing meanwhile;
// 4. stops the load and the server; restores each backup into a new
//    directory with `tally restore` (which runs `tally check` on it), reads
//    the restored file: every request acknowledged before its backup began
//    must be there; starts a server on it and re-sends acknowledged requests:
//    each must be a duplicate.
// Prints one summary line (backup wall time, copy time and size per backup);
// exits 1 on any problem. Bounded by --seconds.
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { retryable } from "../crashtest/protocol.ts";
import { freePort, intArg, parseArgs, sleep, spawnServer, stopServer, tallyCli } from "../lib/process.ts";
import { scaleDatabase } from "../lib/scale-db.ts";

const run = promisify(execFile);
const usage =
  "usage: node bench/ops/backup-load.ts [--writers 64] [--backups 3] [--warmup-ms 2000] [--preload-rows 0] [--preload-projects 1000] [--seconds 300] [--keep]";
let args: Map<string, string>,
  writers: number,
  backups: number,
  warmupMs: number,
  preloadRows: number,
  preloadProjects: number,
  secondsMax: number;
try {
  args = parseArgs(process.argv.slice(2));
  writers = intArg(args, "writers", 64, 1, 1024);
  backups = intArg(args, "backups", 3, 1, 20);
  warmupMs = intArg(args, "warmup-ms", 2_000, 0, 600_000);
  preloadRows = intArg(args, "preload-rows", 0, 0, 100_000_000);
  preloadProjects = intArg(args, "preload-projects", 1_000, 1, 1_000_000);
  secondsMax = intArg(args, "seconds", 300, 10, 3_600);
} catch (error) {
  console.error(`backup-load: ${(error as Error).message}\n${usage}`);
  process.exit(2);
}
const deadlineMs = Date.now() + secondsMax * 1000;
const problems: string[] = [];
const dir = mkdtempSync(join(tmpdir(), "tally-backup-load-"));
const dbPath = join(dir, "tally.db");
if (preloadRows > 0) copyFileSync(await scaleDatabase(preloadRows, preloadProjects, (m) => console.error(`backup-load: ${m}`)), dbPath);
const port = await freePort();
const serverEnv = (path: string, p: number) => ({
  HOST: "127.0.0.1",
  PORT: String(p),
  TALLY_DATABASE_URL: `sqlite:${path}`,
  TALLY_LOG_LEVEL: "info",
});
let server = await spawnServer({ args: [tallyCli, "serve"], env: serverEnv(dbPath, port), logPath: join(dir, "server.log") });
const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
const projects = 16;
for (let p = 0; p < projects; p++) await client.setProjectBudget({ projectId: `bk-p${p}`, limitNanos: 1_000_000_000_000_000n });

interface Ack {
  projectId: string;
  requestId: string;
  costNanos: bigint;
  holdId: string;
}
const acked: Ack[] = [];
const stop = new AbortController();

async function retrying<T>(call: () => Promise<T>): Promise<T> {
  for (let backoffMs = 10; ; backoffMs = Math.min(backoffMs * 2, 250)) {
    try {
      return await call();
    } catch (error) {
      if (!retryable(ConnectError.from(error).code) || Date.now() > deadlineMs) throw error;
      await sleep(backoffMs);
    }
  }
}

async function writer(w: number): Promise<void> {
  for (let seq = 0; !stop.signal.aborted && Date.now() < deadlineMs; seq++) {
    const req = {
      projectId: `bk-p${(w + seq) % projects}`,
      requestId: `w${w}-${seq}`,
      costNanos: BigInt(1 + ((w * 7919 + seq * 104_729) % 999_983)),
      inputTokens: 10n,
      outputTokens: 3n,
      agentId: `agent-${w % 4}`,
      model: "bk",
    };
    let holdId = "";
    if (seq % 8 === 0) {
      const decision = await retrying(() =>
        client.checkBudget({
          projectId: req.projectId,
          estimatedCostNanos: req.costNanos,
          reserve: true,
          holdTtl: { seconds: 60n, nanos: 0 },
          requestId: req.requestId,
        }),
      );
      holdId = decision.holdId;
    }
    await retrying(() => client.recordCost({ ...req, holdId }));
    acked.push({ projectId: req.projectId, requestId: req.requestId, costNanos: req.costNanos, holdId });
  }
}

const load = Promise.all(Array.from({ length: writers }, (_, w) => writer(w)));
await sleep(warmupMs);
interface Taken {
  file: string;
  ackedBefore: number;
  wallMs: number;
  copyMs: number;
  bytes: number;
  acksDuring: number;
}
const taken: Taken[] = [];
for (let b = 0; b < backups && Date.now() < deadlineMs - 60_000; b++) {
  const file = join(dir, `backup-${b}.db`);
  const ackedBefore = acked.length;
  const startedMs = performance.now();
  const { stdout } = await run(process.execPath, [tallyCli, "backup", file], {
    env: { ...process.env, TALLY_DATABASE_URL: `sqlite:${dbPath}` },
  }).catch((error: { stdout: string; stderr: string }) => {
    throw new Error(`tally backup failed: ${error.stderr || error.stdout}`);
  });
  const wallMs = performance.now() - startedMs;
  const copyMs = Number(/copied in (\d+) ms/.exec(stdout)?.[1] ?? NaN);
  taken.push({ file, ackedBefore, wallMs, copyMs, bytes: statSync(file).size, acksDuring: acked.length - ackedBefore });
  await sleep(500);
}
stop.abort();
await load;
const totalAcked = acked.length;
const stopped = await stopServer(server.child, 20_000);
if (stopped.code !== 0) problems.push(`the server exited with ${stopped.code ?? stopped.signal} on SIGTERM`);

let duplicatesChecked = 0;
for (const [b, t] of taken.entries()) {
  const restoredPath = join(dir, `restored-${b}`, "tally.db");
  const env = { ...process.env, TALLY_DATABASE_URL: `sqlite:${restoredPath}` };
  await run(process.execPath, [tallyCli, "restore", t.file], { env }).catch((error: { stderr: string; stdout: string }) => {
    problems.push(`backup ${b}: tally restore failed: ${(error.stderr || error.stdout).trim()}`);
  });
  await run(process.execPath, [tallyCli, "check"], { env }).catch((error: { stderr: string; stdout: string }) => {
    problems.push(
      `backup ${b}: tally check failed on the restored database: ${(error.stderr || error.stdout).trim().split("\n").slice(-3).join(" | ")}`,
    );
  });
  const db = new Database(restoredPath, { readonly: true });
  const present = new Set(db.prepare("SELECT project_id || '/' || request_id AS k FROM cost_records").pluck().all() as string[]);
  db.close();
  const missing = acked.slice(0, t.ackedBefore).filter((a) => !present.has(`${a.projectId}/${a.requestId}`));
  for (const m of missing.slice(0, 10))
    problems.push(`backup ${b}: LOST ${m.projectId}/${m.requestId}, acknowledged before the backup began`);
  if (missing.length > 10) problems.push(`backup ${b}: ${missing.length} acknowledged writes missing in all`);
  // A retry after restore is still a duplicate.
  const restoredPort = await freePort();
  server = await spawnServer({
    args: [tallyCli, "serve"],
    env: serverEnv(restoredPath, restoredPort),
    logPath: join(dir, `restored-${b}.log`),
  });
  const restoredClient = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
  for (const a of acked.slice(0, t.ackedBefore).filter((_, i) => i % Math.max(1, Math.floor(t.ackedBefore / 20)) === 0)) {
    const res = await restoredClient
      .recordCost({
        projectId: a.projectId,
        requestId: a.requestId,
        costNanos: a.costNanos,
        inputTokens: 10n,
        outputTokens: 3n,
        agentId: `agent-${Number(/^w(\d+)/.exec(a.requestId)?.[1]) % 4}`,
        model: "bk",
        holdId: a.holdId,
      })
      .catch((error: unknown) => {
        problems.push(`backup ${b}: retry of ${a.projectId}/${a.requestId} after restore failed: ${ConnectError.from(error).message}`);
        return undefined;
      });
    if (res && !res.duplicate) problems.push(`backup ${b}: DOUBLE: retry of ${a.projectId}/${a.requestId} after restore was counted again`);
    duplicatesChecked++;
  }
  await stopServer(server.child, 20_000);
}
if (taken.length < backups) problems.push(`only ${taken.length} of ${backups} backups within --seconds ${secondsMax}`);
if (totalAcked === 0) problems.push("no write was acknowledged: the load never ran");

const list = (f: (t: Taken) => number) => taken.map((t) => Math.round(f(t))).join(",");
for (const problem of problems.slice(0, 50)) console.error(`backup-load: ${problem}`);
console.log(
  `backup-load: ${problems.length === 0 ? "PASS" : "FAIL"} writers=${writers} backups=${taken.length} acknowledged=${totalAcked} ` +
    `acked_before=${list((t) => t.ackedBefore)} backup_wall_ms=${list((t) => t.wallMs)} copy_ms=${list((t) => t.copyMs)} bytes=${list((t) => t.bytes)} ` +
    `acks_during_backup=${list((t) => t.acksDuring)} retries_checked=${duplicatesChecked} problems=${problems.length}${args.has("keep") ? ` dir=${dir}` : ""}`,
);
if (!args.has("keep")) rmSync(dir, { recursive: true, force: true });
process.exitCode = problems.length === 0 ? 0 : 1;
