// What happens to a SQLite database between two starts: a write-ahead log
// deleted or damaged after a crash is detected (the server refuses to serve,
// one line saying what to do), `tally check --accept-lost-commits` is the way
// to serve what is left, and `tally restore` puts a backup in place (refused
// while a server holds the file, refused for a damaged backup).
import { execFile } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
  closeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { freePort, spawnServer, stopServer, tallyCli, type ServerProcess } from "../../bench/lib/process.ts";
import { compareCounters } from "../../src/store/sqlite/commit-counter.ts";

const run = promisify(execFile);
const servers: ServerProcess[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await stopServer(server.child, 5_000);
});

function tally(args: string[], dbPath: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [tallyCli, ...args], {
    env: { ...process.env, TALLY_DATABASE_URL: `sqlite:${dbPath}`, TALLY_LOG_LEVEL: "info" },
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}

async function serve(dbPath: string): Promise<ServerProcess> {
  const server = await spawnServer({
    args: [tallyCli, "serve"],
    env: { HOST: "127.0.0.1", PORT: String(await freePort()), TALLY_DATABASE_URL: `sqlite:${dbPath}`, TALLY_LOG_LEVEL: "info" },
    logPath: `${dbPath}.log`,
  });
  servers.push(server);
  return server;
}

/** A served database with `count` records of 1000 nanos each, then kill -9:
 * the commits stay in the WAL (nothing checkpointed them). */
async function crashedWith(count: number): Promise<string> {
  const dbPath = join(mkdtempSync(join(tmpdir(), "tally-recovery-")), "tally.db");
  const server = await serve(dbPath);
  const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
  for (let i = 0; i < count; i++)
    await client.recordCost({ projectId: "p", requestId: `r${i}`, costNanos: 1_000n, inputTokens: 1n, outputTokens: 1n });
  server.child.kill("SIGKILL");
  await new Promise((resolve) => server.child.once("exit", resolve));
  servers.splice(servers.indexOf(server), 1);
  expect(statSync(`${dbPath}-wal`).size).toBeGreaterThan(0);
  return dbPath;
}

describe("a SQLite database that lost committed transactions", () => {
  it("is served again after kill -9 with its WAL intact, with every record", async () => {
    const dbPath = await crashedWith(5);
    const server = await serve(dbPath);
    const { projectCost } = await createClient(BudgetService, createGrpcTransport({ baseUrl: server.url })).getProjectCost({
      projectId: "p",
    });
    expect(projectCost?.recordCount).toBe(5n);
  });

  it("is refused at start when its WAL was deleted, with one line saying what to do", async () => {
    const dbPath = await crashedWith(5);
    rmSync(`${dbPath}-wal`);
    rmSync(`${dbPath}-shm`, { force: true });
    const start = await tally(["serve"], dbPath);
    expect(start.code).toBe(1);
    expect(start.stderr.trim().split("\n")).toHaveLength(1);
    expect(start.stderr).toMatch(
      /is at commit 0 but .*tally\.db\.commits records commit \d+ as acknowledged: \d+ committed write transaction\(s\) are missing .*tally restore <file>.*tally check --accept-lost-commits/,
    );
    const check = await tally(["check"], dbPath);
    expect(check.code).toBe(1);
    expect(check.stdout + check.stderr).toMatch(/committed write transaction\(s\) are missing/);
  });

  it("is refused at start when its WAL was damaged, and served after the loss is accepted", async () => {
    const dbPath = await crashedWith(40);
    // Damage a frame in the middle of the log: SQLite's recovery stops there
    // and drops every later commit without a word.
    const wal = `${dbPath}-wal`;
    const fd = openSync(wal, "r+");
    writeSync(fd, Buffer.alloc(64, 0xa5), 0, 64, Math.floor(statSync(wal).size / 2));
    closeSync(fd);
    rmSync(`${dbPath}-shm`, { force: true });
    const start = await tally(["serve"], dbPath);
    expect(start.code).toBe(1);
    expect(start.stderr).toMatch(
      /committed write transaction\(s\) are missing \(its write-ahead log .*-wal was deleted, damaged or replaced/,
    );

    const accepted = await tally(["check", "--accept-lost-commits"], dbPath);
    expect(accepted.stdout).toMatch(/accepted the loss of \d+ committed write transaction\(s\)/);
    expect(accepted.code).toBe(0); // what is left is consistent: the totals match the rows
    const server = await serve(dbPath);
    const { projectCost } = await createClient(BudgetService, createGrpcTransport({ baseUrl: server.url })).getProjectCost({
      projectId: "p",
    });
    expect(projectCost?.recordCount).toBeLessThan(40n);
  });

  it("counts modulo 2^31: a log one behind (killed before writing it) is fine, a log ahead is a loss", () => {
    expect(compareCounters(7, 6)).toMatchObject({ ok: true });
    expect(compareCounters(0, 2 ** 31 - 1)).toMatchObject({ ok: true });
    expect(compareCounters(5, undefined)).toMatchObject({ ok: true });
    expect(compareCounters(3, 10)).toEqual({ ok: false, databaseCounter: 3, logCounter: 10, missing: 7 });
    expect(compareCounters(2 ** 31 - 2, 1)).toMatchObject({ ok: false, missing: 3 });
  });
});

describe("tally restore", () => {
  it("refuses while a server holds the database, and refuses a damaged backup", async () => {
    const dbPath = await crashedWith(3);
    const server = await serve(dbPath);
    const backup = join(mkdtempSync(join(tmpdir(), "tally-backup-")), "b.db");
    const made = await tally(["backup", backup], dbPath);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(
      /^backup: wrote .*b\.db: \d+ bytes, 3 records of 1 projects, total 3000 nanos; copied in \d+ ms, \d+ ms with the check; check OK\n$/,
    );
    expect(readdirSync(join(backup, "..")).sort()).toEqual(["b.db"]); // one self-contained file
    const again = await tally(["backup", backup], dbPath);
    expect(again).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/^tally backup: .*b\.db already exists: a backup never overwrites a file; name a new one\n$/),
    });

    const refused = await tally(["restore", backup, "--force"], dbPath);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^tally restore: the SQLite database .* is already served by another Tally process .*: stop that server first \(SIGTERM\), then restore\n$/,
    );
    await stopServer(server.child, 10_000);

    const damaged = join(mkdtempSync(join(tmpdir(), "tally-backup-")), "damaged.db");
    copyFileSync(backup, damaged);
    const fd = openSync(damaged, "r+");
    writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, statSync(damaged).size - 8192);
    closeSync(fd);
    const bad = await tally(["restore", damaged, "--force"], dbPath);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^tally restore: the backup .*damaged\.db does not pass tally check \(.*\); nothing was restored\n$/);
  });

  it("puts a backup in place of a database, moving the old one aside, and a retry after it is a duplicate", async () => {
    const dbPath = await crashedWith(4);
    const backup = join(mkdtempSync(join(tmpdir(), "tally-backup-")), "b.db");
    expect((await tally(["backup", backup], dbPath)).code).toBe(0);
    // More writes after the backup, then a restore: they are gone, the backup's are there.
    let server = await serve(dbPath);
    let client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    await client.recordCost({ projectId: "p", requestId: "after-backup", costNanos: 5n, inputTokens: 0n, outputTokens: 0n });
    await stopServer(server.child, 10_000);
    const withoutForce = await tally(["restore", backup], dbPath);
    expect(withoutForce).toMatchObject({ code: 1, stderr: expect.stringMatching(/already exists: restoring replaces it; pass --force/) });
    const restored = await tally(["restore", backup, "--force"], dbPath);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(
      /is now .*tally\.db\.replaced-[0-9T-]+Z \(with its -wal\)\nrestore: .*restored from .*: 4 records of 1 projects, total 4000 nanos; start the server\n$/,
    );
    expect(readdirSync(join(dbPath, "..")).some((f) => f.startsWith("tally.db.replaced-"))).toBe(true);
    expect(readFileSync(`${dbPath}.commits`, "utf8").trim()).toMatch(/^\d+$/);
    server = await serve(dbPath);
    client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    expect((await client.getProjectCost({ projectId: "p" })).projectCost?.recordCount).toBe(4n);
    expect(
      (await client.recordCost({ projectId: "p", requestId: "r2", costNanos: 1_000n, inputTokens: 1n, outputTokens: 1n })).duplicate,
    ).toBe(true);
    expect(existsSync(`${dbPath}-wal`)).toBe(true);
  });
});
