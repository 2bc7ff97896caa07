// Comparison servers on the same Connect stack as Tally (connect-node on an
// h2c HTTP/2 server, same request limits), for the benchmark:
//
//   MODE=noop       handlers that do nothing but answer: the protocol ceiling.
//   MODE=naive-orm  the obvious MikroORM implementation: per request, fork an
//                   EntityManager, load the entity, add in JavaScript, flush.
//                   (No holds: CheckBudget ignores `reserve`.)
//                   Same SQLite file settings as Tally (WAL, synchronous=FULL).
//
// Usage: MODE=noop|naive-orm PORT=0 [TALLY_DATABASE_URL=sqlite:/tmp/x.db] node bench/servers/connect.ts
// Logs {"event":"server.listening","url":...} on stdout, stops on SIGTERM/SIGINT.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { MikroORM } from "@mikro-orm/sqlite";
import {
  BudgetDecisionReason,
  BudgetService,
  CheckBudgetResponseSchema,
  GetProjectBudgetResponseSchema,
  GetProjectCostResponseSchema,
  ProjectBudgetSchema,
  ProjectCostSchema,
  RecordCostResponseSchema,
  SetProjectBudgetResponseSchema,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { reasonToProto } from "../../src/api/budget-service.ts";
import { decideBudget } from "../../src/ledger/budget.ts";
import { http2StreamsPerConnectionMax, requestBytesMax } from "../../src/limits.ts";
import { CostRecordEntity, ProjectBudgetEntity, ProjectTotalsEntity } from "../../src/store/entities.ts";
import { initORM } from "../../src/store/orm.ts";

type Impl = Partial<ServiceImpl<typeof BudgetService>>;

/** Answers every call with a well-formed response of the usual shape, doing no work. */
export function noopImpl(): Impl {
  return {
    recordCost: (req) =>
      create(RecordCostResponseSchema, { projectCost: create(ProjectCostSchema, { projectId: req.projectId }), requestId: req.requestId }),
    getProjectCost: (req) => create(GetProjectCostResponseSchema, { projectCost: create(ProjectCostSchema, { projectId: req.projectId }) }),
    checkBudget: (req) =>
      create(CheckBudgetResponseSchema, {
        allowed: true,
        reason: BudgetDecisionReason.NO_LIMIT,
        estimatedCostNanos: req.estimatedCostNanos,
        currency: "USD",
      }),
    setProjectBudget: (req) =>
      create(SetProjectBudgetResponseSchema, {
        budget: create(ProjectBudgetSchema, { projectId: req.projectId, limitNanos: req.limitNanos, currency: "USD", configured: true }),
      }),
    getProjectBudget: (req) =>
      create(GetProjectBudgetResponseSchema, { budget: create(ProjectBudgetSchema, { projectId: req.projectId, currency: "USD" }) }),
  };
}

/** What a typical ORM service looks like: read the row, change it in
 * JavaScript, flush. Concurrent requests for one project read the same total
 * and the later flush overwrites the earlier one (lost updates); the benchmark
 * counts them. Idempotency is a lookup before the insert. */
export function naiveOrmImpl(orm: MikroORM): Impl {
  const totalsOf = (
    t: {
      totalCostNanos: bigint;
      inputTokens: bigint;
      outputTokens: bigint;
      recordCount: bigint;
      updatedAtMs: bigint;
      projectId: string;
    } | null,
    projectId: string,
  ) =>
    create(ProjectCostSchema, {
      projectId,
      totalCostNanos: t?.totalCostNanos ?? 0n,
      inputTokens: t?.inputTokens ?? 0n,
      outputTokens: t?.outputTokens ?? 0n,
      recordCount: t?.recordCount ?? 0n,
      updatedAt: t ? timestampFromMs(Number(t.updatedAtMs)) : undefined,
    });
  return {
    async recordCost(req) {
      const em = orm.em.fork();
      const existing = await em.findOne(CostRecordEntity, { projectId: req.projectId, requestId: req.requestId });
      if (existing) {
        return create(RecordCostResponseSchema, {
          duplicate: true,
          requestId: req.requestId,
          projectCost: create(ProjectCostSchema, {
            projectId: req.projectId,
            totalCostNanos: existing.totalCostNanosAfter,
            recordCount: existing.recordCountAfter,
          }),
        });
      }
      const now = BigInt(Date.now());
      let totals = await em.findOne(ProjectTotalsEntity, { projectId: req.projectId });
      if (totals === null) {
        totals = em.create(ProjectTotalsEntity, {
          projectId: req.projectId,
          totalCostNanos: 0n,
          inputTokens: 0n,
          outputTokens: 0n,
          recordCount: 0n,
          createdAtMs: now,
          updatedAtMs: now,
        });
      }
      totals.totalCostNanos += req.costNanos;
      totals.inputTokens += req.inputTokens;
      totals.outputTokens += req.outputTokens;
      totals.recordCount += 1n;
      totals.updatedAtMs = now;
      em.create(CostRecordEntity, {
        projectId: req.projectId,
        requestId: req.requestId,
        costNanos: req.costNanos,
        inputTokens: req.inputTokens,
        outputTokens: req.outputTokens,
        agentId: req.agentId,
        model: req.model,
        recordedAtMs: now,
        totalCostNanosAfter: totals.totalCostNanos,
        inputTokensAfter: totals.inputTokens,
        outputTokensAfter: totals.outputTokens,
        recordCountAfter: totals.recordCount,
      });
      try {
        await em.flush();
      } catch (error) {
        throw new ConnectError(`flush failed: ${(error as Error).message}`, Code.Unavailable);
      }
      return create(RecordCostResponseSchema, { requestId: req.requestId, projectCost: totalsOf(totals, req.projectId) });
    },
    async getProjectCost(req) {
      const totals = await orm.em.fork().findOne(ProjectTotalsEntity, { projectId: req.projectId });
      return create(GetProjectCostResponseSchema, { projectCost: totalsOf(totals, req.projectId) });
    },
    async checkBudget(req) {
      const em = orm.em.fork();
      const budget = await em.findOne(ProjectBudgetEntity, { projectId: req.projectId });
      const totals = await em.findOne(ProjectTotalsEntity, { projectId: req.projectId });
      const decision = decideBudget(budget?.limitNanos ?? 0n, totals?.totalCostNanos ?? 0n, req.estimatedCostNanos);
      return create(CheckBudgetResponseSchema, {
        ...decision,
        reason: reasonToProto[decision.reason],
        estimatedCostNanos: req.estimatedCostNanos,
        currency: budget?.currency ?? "USD",
      });
    },
    async setProjectBudget(req) {
      const em = orm.em.fork();
      const now = BigInt(Date.now());
      let budget = await em.findOne(ProjectBudgetEntity, { projectId: req.projectId });
      if (budget === null)
        budget = em.create(ProjectBudgetEntity, {
          projectId: req.projectId,
          limitNanos: req.limitNanos,
          currency: "USD",
          createdAtMs: now,
          updatedAtMs: now,
        });
      budget.limitNanos = req.limitNanos;
      budget.updatedAtMs = now;
      await em.flush();
      return create(SetProjectBudgetResponseSchema, {
        budget: create(ProjectBudgetSchema, {
          projectId: req.projectId,
          limitNanos: budget.limitNanos,
          currency: budget.currency,
          configured: true,
        }),
      });
    },
  };
}

export async function startConnectServer(
  impl: Impl,
  port: number,
  host = "127.0.0.1",
): Promise<{ url: string; server: http2.Http2Server }> {
  const adapter = connectNodeAdapter({
    routes: (router: ConnectRouter) => {
      router.service(BudgetService, impl);
    },
    readMaxBytes: requestBytesMax,
  });
  const server = http2.createServer({ settings: { maxConcurrentStreams: http2StreamsPerConnectionMax } }, adapter);
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const { port: bound } = server.address() as AddressInfo;
  return { url: `http://${host}:${bound}`, server };
}

if (import.meta.main) {
  const mode = process.env.MODE ?? "noop";
  let orm: MikroORM | undefined;
  let impl: Impl;
  if (mode === "noop") impl = noopImpl();
  else if (mode === "naive-orm") {
    const url = process.env.TALLY_DATABASE_URL;
    if (!url) throw new Error("MODE=naive-orm needs TALLY_DATABASE_URL=sqlite:<path>");
    const init = await initORM(url, { synchronous: "FULL", busyTimeoutMs: 5_000 });
    if (!(init.orm instanceof MikroORM)) throw new Error("MODE=naive-orm needs TALLY_DATABASE_URL=sqlite:<path>");
    orm = init.orm;
    impl = naiveOrmImpl(orm);
  } else throw new Error(`MODE=${mode}: expected noop or naive-orm`);
  const { url, server } = await startConnectServer(impl, Number(process.env.PORT ?? 0));
  console.log(JSON.stringify({ event: "server.listening", url, mode }));
  const stop = () => {
    server.close(() => void (orm ? orm.close(true) : Promise.resolve()).then(() => process.exit(0)));
    for (const s of sessions) s.close();
  };
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}
