// Runs every scenario of test/clients/guard/scenarios.json with @tally/guard
// (installed from its packed tarball, beside @tally/client) against the Tally
// the harness started, and writes the report the harness checks against the
// ledger. Type-checked against the package's declarations before it runs.
import { readFileSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { BudgetDecisionReason, BudgetEventKind, type BudgetEvent } from "@tally/client/tally/budget/v1/budget_pb";
import {
  BudgetRefused,
  Tally,
  TallyError,
  TallyUnavailable,
  UsageNotReported,
  type GuardedCall,
  type Stats,
  type TallyOptions,
} from "@tally/guard";

type Sc = Record<string, any>;
interface Entry {
  completed: Array<{ request_id: string; cost_nanos: string }>;
  failed: number;
  stats: Record<string, number>;
  checks: Array<{ name: string; ok: boolean; detail: string }>;
}

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const spec = JSON.parse(readFileSync(env("TALLY_SCENARIOS"), "utf8")) as { scenarios: Sc[] };
const projects = JSON.parse(env("TALLY_PROJECTS")) as Record<string, string>;
const limitedKeys = JSON.parse(env("TALLY_LIMITED_KEYS")) as Record<string, string>;
const url = env("TALLY_URL");
const key = env("TALLY_API_KEY");
const boundMs = 60_000;
const report: { language: string; scenarios: Record<string, Entry> } = { language: "typescript", scenarios: {} };

class Report {
  readonly entry: Entry = { completed: [], failed: 0, stats: {}, checks: [] };
  constructor(name: string) {
    report.scenarios[name] = this.entry;
  }
  check(name: string, ok: boolean, detail: unknown = ""): void {
    this.entry.checks.push({ name, ok, detail: typeof detail === "string" ? detail : String(detail) });
  }
  completed(call: GuardedCall, costNanos: bigint): void {
    this.entry.completed.push({ request_id: call.requestId, cost_nanos: String(costNanos) });
  }
  failed(error: unknown): void {
    this.entry.failed++;
    this.check("call failed", false, error);
  }
  stats(...clients: Tally[]): void {
    const total: Record<string, number> = {};
    for (const c of clients) for (const [k, v] of Object.entries(c.stats as Stats)) total[snake(k)] = (total[snake(k)] ?? 0) + v;
    this.entry.stats = total;
  }
}
const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

async function control(action: string, params: Record<string, string | number> = {}): Promise<void> {
  const query = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]));
  const response = await fetch(`${env("TALLY_CONTROL_URL")}/${action}?${query}`, { method: "POST", signal: AbortSignal.timeout(120_000) });
  if (response.status !== 200) throw new Error(`control ${action}: ${response.status} ${await response.text()}`);
}

const client = (options: TallyOptions = {}) => new Tally({ url, apiKey: key, agent: "guard-test", ...options });
const retryOf = (sc: Sc) =>
  sc.retry && {
    attemptsMax: sc.retry.attempts_max,
    totalMs: sc.retry.total_ms,
    baseDelayMs: sc.retry.base_delay_ms,
    maxDelayMs: sc.retry.max_delay_ms,
    callTimeoutMs: sc.retry.call_timeout_ms,
  };
const ttlOf = (sc: Sc): number => sc.ttl_ms ?? 300_000;
class Boom extends Error {}

async function holds(tally: Tally, project: string) {
  return (await tally.client.getProjectCost({ projectId: project })).projectCost!;
}

async function workers(concurrency: number, calls: number, one: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) await one(next++);
    }),
  );
}

const scenarios: Record<string, (sc: Sc, project: string, rep: Report) => Promise<void>> = {
  async "settle-with-hold"(sc, project, rep) {
    await using tally = client();
    for (const [i, c] of (sc.cost_nanos as string[]).entries()) {
      const cost = BigInt(c);
      const tokens = { inputTokens: sc.input_tokens, outputTokens: sc.output_tokens };
      let call: GuardedCall;
      if (i === 0) {
        // `await using`: leaving the scope settles.
        {
          await using scoped = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) });
          rep.check(`call ${i}: a hold was placed`, scoped.holdId !== "" && scoped.decision === "allowed", scoped.holdId);
          scoped.reportCost(cost, tokens);
          call = scoped;
        }
      } else {
        call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
          rep.check(`call ${i}: a hold was placed`, c.holdId !== "" && c.decision === "allowed", c.holdId);
          c.reportCost(cost, tokens);
          return c;
        });
      }
      rep.check(
        `call ${i}: settled`,
        call.outcome === "settled" && call.recorded?.settledHoldNanos === BigInt(sc.estimate_nanos),
        call.outcome,
      );
      rep.completed(call, cost);
    }
    rep.stats(tally);
  },

  async "body-raises"(sc, project, rep) {
    await using tally = client();
    for (const [i, estimate] of [BigInt(sc.estimate_nanos), BigInt(sc.second_estimate_nanos)].entries()) {
      let call: GuardedCall | undefined;
      try {
        if (i === 0) {
          await tally.guard({ project, estimateNanos: estimate, ttlMs: ttlOf(sc) }, (c) => {
            call = c;
            throw new Boom("the LLM call failed");
          });
        } else {
          await using scoped = await tally.guard({ project, estimateNanos: estimate, ttlMs: ttlOf(sc) });
          call = scoped;
          throw new Boom("the LLM call failed");
        }
      } catch (error) {
        rep.check(`call ${i}: the body's exception propagated unchanged`, error instanceof Boom, error);
      }
      rep.check(`call ${i}: a hold was placed (the whole limit was free again)`, call !== undefined && call.holdId !== "");
      rep.check(`call ${i}: outcome released`, call?.outcome === "released", call?.outcome);
      const cost = await holds(tally, project);
      rep.check(`call ${i}: no hold active right after`, cost.activeHoldCount === 0n && cost.reservedNanos === 0n, cost.activeHoldCount);
    }
    rep.stats(tally);
  },

  async cancelled(sc, project, rep) {
    await using tally = client();
    const abort = new AbortController();
    let call: GuardedCall | undefined;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const guarded = tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos), ttlMs: ttlOf(sc) }, async (c) => {
      call = c;
      started();
      await sleep(sc.body_wait_ms, undefined, { signal: abort.signal }); // the LLM call, given the signal
      c.reportCost(1n);
    });
    await running;
    abort.abort();
    try {
      await guarded;
      rep.check("the cancellation surfaced", false, "the call finished");
    } catch (error) {
      rep.check("the cancellation surfaced", (error as Error).name === "AbortError", error);
    }
    rep.check(
      "a hold had been placed and was released",
      call !== undefined && call.holdId !== "" && call.outcome === "released",
      call?.outcome,
    );
    const cost = await holds(tally, project);
    rep.check("no hold active right after", cost.activeHoldCount === 0n && cost.reservedNanos === 0n, cost.activeHoldCount);
    rep.stats(tally);
  },

  async refused(sc, project, rep) {
    await using tally = client();
    let ran = false;
    try {
      await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
        ran = true;
        c.reportCost(1n);
      });
      rep.check("BudgetRefused thrown", false, "the guard let the call run");
    } catch (error) {
      const reason = error instanceof BudgetRefused ? `BUDGET_DECISION_REASON_${BudgetDecisionReason[error.check.reason]}` : String(error);
      rep.check("BudgetRefused with the expected reason", reason === sc.expect_reason, reason);
    }
    rep.check("the body never ran", !ran);
    rep.stats(tally);
  },

  async "usage-not-reported"(sc, project, rep) {
    await using tally = client();
    for (const [label, chunks] of [
      ["no report", []],
      ["stream without final usage", sc.stream_without_usage],
    ] as Array<[string, unknown[]]>) {
      let call: GuardedCall | undefined;
      try {
        await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
          call = c;
          for (const chunk of chunks) c.observe(chunk);
        });
        rep.check(`${label}: UsageNotReported thrown`, false, "no error");
      } catch (error) {
        rep.check(`${label}: UsageNotReported thrown`, error instanceof UsageNotReported, error);
      }
      rep.check(`${label}: hold released`, call !== undefined && call.holdId !== "" && call.outcome === "released", call?.outcome);
    }
    const cost = await holds(tally, project);
    rep.check("no hold active right after", cost.activeHoldCount === 0n, cost.activeHoldCount);
    rep.stats(tally);
  },

  async "hold-expired"(sc, project, rep) {
    await using tally = client();
    const cost = BigInt(sc.cost_nanos[0]);
    let held = "";
    const call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos), ttlMs: ttlOf(sc) }, async (c) => {
      held = c.holdId;
      await sleep(sc.body_wait_ms);
      c.reportCost(cost);
      return c;
    });
    rep.check("a hold had been placed", held !== "");
    rep.check("recorded without the expired hold", call.outcome === "recorded" && call.recorded?.duplicate === false, call.outcome);
    rep.completed(call, cost);
    rep.stats(tally);
  },

  async "tokens-openai"(sc, project, rep) {
    await tokens(sc, project, rep);
  },
  async "tokens-anthropic"(sc, project, rep) {
    await tokens(sc, project, rep);
  },

  async "agent-cap"(sc, project, rep) {
    await using tally = client();
    for (const [i, step] of (sc.steps as Sc[]).entries()) {
      let ran = false;
      try {
        const call = await tally.guard({ project, agent: step.agent, estimateNanos: BigInt(step.estimate_nanos) }, (c) => {
          ran = true;
          c.reportCost(BigInt(step.cost_nanos));
          return c;
        });
        rep.check(
          `step ${i} (${step.agent}): allowed and settled`,
          step.expect_reason === undefined && call.outcome === "settled",
          call.outcome,
        );
        rep.completed(call, BigInt(step.cost_nanos));
      } catch (error) {
        const got =
          error instanceof BudgetRefused
            ? `BUDGET_DECISION_REASON_${BudgetDecisionReason[error.check.reason]} by agent ${error.check.decidedByAgentId}`
            : String(error);
        rep.check(`step ${i} (${step.agent}): refused by its own cap`, got === `${step.expect_reason} by agent ${step.agent}`, got);
        rep.check(`step ${i}: the body never ran`, !ran);
      }
    }
    rep.stats(tally);
  },

  async "rate-limited"(sc, project, rep) {
    await using tally = client({ apiKey: limitedKeys[project]! });
    for (let i = 0; i < sc.calls; i++) {
      const cost = BigInt(sc.cost_nanos_base) + BigInt(i);
      const call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
        c.reportCost(cost);
        return c;
      });
      rep.check(`call ${i}: settled`, call.outcome === "settled", call.outcome);
      rep.completed(call, cost);
    }
    rep.stats(tally);
  },

  async "restart-under-load"(sc, project, rep) {
    await using tally = client({ retry: retryOf(sc), ttlMs: ttlOf(sc) });
    let done = 0;
    const killed: Promise<void>[] = [];
    await workers(sc.concurrency, sc.calls, async (index) => {
      const cost = BigInt(sc.cost_nanos_base) + BigInt(index);
      let call: GuardedCall;
      try {
        call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, async (c) => {
          await sleep(20); // the LLM call
          c.reportCost(cost);
          return c;
        });
      } catch (error) {
        rep.failed(error);
        return;
      }
      rep.completed(call, cost);
      if (++done === sc.kill_after_completed) killed.push(control("outage", { down_ms: sc.down_ms }));
    });
    rep.check("the server was killed mid-run", killed.length === 1);
    await Promise.all(killed);
    const left = await tally.flush({ timeoutMs: boundMs });
    rep.check("outbox empty at the end", left === 0, left);
    rep.stats(tally);
  },

  async "fail-open-outage"(sc, project, rep) {
    await control("outage", { down_ms: sc.down_ms });
    {
      await using closed = client({ retry: { totalMs: sc.fail_open_after_ms } });
      let ran = false;
      try {
        await closed.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
          ran = true;
          c.reportCost(1n);
        });
        rep.check("fail_closed refuses while Tally is down", false, "the call ran");
      } catch (error) {
        rep.check("fail_closed refuses while Tally is down", error instanceof TallyUnavailable && error.code === "UNAVAILABLE", error);
      }
      rep.check("fail_closed: the body never ran", !ran);
    }
    await using tally = client({
      failurePolicy: "fail_open",
      failOpenAfterMs: sc.fail_open_after_ms,
      flushIntervalMs: sc.flush_interval_ms,
      ttlMs: ttlOf(sc),
    });
    await workers(sc.concurrency, sc.calls, async (index) => {
      const cost = BigInt(sc.cost_nanos_base) + BigInt(index);
      try {
        const call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
          c.reportCost(cost);
          return c;
        });
        rep.completed(call, cost);
      } catch (error) {
        rep.failed(error);
      }
    });
    const left = await tally.flush({ timeoutMs: sc.flush_timeout_ms });
    rep.check("the outbox flushed once Tally was back", left === 0, left);
    rep.check("no record refused on flush", tally.outboxFailed.length === 0, tally.outboxFailed.length);
    rep.stats(tally);
  },

  async "watch-reconnects"(sc, project, rep) {
    await using tally = client();
    const events: BudgetEvent[] = [];
    const abort = new AbortController();
    let changed: () => void = () => {};
    const watching = (async () => {
      for await (const event of tally.watch(project, { signal: abort.signal })) {
        events.push(event);
        changed();
      }
    })().catch((error: unknown) => rep.check("the watch ended without an error", false, error));
    const until = async (what: string, predicate: () => boolean) => {
      const deadline = Date.now() + sc.event_wait_ms;
      while (!predicate() && Date.now() < deadline)
        await new Promise<void>((resolve) => {
          changed = resolve;
          setTimeout(resolve, 100);
        });
      rep.check(what, predicate(), `${events.length} events`);
    };
    const snapshots = () => events.filter((e) => e.kind === BudgetEventKind.SNAPSHOT).length;
    await until("first SNAPSHOT", () => snapshots() >= 1);
    await control("restart");
    await until("a new SNAPSHOT after the restart (reconnected)", () => snapshots() >= 2);
    const cost = BigInt(sc.cost_nanos[0]);
    const call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
      c.reportCost(cost);
      return c;
    });
    rep.completed(call, cost);
    await until("THRESHOLD_CROSSED 50 % for the guarded call", () =>
      events.some(
        (e) => e.kind === BudgetEventKind.THRESHOLD_CROSSED && e.requestId === call.requestId && e.threshold?.thresholdBps === 5000,
      ),
    );
    abort.abort();
    await watching;
    rep.check("the helper reconnected at least once", tally.stats.watchReconnects >= 1, tally.stats.watchReconnects);
    rep.stats(tally);
  },

  async "tls-and-key"(sc, project, rep) {
    const ca = readFileSync(env("TALLY_TLS_CA"));
    const cost = BigInt(sc.cost_nanos[0]);
    {
      await using tally = new Tally({ url: env("TALLY_TLS_URL"), apiKey: env("TALLY_TLS_API_KEY"), ca });
      const call = await tally.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => {
        c.reportCost(cost);
        return c;
      });
      rep.check("settled over TLS with the key", call.outcome === "settled", call.outcome);
      rep.completed(call, cost);
      rep.stats(tally);
    }
    await using keyless = new Tally({ url: env("TALLY_TLS_URL"), ca });
    try {
      await keyless.guard({ project, estimateNanos: BigInt(sc.estimate_nanos) }, (c) => c.reportCost(cost));
      rep.check("UNAUTHENTICATED without the key", false, "allowed");
    } catch (error) {
      rep.check(
        "UNAUTHENTICATED without the key, not retried",
        error instanceof TallyError && error.code === "UNAUTHENTICATED" && error.attempts === 1 && !error.retryable,
        error,
      );
    }
  },
};

async function tokens(sc: Sc, project: string, rep: Report): Promise<void> {
  await using tally = client();
  for (const [i, specCall] of (sc.calls as Sc[]).entries()) {
    const call = await tally.guard(
      { project, model: sc.model, inputTokens: sc.input_tokens, maxOutputTokens: sc.max_output_tokens },
      (c) => {
        rep.check(`call ${i}: reserved the catalog's worst case`, c.estimateNanos === BigInt(sc.expect_estimate_nanos), c.estimateNanos);
        if (specCall.response) c.report(specCall.response);
        else for (const chunk of specCall.stream) c.observe(chunk);
        return c;
      },
    );
    const want = BigInt(specCall.record.cost_nanos);
    rep.check(
      `call ${i}: settled at the catalog's price`,
      call.outcome === "settled" && call.recorded?.costNanos === want,
      `${call.outcome} ${call.recorded?.costNanos}`,
    );
    rep.completed(call, want);
  }
  rep.stats(tally);
}

let failures = 0;
for (const sc of spec.scenarios) {
  const run = scenarios[sc.name];
  const rep = new Report(sc.name);
  if (run === undefined) {
    rep.check(`scenario ${sc.name} of scenarios.json has a TypeScript implementation`, false);
  } else {
    try {
      await run(sc, projects[sc.name]!, rep);
    } catch (error) {
      rep.check("the scenario ran to its end", false, (error as Error).stack ?? error);
    }
  }
  const bad = rep.entry.checks.filter((c) => !c.ok);
  failures += bad.length;
  console.log(`${bad.length === 0 ? "ok" : "FAIL"} ${sc.name}${bad.length ? `: ${JSON.stringify(bad)}` : ""}`);
}
writeFileSync(env("TALLY_REPORT"), JSON.stringify(report, null, 1));
process.exit(failures === 0 ? 0 : 1);
