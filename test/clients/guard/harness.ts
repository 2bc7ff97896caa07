// The harness that drives every client helper through the shared scenario
// list (scenarios.json): a real `tally serve` child process on a SQLite file
// (first on port 0, then restarted on that port and file, so the ledger
// survives a SIGKILL), an HTTP control endpoint the runners call to kill and
// restart it mid-scenario, the projects each scenario starts from, and the
// checks of the ledger against the scenario's `expect` and the runner's report.
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetService, CostSource, type CostRecord } from "../../../gen/ts/tally/budget/v1/budget_pb.ts";
import { exited, spawnServer, tallyCli, type ServerProcess } from "../../../bench/lib/process.ts";
import { generateApiKey } from "../../../src/auth/keys.ts";
import type { TallyServer } from "../../../src/server.ts";
import { bearer, startTestServer, writeKeysFile } from "../../helpers.ts";
import { selfSignedCert } from "../tools.ts";

export const specPath = new URL("./scenarios.json", import.meta.url).pathname;

export interface PriceSetup {
  model: string;
  input: string;
  cached_input: string;
  cache_write: string;
  output: string;
}
export interface Scenario {
  name: string;
  about: string;
  server?: "tls";
  key?: "rate_limited";
  setup: { limit_nanos: string; alert_thresholds_bps?: number[]; agent_limit_nanos?: string; prices?: PriceSetup[] };
  ttl_ms?: number;
  calls?:
    | number
    | Array<{
        record: {
          input_tokens: number;
          cached_input_tokens: number;
          cache_write_tokens: number;
          output_tokens: number;
          cost_nanos: string;
        };
      }>;
  expect: {
    records: number | "completed";
    total_cost_nanos: string | "completed";
    record_hold?: "all" | "none";
    cost_source?: string;
    active_holds_now?: number;
    active_holds_after_ttl?: number;
    failed?: number;
    retries_min?: number;
    unchecked_min?: number;
    queued_min?: number;
  };
}
export interface Spec {
  server: { rate_limited_key_per_second: number; hold_ttl_check_margin_ms: number };
  scenarios: Scenario[];
}
export const spec = JSON.parse(readFileSync(specPath, "utf8")) as Spec;

/** What a runner writes for each scenario (snake_case, the same in every language). */
export interface ScenarioReport {
  completed: Array<{ request_id: string; cost_nanos: string }>;
  failed: number;
  stats: Record<string, number>;
  checks: Array<{ name: string; ok: boolean; detail?: string }>;
}
export interface RunnerReport {
  language: string;
  scenarios: Record<string, ScenarioReport>;
}

type Budget = Client<typeof BudgetService>;

/** `tally serve` as a child process on a SQLite file; kill() is SIGKILL, and
 * start() brings it back on the same port and file. */
export class TallyProcess {
  readonly dir = mkdtempSync(join(tmpdir(), "tally-guard-"));
  readonly adminKey = generateApiKey();
  /** One rate-limited project key per scenario project that asks for one. */
  readonly limitedKeys = new Map<string, string>();
  #server: ServerProcess | null = null;
  #port = 0;
  #restarting: Promise<void> | null = null;
  url = "";

  /** Writes the keys file: the admin key, and a rate-limited key per project. */
  writeKeys(limitedProjects: string[], perSecond: number): void {
    const entries: Array<Record<string, unknown>> = [{ id: "admin", role: "admin", key: this.adminKey }];
    for (const project of limitedProjects) {
      const key = generateApiKey();
      this.limitedKeys.set(project, key);
      entries.push({ id: `limited-${this.limitedKeys.size}`, role: "project", key, projects: [project] });
    }
    const file = writeKeysFile(
      entries.map(({ key, ...rest }) => ({ ...(rest as { id: string; role: "admin" | "project" }), key: key as string })),
      join(this.dir, "keys.json"),
    );
    // writeKeysFile knows no rate limits: add them as an operator would.
    const doc = JSON.parse(readFileSync(file, "utf8")) as { keys: Array<Record<string, unknown>> };
    for (const entry of doc.keys) if (entry.role === "project") entry.rateLimitPerSecond = perSecond;
    writeFileSync(file, JSON.stringify(doc, null, 2));
  }

  async start(): Promise<void> {
    const env = {
      HOST: "127.0.0.1",
      PORT: String(this.#port),
      TALLY_DATABASE_URL: `sqlite:${join(this.dir, "tally.db")}`,
      TALLY_KEYS_FILE: join(this.dir, "keys.json"),
      // info: server.listening (what spawnServer waits for) is an info line.
      TALLY_LOG_LEVEL: "info",
      TALLY_SHUTDOWN_DRAIN_MS: "2000",
    };
    this.#server = await spawnServer({ args: [tallyCli, "serve"], env, logPath: join(this.dir, "server.log"), startTimeoutMs: 60_000 });
    this.url = this.#server.url;
    this.#port = Number(new URL(this.url).port);
  }

  async kill(): Promise<void> {
    const child: ChildProcess | undefined = this.#server?.child;
    if (child === undefined) return;
    this.#server = null;
    child.kill("SIGKILL");
    await exited(child);
  }

  /** Kill now; start again after downMs (in the background: the runner goes on). */
  async outage(downMs: number): Promise<void> {
    await this.kill();
    this.#restarting = (async () => {
      await new Promise((resolve) => setTimeout(resolve, downMs));
      await this.start();
    })();
  }

  /** Waits for a restart scheduled by outage(). */
  async settled(): Promise<void> {
    if (this.#restarting) await this.#restarting;
    this.#restarting = null;
  }

  get running(): boolean {
    return this.#server !== null;
  }

  async stop(): Promise<void> {
    await this.settled().catch(() => {});
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The control endpoint runners call: POST /outage?down_ms=N (SIGKILL now,
 * restart after N ms; answers once killed), POST /restart (SIGKILL, start,
 * answers once listening again). Every action is logged for the report. */
export async function startControl(tally: TallyProcess): Promise<{ url: string; actions: string[]; close: () => Promise<void> }> {
  const actions: string[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://control");
    const done = (status: number, body: string) => {
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(body);
    };
    void (async () => {
      try {
        if (req.method === "POST" && url.pathname === "/outage") {
          const downMs = Number(url.searchParams.get("down_ms") ?? "0");
          await tally.outage(downMs);
          actions.push(`outage ${downMs} ms`);
          done(200, "killed");
        } else if (req.method === "POST" && url.pathname === "/restart") {
          await tally.settled();
          await tally.kill();
          await tally.start();
          actions.push("restart");
          done(200, "restarted");
        } else done(404, "unknown control action");
      } catch (error) {
        done(500, String(error));
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, actions, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Everything one language's run needs: the servers, keys, project ids. */
export interface Run {
  language: string;
  tally: TallyProcess;
  tls: TallyServer;
  tlsCa: string;
  tlsAdminKey: string;
  control: { url: string; actions: string[]; close: () => Promise<void> };
  projects: Record<string, string>;
  reportPath: string;
  admin: () => Budget;
  adminTls: Budget;
  close: () => Promise<void>;
}

export async function startRun(language: string): Promise<Run> {
  const id = randomBytes(4).toString("hex");
  const projects: Record<string, string> = {};
  for (const s of spec.scenarios) projects[s.name] = `guard.${language}.${id}.${s.name}`;
  const tally = new TallyProcess();
  tally.writeKeys(
    spec.scenarios.filter((s) => s.key === "rate_limited").map((s) => projects[s.name]!),
    spec.server.rate_limited_key_per_second,
  );
  await tally.start();
  const control = await startControl(tally);
  const cert = selfSignedCert(tally.dir);
  const tlsAdminKey = generateApiKey();
  const tls = await startTestServer({
    tlsCertFile: cert.certFile,
    tlsKeyFile: cert.keyFile,
    keysFile: writeKeysFile([{ id: "admin", role: "admin", key: tlsAdminKey }], join(tally.dir, "tls-keys.json")),
  });
  const adminTls = createClient(
    BudgetService,
    createGrpcTransport({ baseUrl: tls.url, nodeOptions: { ca: readFileSync(cert.certFile) }, interceptors: [bearer(tlsAdminKey)] }),
  );
  // A fresh client per use: the child server's URL is the same after a restart,
  // but a client made before a kill may still hold the dead connection.
  const admin = () => createClient(BudgetService, createGrpcTransport({ baseUrl: tally.url, interceptors: [bearer(tally.adminKey)] }));
  const run: Run = {
    language,
    tally,
    tls,
    tlsCa: cert.certFile,
    tlsAdminKey,
    control,
    projects,
    reportPath: join(tally.dir, "report.json"),
    admin,
    adminTls,
    close: async () => {
      await control.close();
      await tls.close();
      await tally.stop();
    },
  };
  await setUp(run);
  return run;
}

/** Budgets, alert thresholds, agent caps and project-scoped catalog prices per scenario. */
async function setUp(run: Run): Promise<void> {
  for (const s of spec.scenarios) {
    const client = s.server === "tls" ? run.adminTls : run.admin();
    const projectId = run.projects[s.name]!;
    await client.setProjectBudget({
      projectId,
      limitNanos: BigInt(s.setup.limit_nanos),
      ...(s.setup.alert_thresholds_bps ? { alertThresholds: { basisPoints: s.setup.alert_thresholds_bps } } : {}),
      ...(s.setup.agent_limit_nanos ? { agentLimitNanos: BigInt(s.setup.agent_limit_nanos) } : {}),
    });
    for (const price of s.setup.prices ?? []) {
      await client.setModelPrice({
        model: price.model,
        projectId,
        inputNanosPerMillion: BigInt(price.input),
        cachedInputNanosPerMillion: BigInt(price.cached_input),
        cacheWriteNanosPerMillion: BigInt(price.cache_write),
        outputNanosPerMillion: BigInt(price.output),
        effectiveFrom: timestampFromMs(Date.now() - 3_600_000),
        source: "test/clients/guard/scenarios.json",
      });
    }
  }
}

/** The environment every runner gets. */
export function runnerEnv(run: Run): Record<string, string> {
  const limited: Record<string, string> = {};
  for (const [project, key] of run.tally.limitedKeys) limited[project] = key;
  return {
    TALLY_URL: run.tally.url,
    TALLY_API_KEY: run.tally.adminKey,
    TALLY_LIMITED_KEYS: JSON.stringify(limited),
    TALLY_TLS_URL: run.tls.url,
    TALLY_TLS_CA: run.tlsCa,
    TALLY_TLS_API_KEY: run.tlsAdminKey,
    TALLY_CONTROL_URL: run.control.url,
    TALLY_SCENARIOS: specPath,
    TALLY_PROJECTS: JSON.stringify(run.projects),
    TALLY_REPORT: run.reportPath,
  };
}

async function allRecords(client: Budget, projectId: string): Promise<CostRecord[]> {
  const records: CostRecord[] = [];
  let pageToken = "";
  do {
    const page = await client.listCostRecords({ projectId, pageSize: 1000, pageToken });
    records.push(...page.records);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return records;
}

/** One line of numbers per scenario, for the test output and the report. */
export interface Outcome {
  scenario: string;
  problems: string[];
  summary: string;
}

/** Checks the ledger of every scenario against its `expect` and the report.
 * Holds are checked twice: right after the run (active_holds_now), and once
 * the longest TTL of the run has passed (active_holds_after_ttl). */
export async function verify(run: Run, report: RunnerReport, runEndedMs: number): Promise<Outcome[]> {
  await run.tally.settled();
  const outcomes: Outcome[] = [];
  const afterTtl: Array<{ s: Scenario; outcome: Outcome }> = [];
  for (const s of spec.scenarios) {
    const problems: string[] = [];
    const outcome: Outcome = { scenario: s.name, problems, summary: "" };
    outcomes.push(outcome);
    const r = report.scenarios[s.name];
    if (r === undefined) {
      problems.push("the runner reported nothing for this scenario");
      continue;
    }
    for (const check of r.checks)
      if (!check.ok) problems.push(`runner check failed: ${check.name}${check.detail ? ` (${check.detail})` : ""}`);
    const client = s.server === "tls" ? run.adminTls : run.admin();
    const projectId = run.projects[s.name]!;
    const cost = (await client.getProjectCost({ projectId })).projectCost!;
    const records = await allRecords(client, projectId);
    const completedSum = r.completed.reduce((sum, c) => sum + BigInt(c.cost_nanos), 0n);
    const expectedRecords = s.expect.records === "completed" ? r.completed.length : s.expect.records;
    const expectedTotal = s.expect.total_cost_nanos === "completed" ? completedSum : BigInt(s.expect.total_cost_nanos);
    if (records.length !== expectedRecords) problems.push(`ledger has ${records.length} records, expected ${expectedRecords}`);
    if (cost.recordCount !== BigInt(expectedRecords)) problems.push(`record_count ${cost.recordCount}, expected ${expectedRecords}`);
    if (cost.totalCostNanos !== expectedTotal) problems.push(`total_cost_nanos ${cost.totalCostNanos}, expected ${expectedTotal}`);
    if (s.expect.total_cost_nanos !== "completed" && r.completed.length > 0 && completedSum !== expectedTotal) {
      problems.push(`the runner's completed calls add up to ${completedSum}, expected ${expectedTotal}`);
    }
    // Exactly once: every completed call's request id is in the ledger once, and nothing else is.
    const ledgerIds = records.map((rec) => rec.requestId).sort();
    const completedIds = r.completed.map((c) => c.request_id).sort();
    if (r.completed.length > 0 && JSON.stringify(ledgerIds) !== JSON.stringify(completedIds)) {
      const missing = completedIds.filter((id) => !ledgerIds.includes(id));
      const extra = ledgerIds.filter((id) => !completedIds.includes(id));
      problems.push(
        `ledger request ids differ from the completed calls: ${missing.length} missing (${missing.slice(0, 3).join(", ")}), ${extra.length} not completed (${extra.slice(0, 3).join(", ")})`,
      );
    }
    const byId = new Map(r.completed.map((c) => [c.request_id, BigInt(c.cost_nanos)]));
    for (const rec of records) {
      const reported = byId.get(rec.requestId);
      if (reported !== undefined && reported !== rec.costNanos)
        problems.push(`record ${rec.requestId} cost ${rec.costNanos}, the runner reported ${reported}`);
    }
    if (s.expect.record_hold === "all" && records.some((rec) => rec.holdId === ""))
      problems.push("a record settled no hold (expected every record to settle its hold)");
    if (s.expect.record_hold === "none" && records.some((rec) => rec.holdId !== ""))
      problems.push("a record settled a hold (expected none: the hold had expired)");
    if (s.expect.cost_source !== undefined) {
      const want = CostSource[s.expect.cost_source.replace(/^COST_SOURCE_/, "") as keyof typeof CostSource];
      if (records.some((rec) => rec.costSource !== want)) problems.push(`cost_source: expected ${s.expect.cost_source} on every record`);
    }
    if (Array.isArray(s.calls)) {
      s.calls.forEach((call, i) => {
        const rec = records[i];
        const want = call.record;
        const got = rec && {
          input_tokens: Number(rec.inputTokens),
          cached_input_tokens: Number(rec.cachedInputTokens),
          cache_write_tokens: Number(rec.cacheWriteTokens),
          output_tokens: Number(rec.outputTokens),
          cost_nanos: String(rec.costNanos),
        };
        if (JSON.stringify(got) !== JSON.stringify(want))
          problems.push(`record ${i + 1}: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
      });
    }
    if (
      s.expect.active_holds_now !== undefined &&
      (cost.activeHoldCount !== BigInt(s.expect.active_holds_now) || (s.expect.active_holds_now === 0 && cost.reservedNanos !== 0n))
    ) {
      problems.push(
        `${cost.activeHoldCount} active holds (${cost.reservedNanos} nanos reserved) right after the run, expected ${s.expect.active_holds_now}`,
      );
    }
    if (s.expect.failed !== undefined && r.failed !== s.expect.failed)
      problems.push(`${r.failed} calls failed, expected ${s.expect.failed}`);
    for (const [key, stat] of [
      ["retries_min", "retries"],
      ["unchecked_min", "unchecked"],
      ["queued_min", "queued"],
    ] as const) {
      const min = s.expect[key];
      if (min !== undefined && (r.stats[stat] ?? 0) < min) problems.push(`stats.${stat} = ${r.stats[stat] ?? 0}, expected at least ${min}`);
    }
    const stats = Object.entries(r.stats)
      .filter(([, v]) => v !== 0)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
    outcome.summary = `${records.length} records, total ${cost.totalCostNanos} nanos, ${r.completed.length} completed, ${r.failed} failed, holds now ${cost.activeHoldCount}; ${stats}`;
    if (s.expect.active_holds_after_ttl !== undefined) afterTtl.push({ s, outcome });
  }
  if (afterTtl.length > 0) {
    const ttlMs = Math.max(...afterTtl.map(({ s }) => s.ttl_ms ?? 300_000));
    const waitMs = runEndedMs + ttlMs + spec.server.hold_ttl_check_margin_ms - Date.now();
    if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs));
    for (const { s, outcome } of afterTtl) {
      const cost = (await run.admin().getProjectCost({ projectId: run.projects[s.name]! })).projectCost!;
      if (cost.activeHoldCount !== BigInt(s.expect.active_holds_after_ttl!) || cost.reservedNanos !== 0n) {
        outcome.problems.push(
          `${cost.activeHoldCount} holds (${cost.reservedNanos} nanos) still active after the TTL, expected ${s.expect.active_holds_after_ttl}`,
        );
      }
      outcome.summary += `; holds after TTL ${cost.activeHoldCount}`;
    }
  }
  return outcomes;
}

export function readReport(run: Run): RunnerReport {
  return JSON.parse(readFileSync(run.reportPath, "utf8")) as RunnerReport;
}

/** The runner's report checked against the ledger (verify), one line per
 * scenario printed under `label`: the problems found, "scenario: ..." each
 * (the test expects none). */
export async function ledgerProblems(run: Run, label: string, runEndedMs: number): Promise<string[]> {
  const outcomes = await verify(run, readReport(run), runEndedMs);
  console.log(
    `${label}:\n${outcomes.map((o) => `  ${o.scenario}: ${o.summary}`).join("\n")}\n  control: ${run.control.actions.join(", ")}`,
  );
  return outcomes.filter((o) => o.problems.length > 0).map((o) => `${o.scenario}: ${o.problems.join("; ")}`);
}
