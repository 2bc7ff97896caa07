// The proof that holds close the gap between "check" and "record": 200
// concurrent agents against a real server on port 0, a budget of exactly 100
// estimates, each agent asking, calling its LLM, and recording an actual cost
// at or below its estimate. With reserve, exactly 100 are granted and spend
// never passes the limit; the same agents without reserve overspend.
import { Writable } from "node:stream";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BudgetDecisionReason,
  BudgetEventKind,
  BudgetService,
  BudgetWindow,
  type WatchBudgetResponse,
} from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { createLogger, LogEvent } from "../src/log.ts";
import type { TallyServer } from "../src/server.ts";
import { databaseKinds, TestDatabases } from "./databases.ts";
import { clientsFor, startTestServer, type BudgetClient } from "./helpers.ts";

const agentCount = 200;
const estimateNanos = 1_000_000n; // $0.001 per call
const limitNanos = 100n * estimateNanos;
/** Actual cost at or below the estimate; the total shortfall (at most 6 nanos
 * per agent) stays far below one estimate, so no 101st call can ever fit. */
const actualNanos = (agent: number) => estimateNanos - BigInt(agent % 7);

/** Resolves once `count` parties arrived: the LLM call every agent is in the
 * middle of at the same time (the worst case for check-then-record). */
function barrier(count: number): () => Promise<void> {
  let arrived = 0;
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return () => {
    if (++arrived === count) open();
    return opened;
  };
}

interface RunResult {
  granted: number;
  refusedReasons: BudgetDecisionReason[];
  maxSpentSeenNanos: bigint;
  crossings: Array<{ window: BudgetWindow; thresholdBps: number }>;
  finalSpentNanos: bigint;
  finalReservedNanos: bigint;
  /** Sum of the actual costs the agents recorded. */
  recordedNanos: bigint;
}

/** Every agent: CheckBudget (with or without reserve) -> LLM call -> RecordCost
 * of the actual cost (settling its hold), spread over every protocol. */
async function runAgents(clients: BudgetClient[], projectId: string, reserve: boolean, llmCall: () => Promise<void>): Promise<RunResult> {
  let granted = 0;
  let maxSpentSeenNanos = 0n;
  let recordedNanos = 0n;
  const refusedReasons: BudgetDecisionReason[] = [];
  const crossings: RunResult["crossings"] = [];
  await Promise.all(
    Array.from({ length: agentCount }, async (_, agent) => {
      const client = clients[agent % clients.length] as BudgetClient;
      let allowed = false;
      let holdId = "";
      try {
        const decision = await client.checkBudget({ projectId, estimatedCostNanos: estimateNanos, reserve });
        allowed = decision.allowed;
        holdId = decision.holdId;
        if (allowed) granted++;
        else refusedReasons.push(decision.reason);
      } finally {
        await llmCall();
      }
      if (!allowed) return;
      const recorded = await client.recordCost({
        projectId,
        costNanos: actualNanos(agent),
        requestId: `agent-${agent}`,
        agentId: `agent-${agent}`,
        holdId,
      });
      recordedNanos += actualNanos(agent);
      const spent = recorded.projectCost?.totalCostNanos ?? 0n;
      if (spent > maxSpentSeenNanos) maxSpentSeenNanos = spent;
      crossings.push(...recorded.thresholdsCrossed.map((t) => ({ window: t.window, thresholdBps: t.thresholdBps })));
    }),
  );
  const final = await (clients[0] as BudgetClient).getProjectCost({ projectId });
  return {
    granted,
    refusedReasons,
    maxSpentSeenNanos,
    crossings,
    finalSpentNanos: final.projectCost?.totalCostNanos ?? 0n,
    finalReservedNanos: final.projectCost?.reservedNanos ?? 0n,
    recordedNanos,
  };
}

for (const kind of databaseKinds) {
  describe(`no overspend under concurrency (real server on ${kind}, 200 agents)`, () => {
    const databases = new TestDatabases(kind);
    let server: TallyServer;
    let clients: BudgetClient[];
    const logLines: string[] = [];

    beforeAll(async () => {
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          logLines.push(
            ...chunk
              .toString("utf8")
              .split("\n")
              .filter((line) => line !== ""),
          );
          done();
        },
      });
      server = await startTestServer({ databaseUrl: await databases.scratch() }, { logger: createLogger("info", sink) });
      clients = Object.values(clientsFor(server.url));
    });
    afterAll(async () => {
      await server?.close();
      await databases.cleanup();
    });

    const loggedCrossings = (projectId: string) =>
      logLines
        .map((line) => JSON.parse(line) as { event: string; projectId?: string; thresholdBps?: number })
        .filter(
          (entry) =>
            (entry.event === LogEvent.budgetThresholdCrossed || entry.event === LogEvent.budgetExhausted) && entry.projectId === projectId,
        )
        .map((entry) => entry.thresholdBps)
        .sort();

    it("with reserve: exactly 100 holds are granted while all 200 agents are mid-call, and spend never passes the limit", async () => {
      const projectId = "proof-reserve";
      await clients[0]!.setProjectBudget({ projectId, limitNanos, alertThresholds: { basisPoints: [5000, 8000] } });
      const watchAbort = new AbortController();
      const watch = clients[0]!.watchBudget({ projectId }, { signal: watchAbort.signal })[Symbol.asyncIterator]();
      expect((await watch.next()).value?.event?.kind).toBe(BudgetEventKind.SNAPSHOT);

      const result = await runAgents(clients, projectId, true, barrier(agentCount));

      expect(result.granted).toBe(100);
      expect(result.refusedReasons).toHaveLength(100);
      // Refused while the 100 holds were all still open: the budget was fully reserved, not spent.
      expect(new Set(result.refusedReasons)).toEqual(new Set([BudgetDecisionReason.FULLY_RESERVED]));
      expect(result.maxSpentSeenNanos).toBeLessThanOrEqual(limitNanos);
      expect(result.finalSpentNanos).toBeLessThanOrEqual(limitNanos);
      expect(result.finalSpentNanos).toBe(result.recordedNanos); // every actual cost counted once
      expect(result.finalReservedNanos).toBe(0n);
      // Each threshold crossed exactly once, however many wrote concurrently:
      // in the responses, in the log, and on the watch stream.
      expect(result.crossings.sort((a, b) => a.thresholdBps - b.thresholdBps)).toEqual([
        { window: BudgetWindow.LIFETIME, thresholdBps: 5000 },
        { window: BudgetWindow.LIFETIME, thresholdBps: 8000 },
      ]);
      expect(loggedCrossings(projectId)).toEqual([5000, 8000]);
      await clients[0]!.setProjectBudget({ projectId, limitNanos }); // a sentinel event ends the read below
      const streamed: number[] = [];
      for (let i = 0; i < 10; i++) {
        const event = ((await watch.next()).value as WatchBudgetResponse).event;
        if (event?.kind === BudgetEventKind.LIMIT_CHANGED) break;
        streamed.push(event?.threshold?.thresholdBps ?? -1);
      }
      expect(streamed).toEqual([5000, 8000]);
      watchAbort.abort();
      await watch.return?.();

      // Nothing is left over for a 101st call.
      const after = await clients[0]!.checkBudget({ projectId, estimatedCostNanos: estimateNanos, reserve: true });
      expect(after).toMatchObject({ allowed: false, reason: BudgetDecisionReason.EXCEEDS_REMAINING, holdId: "" });
    });

    it("with reserve and no pause between the steps: still exactly 100 granted", async () => {
      const projectId = "proof-reserve-interleaved";
      await clients[0]!.setProjectBudget({ projectId, limitNanos });
      const result = await runAgents(clients, projectId, true, async () => undefined);
      expect(result.granted).toBe(100);
      expect(result.maxSpentSeenNanos).toBeLessThanOrEqual(limitNanos);
      expect(result.finalSpentNanos).toBeLessThanOrEqual(limitNanos);
      expect(result.finalReservedNanos).toBe(0n);
    });

    it("without reserve the same agents overspend: every check hears yes before any cost lands", async () => {
      const projectId = "proof-no-reserve";
      await clients[0]!.setProjectBudget({ projectId, limitNanos });
      const result = await runAgents(clients, projectId, false, barrier(agentCount));
      expect(result.granted).toBe(agentCount);
      expect(result.finalSpentNanos).toBeGreaterThan(limitNanos);
      expect(result.finalSpentNanos).toBe(result.recordedNanos);
      expect(result.recordedNanos).toBe(Array.from({ length: agentCount }, (_, agent) => actualNanos(agent)).reduce((a, b) => a + b, 0n));
    });

    it("answers a plain check over Connect GET but refuses a reservation there (it is a write)", async () => {
      const viaGet = createClient(BudgetService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useHttpGet: true }));
      expect((await viaGet.checkBudget({ projectId: "get-check", estimatedCostNanos: 1n })).allowed).toBe(true);
      const error = await viaGet
        .checkBudget({ projectId: "get-check", estimatedCostNanos: 1n, reserve: true })
        .catch((e: unknown) => ConnectError.from(e));
      expect((error as ConnectError).code).toBe(Code.InvalidArgument);
      expect((await clients[0]!.getProjectCost({ projectId: "get-check" })).projectCost?.reservedNanos).toBe(0n);
    });

    it("ends WatchBudget streams with UNAVAILABLE when the server shuts down", async () => {
      const own = await startTestServer();
      const client = Object.values(clientsFor(own.url))[0] as BudgetClient;
      const stream = client.watchBudget({ projectId: "shutdown-watch" })[Symbol.asyncIterator]();
      expect((await stream.next()).value?.event?.kind).toBe(BudgetEventKind.SNAPSHOT);
      const closed = own.close();
      const error = await stream.next().then(
        () => null,
        (e: unknown) => ConnectError.from(e),
      );
      await closed;
      expect(error?.code).toBe(Code.Unavailable);
    });
  });
}
