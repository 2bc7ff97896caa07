// Prometheus metrics (prom-client), on a registry of our own (no global state,
// so tests and several servers in one process never mix their numbers).
//
// - RPCs: count and latency by procedure and code, from a Connect interceptor.
// - Unit of work: batch size, commit latency and outcome, from its onBatch hook;
//   queue depth and calls in flight, read at scrape time.
// - Spend: per-project spent and limit gauges for the top N spenders, plus the
//   rest summed per currency under project="(other)". They are read from the
//   store at scrape time with two bounded queries (a top-N page, an aggregate),
//   so nothing tracks every project in memory and the label set stays N + the
//   number of currencies however many projects exist. The same top-N page
//   carries each project's active holds (tally_project_reserved_nanos).
// - Holds: active holds and their sum per currency (tally_holds_active,
//   tally_holds_reserved_nanos), read at scrape time from the reservation
//   aggregates minus expired, unswept holds (a third bounded query), so an
//   expired hold leaves the gauges at its expiry instant, not at the sweep.
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { RecordCostRequest, RecordCostResponse } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { PricingMetrics } from "./pricing-metrics.ts";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { Ledger } from "../ledger/ledger.ts";
import { procedureOf } from "../auth/auth.ts";
import { ProjectOrder } from "../ledger/projects.ts";
import { LogEvent, type Logger } from "../log.ts";

/** The project label of the summed remainder. Parentheses are outside the
 * identifier alphabet ([A-Za-z0-9._:/-]), so no real project can collide with it. */
export const otherProjectsLabel = "(other)";

export interface MetricsSources {
  ledger: Ledger;
  /** Writes waiting for a commit. */
  queueDepth: () => number;
  queueDepthMax: number;
  /** RPCs being handled right now. */
  inFlight: () => number;
  /** How many projects get their own label (0: only "(other)"). */
  topProjects: number;
  logger: Logger;
  /** The API keys that expire, for alerting before they do (none when open). */
  keyExpiries?: () => ReadonlyArray<{ id: string; expiresAtMs: number }>;
}

export class TallyMetrics {
  readonly registry = new Registry();
  readonly #rpc: RpcSeries;
  readonly #batchSize: Histogram;
  readonly #commitDuration: Histogram;
  readonly #batches: Counter<"outcome">;
  readonly #replays: Counter<"procedure">;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.#pricing = new PricingMetrics(this.registry);
    this.#rpc = new RpcSeries(
      this.registry,
      { name: "tally_rpc_handled_total", help: "RPCs completed, by procedure and Connect code (ok on success)." },
      {
        name: "tally_rpc_duration_seconds",
        help: "Time from the request reaching the handler chain to its answer, by procedure and code. Writes include the group commit (an fsync).",
        buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      },
    );
    this.#replays = new Counter({
      name: "tally_idempotent_replays_total",
      help: "Writes answered from an earlier call with the same request_id (RecordCost duplicates, retried CheckBudget reservations): nothing was written again. A rise means clients are retrying: answers lost to timeouts or network trouble.",
      labelNames: ["procedure"],
      registers,
    });
    // Present at 0 from the start, so rate() and alerts see the series before the first retry.
    for (const method of [BudgetService.method.recordCost, BudgetService.method.checkBudget])
      this.#replays.inc({ procedure: procedureOf(method) }, 0);
    this.#batchSize = new Histogram({
      name: "tally_uow_batch_size",
      help: "Writes committed together in one group-commit transaction.",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
      registers,
    });
    this.#commitDuration = new Histogram({
      name: "tally_uow_commit_duration_seconds",
      help: "Time to commit one group-commit transaction durably (statements plus fsync).",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.#batches = new Counter({
      name: "tally_uow_batches_total",
      help: "Group-commit transactions, by outcome (committed; failed: the whole batch answered UNAVAILABLE).",
      labelNames: ["outcome"],
      registers,
    });
    new Gauge({
      name: "tally_uow_queue_depth",
      help: "Writes waiting for a commit (excluding the batch being committed).",
      registers,
      collect() {
        this.set(sources.queueDepth());
      },
    });
    new Gauge({
      name: "tally_uow_queue_depth_max",
      help: "Queue bound (TALLY_QUEUE_DEPTH_MAX): past it, writes fail with RESOURCE_EXHAUSTED.",
      registers,
    }).set(sources.queueDepthMax);
    new Gauge({
      name: "tally_rpc_in_flight",
      help: "RPCs being handled right now.",
      registers,
      collect() {
        this.set(sources.inFlight());
      },
    });
    new Gauge({
      name: "tally_api_key_expiry_timestamp_seconds",
      help: "When each expiring API key stops working (Unix seconds), by key id: alert on `tally_api_key_expiry_timestamp_seconds - time() < 7 * 86400` to rotate in time. Keys without expiresAt have no series.",
      labelNames: ["key_id"],
      registers,
      collect() {
        this.reset();
        for (const { id, expiresAtMs } of sources.keyExpiries?.() ?? []) this.set({ key_id: id }, expiresAtMs / 1000);
      },
    });

    const collectErrors = new Counter({
      name: "tally_metrics_collect_errors_total",
      help: "Scrapes whose project spend gauges could not be read from the store (they are then absent from that scrape).",
      registers,
    });
    // The three spend gauges read one snapshot per scrape (two store queries),
    // taken by render() before prom-client runs the collect functions (so a
    // failure is already counted in tally_metrics_collect_errors_total).
    this.#readSpend = () => readSpend(sources, collectErrors);
    const read = () => this.#spend ?? (this.#spend = this.#readSpend());
    new Gauge({
      name: "tally_project_spent_nanos",
      help: `Lifetime spend in nano-units of the currency (1e9 = 1 unit), for the top ${sources.topProjects} projects by spend; the rest summed per currency under project="${otherProjectsLabel}".`,
      labelNames: ["project", "currency"],
      registers,
      async collect() {
        this.reset();
        for (const { labels, spentNanos } of (await read()).projects) this.set(labels, spentNanos);
      },
    });
    new Gauge({
      name: "tally_project_limit_nanos",
      help: "Lifetime spending limit in nano-units, for the projects of tally_project_spent_nanos that have one (no limit: absent). Not given for the (other) group.",
      labelNames: ["project", "currency"],
      registers,
      async collect() {
        this.reset();
        for (const { labels, limitNanos } of (await read()).projects) if (limitNanos > 0) this.set(labels, limitNanos);
      },
    });
    new Gauge({
      name: "tally_project_reserved_nanos",
      help: `Active holds (reserved, not yet spent) in nano-units, for the projects of tally_project_spent_nanos; the rest of each currency under project="${otherProjectsLabel}" (including projects that hold but have not spent yet).`,
      labelNames: ["project", "currency"],
      registers,
      async collect() {
        this.reset();
        for (const { labels, reservedNanos } of (await read()).projects) this.set(labels, reservedNanos);
      },
    });
    new Gauge({
      name: "tally_holds_active",
      help: "Active holds (placed by CheckBudget with reserve, not settled, released or expired) over all projects.",
      registers,
      async collect() {
        this.reset();
        const snapshot = await read();
        if (snapshot.ok) this.set(snapshot.activeHolds);
      },
    });
    new Gauge({
      name: "tally_holds_reserved_nanos",
      help: "Sum of the active holds over all projects, in nano-units of the currency, by currency.",
      labelNames: ["currency"],
      registers,
      async collect() {
        this.reset();
        for (const [currency, nanos] of (await read()).reservedByCurrency) this.set({ currency }, nanos);
      },
    });
    new Gauge({
      name: "tally_projects",
      help: "Projects that recorded at least one cost, by currency.",
      labelNames: ["currency"],
      registers,
      async collect() {
        this.reset();
        for (const [currency, count] of (await read()).projectsByCurrency) this.set({ currency }, count);
      },
    });
  }

  readonly #pricing: PricingMetrics;
  #spend: Promise<SpendSnapshot> | null = null;
  readonly #readSpend: () => Promise<SpendSnapshot>;

  /** Counts and times every RPC, including those refused by later interceptors. */
  readonly interceptor: Interceptor = (next) => async (req) => {
    const startedMs = performance.now();
    const procedure = procedureOf(req.method);
    let code = "ok";
    try {
      const res = await next(req);
      // Both idempotent writes say so in their answer (duplicate = true).
      if (!res.stream && (res.message as { duplicate?: unknown }).duplicate === true) this.#replays.inc({ procedure });
      if (
        !req.stream &&
        !res.stream &&
        req.service.typeName === BudgetService.typeName &&
        req.method.name === BudgetService.method.recordCost.name
      )
        this.#pricing.observe(req.message as RecordCostRequest, res.message as RecordCostResponse);
      return res;
    } catch (error) {
      code = codeToString(ConnectError.from(error).code);
      throw error;
    } finally {
      this.#rpc.observe(procedure, code, (performance.now() - startedMs) / 1000);
    }
  };

  /** The unit of work's onBatch hook. */
  readonly onBatch = (info: { size: number; commitMs: number; failed: boolean }): void => {
    this.#batchSize.observe(info.size);
    this.#commitDuration.observe(info.commitMs / 1000);
    this.#batches.inc({ outcome: info.failed ? "failed" : "committed" });
  };

  /** The exposition text (Prometheus text format 0.0.4). */
  async render(): Promise<{ contentType: string; body: string }> {
    this.#spend = this.#readSpend(); // a fresh snapshot for this scrape
    try {
      await this.#spend;
      return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    } finally {
      this.#spend = null;
    }
  }
}

interface SpendSnapshot {
  /** false when the store could not be read (the store gauges are then absent). */
  ok: boolean;
  projects: Array<{ labels: { project: string; currency: string }; spentNanos: number; limitNanos: number; reservedNanos: number }>;
  projectsByCurrency: Map<string, number>;
  activeHolds: number;
  reservedByCurrency: Map<string, number>;
}

const emptySnapshot = (): SpendSnapshot => ({
  ok: false,
  projects: [],
  projectsByCurrency: new Map(),
  activeHolds: 0,
  reservedByCurrency: new Map(),
});

/** The top N projects by spend, and the rest summed per currency; active
 * holds in total and per currency. Three bounded store reads. A failed read
 * counts an error and yields an empty snapshot: the store gauges are then
 * absent from that scrape, and every other metric is still served. */
async function readSpend(sources: MetricsSources, errors: Counter): Promise<SpendSnapshot> {
  const snapshot: SpendSnapshot = { ...emptySnapshot(), ok: true };
  try {
    const top =
      sources.topProjects > 0
        ? (await sources.ledger.listProjects({ order: ProjectOrder.spentDesc, after: null, limit: sources.topProjects })).entries
        : [];
    const byCurrency = await sources.ledger.spendByCurrency();
    const reserved = await sources.ledger.reservedByCurrency();
    const topSpent = new Map<string, number>();
    const topReserved = new Map<string, number>();
    for (const { totals, budget, reservedNanos } of top) {
      const spentNanos = Number(totals.totalCostNanos);
      snapshot.projects.push({
        labels: { project: totals.projectId, currency: budget.currency },
        spentNanos,
        limitNanos: Number(budget.limitNanos),
        reservedNanos: Number(reservedNanos),
      });
      topSpent.set(budget.currency, (topSpent.get(budget.currency) ?? 0) + spentNanos);
      topReserved.set(budget.currency, (topReserved.get(budget.currency) ?? 0) + Number(reservedNanos));
    }
    for (const { currency, reservedNanos, activeHolds } of reserved) {
      snapshot.reservedByCurrency.set(currency, reservedNanos);
      snapshot.activeHolds += activeHolds;
    }
    // One "(other)" group per currency with spend or holds. Both sides of each
    // difference are float sums of the same int64 values: exact below 2^53
    // nanos (9 million units), within float rounding above.
    const currencies = new Set([...byCurrency.map((c) => c.currency), ...snapshot.reservedByCurrency.keys()]);
    for (const currency of [...currencies].sort()) {
      const spent = byCurrency.find((c) => c.currency === currency);
      snapshot.projects.push({
        labels: { project: otherProjectsLabel, currency },
        spentNanos: Math.max(0, (spent?.totalCostNanos ?? 0) - (topSpent.get(currency) ?? 0)),
        limitNanos: 0,
        reservedNanos: Math.max(0, (snapshot.reservedByCurrency.get(currency) ?? 0) - (topReserved.get(currency) ?? 0)),
      });
      if (spent !== undefined) snapshot.projectsByCurrency.set(currency, spent.projects);
      if (!snapshot.reservedByCurrency.has(currency)) snapshot.reservedByCurrency.set(currency, 0);
    }
    return snapshot;
  } catch (error) {
    errors.inc();
    sources.logger.warn({ event: LogEvent.metricsCollectFailed, err: error });
    return emptySnapshot();
  }
}

/** One RPC outcome series: calls, their summed duration, and per-bucket counts. */
interface RpcSeriesValues {
  labels: { procedure: string; code: string };
  count: number;
  sumSeconds: number;
  /** Observations per bucket (not cumulative), one past the last bound for +Inf. */
  buckets: Float64Array;
}

/** tally_rpc_handled_total and tally_rpc_duration_seconds, kept together.
 *
 * Why not prom-client's Counter and Histogram: their labelled observe()
 * copies, validates and hashes the label set on every call (sort + join),
 * about 1 µs per RPC at the top of the profile of a cheap read. Here a call
 * is two Map lookups (procedure, then code) and a few additions; the numbers
 * are turned into prom-client's metric values only when scraped, in the same
 * exposition format as its Counter and Histogram (same names, label order, `le`
 * first, cumulative buckets, _sum and _count). Bounded: procedures are the
 * served methods, codes the 17 Connect codes. */
class RpcSeries {
  readonly #series = new Map<string, Map<string, RpcSeriesValues>>();
  readonly #bounds: readonly number[];

  constructor(registry: Registry, counter: { name: string; help: string }, histogram: { name: string; help: string; buckets: number[] }) {
    this.#bounds = [...histogram.buckets].sort((a, b) => a - b);
    const all = () => [...this.#series.values()].flatMap((byCode) => [...byCode.values()]);
    registry.registerMetric({
      name: counter.name,
      help: counter.help,
      type: "counter",
      aggregator: "sum",
      get: async () => ({
        name: counter.name,
        help: counter.help,
        type: "counter",
        aggregator: "sum",
        values: all().map((s) => ({ labels: s.labels, value: s.count })),
      }),
    } as never);
    registry.registerMetric({
      name: histogram.name,
      help: histogram.help,
      type: "histogram",
      aggregator: "sum",
      get: async () => {
        const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
        for (const s of all()) {
          let cumulative = 0;
          this.#bounds.forEach((bound, i) => {
            cumulative += s.buckets[i] as number;
            values.push({ metricName: `${histogram.name}_bucket`, labels: { le: bound, ...s.labels }, value: cumulative });
          });
          cumulative += s.buckets[this.#bounds.length] as number;
          values.push({ metricName: `${histogram.name}_bucket`, labels: { le: "+Inf", ...s.labels }, value: cumulative });
          values.push({ metricName: `${histogram.name}_sum`, labels: { ...s.labels }, value: s.sumSeconds });
          values.push({ metricName: `${histogram.name}_count`, labels: { ...s.labels }, value: s.count });
        }
        return { name: histogram.name, help: histogram.help, type: "histogram", aggregator: "sum", values };
      },
    } as never);
  }

  observe(procedure: string, code: string, seconds: number): void {
    let byCode = this.#series.get(procedure);
    if (byCode === undefined) this.#series.set(procedure, (byCode = new Map()));
    let s = byCode.get(code);
    if (s === undefined)
      byCode.set(code, (s = { labels: { procedure, code }, count: 0, sumSeconds: 0, buckets: new Float64Array(this.#bounds.length + 1) }));
    s.count += 1;
    s.sumSeconds += seconds;
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > (bounds[i] as number)) i++;
    s.buckets[i] = (s.buckets[i] as number) + 1;
  }
}
