// /metrics on a real server: what the numbers say after known traffic, and that
// the per-project label set stays bounded however many projects exist.
import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService, CostSource } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { TallyMetrics, otherProjectsLabel } from "../../src/operator/metrics.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { createLogger } from "../../src/log.ts";
import type { TallyServer } from "../../src/server.ts";
import { initORM } from "../../src/store/orm.ts";
import { clientsFor, startTestServer, TestClock, type BudgetClient } from "../helpers.ts";

/** Parses the text exposition into "name{labels}" -> value (labels as printed). */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

const rpc = (method: string) => `procedure="tally.budget.v1.BudgetService/${method}"`;

describe("/metrics", () => {
  let server: TallyServer;
  let client: BudgetClient;
  beforeAll(async () => {
    server = await startTestServer({ metricsTopProjects: 3 });
    client = clientsFor(server.url)["connect+proto h2c"] as BudgetClient;
  });
  afterAll(async () => {
    await server.close();
  });

  async function scrape(): Promise<Map<string, number>> {
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return parse(await res.text());
  }

  it("counts RPCs by procedure and code, with latency histograms, and group commits", async () => {
    const before = await scrape();
    const writes = 40;
    await Promise.all(
      Array.from({ length: writes }, (_, i) => client.recordCost({ projectId: "m-rpc", costNanos: 1n, requestId: `r${i}` })),
    );
    await client.recordCost({ projectId: "m-rpc", costNanos: -1n }).catch(() => undefined);
    await client.getProjectCost({ projectId: "m-rpc" });
    const after = await scrape();
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
    expect(delta(`tally_rpc_handled_total{${rpc("RecordCost")},code="ok"}`)).toBe(writes);
    expect(delta(`tally_rpc_handled_total{${rpc("RecordCost")},code="invalid_argument"}`)).toBe(1);
    expect(delta(`tally_rpc_handled_total{${rpc("GetProjectCost")},code="ok"}`)).toBe(1);
    expect(delta(`tally_rpc_duration_seconds_count{${rpc("RecordCost")},code="ok"}`)).toBe(writes);
    expect(delta(`tally_rpc_duration_seconds_bucket{le="+Inf",${rpc("RecordCost")},code="ok"}`)).toBe(writes);
    expect(delta(`tally_rpc_duration_seconds_sum{${rpc("RecordCost")},code="ok"}`)).toBeGreaterThan(0);
    // Every valid write went through exactly one committed batch.
    expect(delta("tally_uow_batch_size_sum")).toBe(writes);
    expect(delta('tally_uow_batches_total{outcome="committed"}')).toBe(delta("tally_uow_batch_size_count"));
    expect(delta("tally_uow_commit_duration_seconds_count")).toBe(delta("tally_uow_batch_size_count"));
    expect(delta("tally_uow_batch_size_count")).toBeGreaterThanOrEqual(1);
    expect(delta("tally_uow_batch_size_count")).toBeLessThanOrEqual(writes);
    expect(after.get("tally_uow_queue_depth")).toBe(0);
    expect(after.get("tally_uow_queue_depth_max")).toBe(10_000);
    expect(after.has("tally_rpc_in_flight")).toBe(true);
    expect(after.has("process_cpu_seconds_total")).toBe(true);
  });

  it("labels the top N projects by spend and sums the rest per currency under (other)", async () => {
    // 50 more projects: only 3 get their own label.
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => client.recordCost({ projectId: `m-small-${i}`, costNanos: BigInt(i + 1), requestId: "r" })),
    );
    await client.setProjectBudget({ projectId: "m-big", limitNanos: 50_000n });
    await client.recordCost({ projectId: "m-big", costNanos: 10_000n, requestId: "r" });
    await client.recordCost({ projectId: "m-bigger", costNanos: 20_000n, requestId: "r" });
    await client.setProjectBudget({ projectId: "m-euro", limitNanos: 0n, currency: "EUR" });
    await client.recordCost({ projectId: "m-euro", costNanos: 15_000n, requestId: "r" });
    const samples = await scrape();
    const spent = [...samples].filter(([key]) => key.startsWith("tally_project_spent_nanos{"));
    expect(Object.fromEntries(spent)).toEqual({
      'tally_project_spent_nanos{project="m-bigger",currency="USD"}': 20_000,
      'tally_project_spent_nanos{project="m-euro",currency="EUR"}': 15_000,
      'tally_project_spent_nanos{project="m-big",currency="USD"}': 10_000,
      // Everything else in USD: 1 + 2 + ... + 50 and the 40 one-nano writes of m-rpc.
      [`tally_project_spent_nanos{project="${otherProjectsLabel}",currency="USD"}`]: (50 * 51) / 2 + 40,
      [`tally_project_spent_nanos{project="${otherProjectsLabel}",currency="EUR"}`]: 0,
    });
    // Only projects with a limit carry one.
    expect(Object.fromEntries([...samples].filter(([key]) => key.startsWith("tally_project_limit_nanos{")))).toEqual({
      'tally_project_limit_nanos{project="m-big",currency="USD"}': 50_000,
    });
    expect(samples.get('tally_projects{currency="USD"}')).toBe(53);
    expect(samples.get('tally_projects{currency="EUR"}')).toBe(1);
  });

  it("serves every metric the sample Grafana dashboard queries", async () => {
    // With a hold placed, so the hold gauges have their per-currency series.
    await client.checkBudget({ projectId: "m-grafana", estimatedCostNanos: 1n, reserve: true });
    const dashboard = readFileSync(new URL("../../docs/grafana/tally-dashboard.json", import.meta.url), "utf8");
    const queried = new Set([...dashboard.matchAll(/\b(tally_[a-z_]+)/g)].map((m) => m[1] as string));
    expect(queried.size).toBeGreaterThan(8);
    const names = new Set([...(await scrape()).keys()].map((key) => key.split("{")[0] as string));
    for (const name of queried) expect(names, name).toContain(name);
  });

  it("answers HEAD, refuses other methods, and leaves other paths to the 404", async () => {
    expect((await fetch(`${server.url}/metrics`, { method: "HEAD" })).status).toBe(200);
    const post = await fetch(`${server.url}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    expect((await fetch(`${server.url}/metrics/x`)).status).toBe(404);
  });

  it("still serves every other metric when the store cannot be read, and counts the failure", async () => {
    const init = await initORM("sqlite::memory:");
    const uow = new UnitOfWork(init.store, { batchSizeMax: 1, queueDepthMax: 1 });
    const metrics = new TallyMetrics({
      ledger: new Ledger(init.store, uow),
      queueDepth: () => 0,
      queueDepthMax: 1,
      inFlight: () => 0,
      topProjects: 5,
      logger: createLogger("silent"),
    });
    await init.store.close(); // every read now throws
    const samples = parse((await metrics.render()).body);
    expect(samples.get("tally_metrics_collect_errors_total")).toBe(1);
    expect([...samples.keys()].some((key) => key.startsWith("tally_project_spent_nanos"))).toBe(false);
    expect(samples.get("tally_uow_queue_depth")).toBe(0);
  });
});

describe("/metrics holds", () => {
  const clock = new TestClock("2026-11-27T12:00:00Z");
  let server: TallyServer;
  let client: BudgetClient;
  beforeAll(async () => {
    server = await startTestServer({ metricsTopProjects: 1 }, { now: clock.now });
    client = clientsFor(server.url)["connect+json http/1.1"] as BudgetClient;
  });
  afterAll(async () => {
    await server.close();
  });
  const scrape = async () => parse(await (await fetch(`${server.url}/metrics`)).text());
  const series = (samples: Map<string, number>, name: string) =>
    Object.fromEntries([...samples].filter(([key]) => key === name || key.startsWith(`${name}{`)));

  it("reports active holds, their sum per currency and per top project, and drops expired ones at their expiry", async () => {
    expect(series(await scrape(), "tally_holds_active")).toEqual({ tally_holds_active: 0 });
    const reserve = (projectId: string, estimatedCostNanos: bigint, seconds: bigint) =>
      client.checkBudget({ projectId, estimatedCostNanos, reserve: true, holdTtl: { seconds } });
    await client.recordCost({ projectId: "h-big", costNanos: 100n, requestId: "r" });
    const long = await reserve("h-big", 30n, 600n);
    await reserve("h-big", 20n, 5n);
    await client.recordCost({ projectId: "h-small", costNanos: 1n, requestId: "r" });
    const small = await reserve("h-small", 2n, 600n);
    await client.setProjectBudget({ projectId: "h-eur", limitNanos: 0n, currency: "EUR" });
    await reserve("h-eur", 7n, 600n); // holds, no spend yet

    const before = await scrape();
    expect(series(before, "tally_holds_active")).toEqual({ tally_holds_active: 4 });
    expect(series(before, "tally_holds_reserved_nanos")).toEqual({
      'tally_holds_reserved_nanos{currency="EUR"}': 7,
      'tally_holds_reserved_nanos{currency="USD"}': 52,
    });
    expect(series(before, "tally_project_reserved_nanos")).toEqual({
      'tally_project_reserved_nanos{project="h-big",currency="USD"}': 50,
      [`tally_project_reserved_nanos{project="${otherProjectsLabel}",currency="EUR"}`]: 7,
      [`tally_project_reserved_nanos{project="${otherProjectsLabel}",currency="USD"}`]: 2,
    });
    // Each number equals what GetProjectCost says for the project.
    expect((await client.getProjectCost({ projectId: "h-big" })).projectCost?.reservedNanos).toBe(50n);
    // A currency with holds but no spend still has its (other) spend series.
    expect(before.get(`tally_project_spent_nanos{project="${otherProjectsLabel}",currency="EUR"}`)).toBe(0);

    clock.advance(5_000); // the 5 s hold has expired: it no longer counts, swept or not
    const expired = await scrape();
    expect(series(expired, "tally_holds_active")).toEqual({ tally_holds_active: 3 });
    expect(expired.get('tally_holds_reserved_nanos{currency="USD"}')).toBe(32);
    expect(expired.get('tally_project_reserved_nanos{project="h-big",currency="USD"}')).toBe(30);

    await client.recordCost({ projectId: "h-big", costNanos: 25n, requestId: "r2", holdId: long.holdId });
    await client.releaseHold({ projectId: "h-small", holdId: small.holdId });
    const settled = await scrape();
    expect(series(settled, "tally_holds_active")).toEqual({ tally_holds_active: 1 });
    expect(series(settled, "tally_holds_reserved_nanos")).toEqual({
      'tally_holds_reserved_nanos{currency="EUR"}': 7,
      'tally_holds_reserved_nanos{currency="USD"}': 0,
    });
    expect(settled.get('tally_project_reserved_nanos{project="h-big",currency="USD"}')).toBe(0);
  });
});

describe("/metrics: idempotent replays", () => {
  let server: TallyServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });
  const scrape = async () => parse(await (await fetch(`${server.url}/metrics`)).text());

  it("counts writes answered from an earlier call with the same request_id, on the fast path and the router", async () => {
    const before = await scrape();
    const grpc = clientsFor(server.url)["grpc h2c"] as BudgetClient; // served by the fast path
    // A compressed request is declined by the fast path and served by Connect's router.
    const json = createClient(
      BudgetService,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        useBinaryFormat: false,
        sendCompression: compressionGzip,
        compressMinBytes: 0,
      }),
    );
    const { served, declined } = server.rpc.fastPath.stats;
    await grpc.recordCost({ projectId: "m-replay", costNanos: 1n, requestId: "once" });
    await grpc.recordCost({ projectId: "m-replay", costNanos: 1n, requestId: "once" });
    await json.recordCost({ projectId: "m-replay", costNanos: 1n, requestId: "once" });
    const reserve = { projectId: "m-replay", estimatedCostNanos: 1n, reserve: true, requestId: "hold-once" };
    expect((await grpc.checkBudget(reserve)).duplicate).toBe(false);
    expect((await json.checkBudget(reserve)).duplicate).toBe(true);
    await grpc.checkBudget({ projectId: "m-replay", estimatedCostNanos: 1n }); // a plain check is no replay
    const after = await scrape();
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
    expect(delta(`tally_idempotent_replays_total{${rpc("RecordCost")}}`)).toBe(2);
    expect(delta(`tally_idempotent_replays_total{${rpc("CheckBudget")}}`)).toBe(1);
    expect([server.rpc.fastPath.stats.served - served, server.rpc.fastPath.stats.declined - declined]).toEqual([4, 2]);
  });
  it("counts recorded calls by cost source and catalog price, and both sums of reported calls that had a price", async () => {
    const before = await scrape();
    const grpc = clientsFor(server.url)["grpc h2c"] as BudgetClient;
    const json = clientsFor(server.url)["connect+json http/1.1"] as BudgetClient;
    await grpc.setModelPrice({
      model: "m-price",
      inputNanosPerMillion: 2_000_000n,
      outputNanosPerMillion: 0n,
      effectiveFrom: { seconds: 0n, nanos: 0 },
      source: "test",
    });
    await grpc.recordCost({ projectId: "m-pricing", model: "m-price", costNanos: 3_000n, inputTokens: 1_000n, requestId: "a" }); // catalog 2_000
    await json.recordCost({ projectId: "m-pricing", model: "m-price", costNanos: 500n, inputTokens: 1_000n, requestId: "b" }); // catalog 2_000
    await json.recordCost({ projectId: "m-pricing", model: "m-price", costNanos: 500n, inputTokens: 1_000n, requestId: "b" }); // duplicate: not counted
    await grpc.recordCost({ projectId: "m-pricing", model: "m-price", costSource: CostSource.CATALOG, inputTokens: 500n, requestId: "c" });
    await grpc.recordCost({ projectId: "m-pricing", model: "no-price", costNanos: 7n, requestId: "d" });
    const after = await scrape();
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
    expect(delta('tally_cost_records_total{cost_source="reported",catalog_price="yes"}')).toBe(2);
    expect(delta('tally_cost_records_total{cost_source="catalog",catalog_price="yes"}')).toBe(1);
    expect(delta('tally_cost_records_total{cost_source="reported",catalog_price="no"}')).toBe(1);
    expect(delta("tally_reported_cost_with_catalog_price_nanos_total")).toBe(3_500);
    expect(delta("tally_catalog_cost_of_reported_nanos_total")).toBe(4_000);
  });
});
