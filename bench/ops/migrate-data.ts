// `node bench/ops/migrate-data.ts --rows 1000000`: times `tally migrate-data`
// of a SQLite database with --rows cost records over --projects projects
// (built once by bench/lib/scale-db.ts, cached) into a new PostgreSQL database
// (TALLY_TEST_POSTGRES_URL's server, a role with CREATEDB), --rounds times,
// then proves the copy on the last one: exact totals per project (migrate-data
// itself checks both ends and compares them), and a retried request_id of the
// SQLite ledger is a duplicate on a Tally serving the PostgreSQL copy.
// Prints the rows/s of each round and the median. Drops its databases.
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { freePort, intArg, parseArgs, spawnServer, stopServer, tallyCli } from "../lib/process.ts";
import { projectId, scaleDatabase } from "../lib/scale-db.ts";

const run = promisify(execFile);
const args = parseArgs(process.argv.slice(2));
const rows = intArg(args, "rows", 1_000_000, 1_000, 100_000_000);
const projects = intArg(args, "projects", 1_000, 1, 1_000_000);
const rounds = intArg(args, "rounds", 3, 1, 10);
const adminUrl = process.env.TALLY_TEST_POSTGRES_URL;
if (!adminUrl) {
  console.error("migrate-data bench: set TALLY_TEST_POSTGRES_URL to a PostgreSQL role with CREATEDB");
  process.exit(2);
}
const admin = async (sql: string) => {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
};
// DROP ... WITH (FORCE) cannot end an autovacuum worker analysing the fresh
// copy (42501 for a non-superuser): wait for it, bounded.
const dropDatabase = async (name: string) => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } catch (error) {
      if ((error as { code?: string }).code !== "42501" || attempt === 30) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }
};

const dir = mkdtempSync(join(tmpdir(), "tally-migrate-bench-"));
const sqlitePath = join(dir, "tally.db");
copyFileSync(await scaleDatabase(rows, projects, (m) => console.error(`migrate-data bench: ${m}`)), sqlitePath);
const rates: number[] = [];
let lastUrl = "";
for (let round = 1; round <= rounds; round++) {
  const name = `tally_migrate_bench_${process.pid}_${round}`;
  await admin(`DROP DATABASE IF EXISTS ${name}`);
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const startedMs = performance.now();
  const { stdout } = await run(process.execPath, [tallyCli, "migrate-data", "--from", `sqlite:${sqlitePath}`, "--to", url.toString()], {
    maxBuffer: 64 * 1024 * 1024,
  }).catch((error: { stdout: string; stderr: string }) => {
    throw new Error(`migrate-data failed:\n${error.stdout}\n${error.stderr}`);
  });
  const wallS = (performance.now() - startedMs) / 1000;
  const copied = /copied (\d+) rows in ([\d.]+) s \((\d+) rows\/s/.exec(stdout);
  rates.push(Number(copied?.[3]));
  console.log(
    `migrate-data bench: round ${round}: ${copied?.[1]} rows copied in ${copied?.[2]} s = ${copied?.[3]} rows/s; ${wallS.toFixed(1)} s with both checks`,
  );
  for (const line of stdout.split("\n").filter((l) => /totals:|OK/.test(l))) console.log(`  ${line}`);
  if (round < rounds) await dropDatabase(name);
  else lastUrl = url.toString();
}

// Keys came along: a retry of a SQLite record is a duplicate on PostgreSQL.
const server = await spawnServer({
  args: [tallyCli, "serve"],
  env: { HOST: "127.0.0.1", PORT: String(await freePort()), TALLY_DATABASE_URL: lastUrl, TALLY_LOG_LEVEL: "info" },
  logPath: join(dir, "server.log"),
});
const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
let duplicates = 0;
// scale-db's first record of the i-th project in id order: r000000, cost
// 1000 + (i*31 % 100000), 100 input and 20 output tokens.
const ids = Array.from({ length: projects }, (_, n) => projectId(n)).sort();
for (const i of [0, Math.floor(projects / 2), projects - 1]) {
  const res = await client.recordCost({
    projectId: ids[i]!,
    requestId: "r000000",
    costNanos: BigInt(1_000 + ((i * 31) % 100_000)),
    inputTokens: 100n,
    outputTokens: 20n,
    model: "scale",
  });
  if (res.duplicate) duplicates++;
}
await stopServer(server.child, 20_000);
await dropDatabase(new URL(lastUrl).pathname.slice(1));
rmSync(dir, { recursive: true, force: true });
const sorted = [...rates].sort((a, b) => a - b);
console.log(
  `migrate-data bench: rows=${rows} projects=${projects} rounds=${rounds} rows_per_s=${rates.join(",")} median=${sorted[Math.floor(sorted.length / 2)]} retries_duplicate=${duplicates}/3`,
);
process.exitCode = duplicates === 3 ? 0 : 1;
