// Builds (once) a SQLite file with `projects` projects, each with a budget and
// lifetime totals, and `rows` cost records spread evenly over them, the totals
// equal to the records' sums. The schema comes from Tally's own migrations; the
// rows go in directly with prepared statements in big transactions (keys in
// index order), which is minutes instead of hours through the RPC path. The
// file is cached under .bench-cache/ (gitignored) and reused by later runs.
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { initORM } from "../../src/store/orm.ts";
import { repoRoot } from "./process.ts";

export const projectId = (n: number) => `scale-p${n}`;

export async function scaleDatabase(rows: number, projects: number, log: (message: string) => void): Promise<string> {
  if (rows < projects) throw new Error(`need rows (${rows}) >= projects (${projects})`);
  const dir = join(repoRoot, ".bench-cache");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `scale-${rows}-rows-${projects}-projects-v1.db`);
  if (existsSync(path)) {
    // A cache built before a later migration would fail tally check: opening it
    // applies whatever migrations landed since (none: a no-op).
    const { store } = await initORM(`sqlite:${path}`, { synchronous: "NORMAL", busyTimeoutMs: 5_000 });
    await store.close();
    log(`using cached ${path} (migrations brought up to date)`);
    return path;
  }
  const building = `${path}.building`;
  for (const suffix of ["", "-wal", "-shm"]) rmSync(building + suffix, { force: true });
  const { store } = await initORM(`sqlite:${building}`, { synchronous: "NORMAL", busyTimeoutMs: 5_000 });
  await store.close();

  const db = new Database(building);
  db.pragma("journal_mode = OFF");
  db.pragma("synchronous = OFF");
  db.pragma("cache_size = -262144"); // 256 MiB while building
  // Keys in the order the indexes keep them, so every insert appends.
  const ids = Array.from({ length: projects }, (_, n) => projectId(n)).sort();
  const perProject = Math.floor(rows / projects);
  const extra = rows - perProject * projects; // the first `extra` projects get one more
  const baseMs = Date.UTC(2026, 0, 1);
  const insertRecord =
    db.prepare(`INSERT INTO cost_records (project_id, request_id, cost_nanos, input_tokens, output_tokens, agent_id, model, recorded_at_ms,
      total_cost_nanos_after, input_tokens_after, output_tokens_after, record_count_after) VALUES (?, ?, ?, ?, ?, '', 'scale', ?, ?, ?, ?, ?)`);
  const insertTotals = db.prepare(
    `INSERT INTO project_totals (project_id, total_cost_nanos, input_tokens, output_tokens, record_count, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertBudget = db.prepare(
    `INSERT INTO project_budgets (project_id, limit_nanos, currency, created_at_ms, updated_at_ms) VALUES (?, ?, 'USD', ?, ?)`,
  );
  const startedMs = Date.now();
  let written = 0;
  let recordedAt = baseMs;
  const chunk = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const id = ids[i] as string;
      const count = perProject + (i < extra ? 1 : 0);
      let cost = 0,
        input = 0,
        output = 0;
      for (let k = 0; k < count; k++) {
        const c = 1_000 + ((i * 31 + k * 7) % 100_000);
        cost += c;
        input += 100;
        output += 20;
        // request_ids sort in insertion order within a project (zero-padded).
        insertRecord.run(id, `r${String(k).padStart(6, "0")}`, c, 100, 20, recordedAt++, cost, input, output, k + 1);
      }
      insertTotals.run(id, cost, input, output, count, baseMs, recordedAt);
      insertBudget.run(id, 1_000_000_000_000, baseMs, baseMs);
      written += count;
    }
  });
  const projectsPerChunk = Math.max(1, Math.floor(200_000 / Math.max(1, perProject)));
  for (let from = 0; from < projects; from += projectsPerChunk) {
    chunk(from, Math.min(projects, from + projectsPerChunk));
    if ((from / projectsPerChunk) % 10 === 0)
      log(`${written.toLocaleString("en-US")} of ${rows.toLocaleString("en-US")} rows (${Math.round((Date.now() - startedMs) / 1000)} s)`);
  }
  db.pragma("journal_mode = WAL");
  db.exec("ANALYZE");
  db.close();
  renameSync(building, path);
  log(`built ${path} in ${Math.round((Date.now() - startedMs) / 1000)} s`);
  return path;
}
