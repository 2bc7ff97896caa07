// One behaviour suite, run at three depths: the handler class called directly,
// the routes behind createRouterTransport in memory, and a real server on port 0
// through every protocol it speaks. The same assertions must hold at each.
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetDecisionReason, BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { BudgetServiceHandler } from "../../src/api/budget-service.ts";
import { int64Max } from "../../src/ledger/money.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import type { TallyServer } from "../../src/server.ts";
import type { InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { classClient, memoryLedger } from "./depths.ts";
import { clientsFor, startTestServer, usd, codeOf, type BudgetClient } from "../helpers.ts";

let unique = 0;
/** A fresh project id per test, so tests sharing one server never see each other. */
const newProject = (label: string) => `t${++unique}-${label}`;

function behaviour(name: string, getClient: () => BudgetClient) {
  describe(name, () => {
    it("accumulates costs and tokens exactly and returns the post-state of each write", async () => {
      const c = getClient();
      const project = newProject("acc");
      const first = await c.recordCost({
        projectId: project,
        costNanos: usd(0.1),
        inputTokens: 100n,
        outputTokens: 20n,
        requestId: "a",
        agentId: "agent-1",
        model: "gpt-4o-mini",
      });
      expect(first.duplicate).toBe(false);
      expect(first.projectCost).toMatchObject({
        projectId: project,
        totalCostNanos: 100_000_000n,
        inputTokens: 100n,
        outputTokens: 20n,
        recordCount: 1n,
      });
      const second = await c.recordCost({ projectId: project, costNanos: usd(0.2), inputTokens: 1n, outputTokens: 2n, requestId: "b" });
      // 0.1 + 0.2 is exactly 0.3 here, unlike in floating point.
      expect(second.projectCost?.totalCostNanos).toBe(300_000_000n);
      expect(second.projectCost?.recordCount).toBe(2n);
      const read = await c.getProjectCost({ projectId: project });
      expect(read.projectCost).toMatchObject({ totalCostNanos: 300_000_000n, inputTokens: 101n, outputTokens: 22n, recordCount: 2n });
      expect(read.projectCost?.updatedAt).toBeDefined();
    });

    it("returns zeros, not an error, for a project that never recorded", async () => {
      const c = getClient();
      const project = newProject("empty");
      const { projectCost } = await c.getProjectCost({ projectId: project });
      expect(projectCost).toMatchObject({ projectId: project, totalCostNanos: 0n, inputTokens: 0n, outputTokens: 0n, recordCount: 0n });
      expect(projectCost?.updatedAt).toBeUndefined();
    });

    it("keeps projects isolated from each other", async () => {
      const c = getClient();
      const [a, b] = [newProject("iso-a"), newProject("iso-b")];
      await c.setProjectBudget({ projectId: a, limitNanos: 10n });
      await c.recordCost({ projectId: a, costNanos: 10n, requestId: "same-key" });
      // Same request id in another project is a different record.
      const other = await c.recordCost({ projectId: b, costNanos: 3n, requestId: "same-key" });
      expect(other.duplicate).toBe(false);
      expect(other.projectCost?.totalCostNanos).toBe(3n);
      expect((await c.checkBudget({ projectId: a, estimatedCostNanos: 0n })).allowed).toBe(false);
      expect((await c.checkBudget({ projectId: b, estimatedCostNanos: 1_000n })).reason).toBe(BudgetDecisionReason.NO_LIMIT);
      expect((await c.getProjectBudget({ projectId: b })).budget?.configured).toBe(false);
    });

    it("counts an idempotent retry once and returns the original totals", async () => {
      const c = getClient();
      const project = newProject("retry");
      const req = { projectId: project, costNanos: 7n, inputTokens: 1n, outputTokens: 1n, requestId: "call-1", model: "m" };
      const original = await c.recordCost(req);
      await c.recordCost({ projectId: project, costNanos: 5n, requestId: "call-2" });
      const retry = await c.recordCost(req);
      expect(retry.duplicate).toBe(true);
      expect(retry.projectCost?.totalCostNanos).toBe(original.projectCost?.totalCostNanos);
      expect(retry.projectCost?.recordCount).toBe(1n);
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: 12n, recordCount: 2n });
    });

    it("refuses a retry with a different payload with ALREADY_EXISTS and writes nothing", async () => {
      const c = getClient();
      const project = newProject("conflict");
      await c.recordCost({ projectId: project, costNanos: 7n, requestId: "k" });
      for (const change of [{ costNanos: 8n }, { inputTokens: 1n }, { outputTokens: 1n }, { agentId: "other" }, { model: "other" }]) {
        expect(await codeOf(c.recordCost({ projectId: project, costNanos: 7n, requestId: "k", ...change }))).toBe(Code.AlreadyExists);
      }
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: 7n, recordCount: 1n });
    });

    it("assigns a key when request_id is empty, so each such call is a new record", async () => {
      const c = getClient();
      const project = newProject("nokey");
      const one = await c.recordCost({ projectId: project, costNanos: 1n });
      const two = await c.recordCost({ projectId: project, costNanos: 1n });
      expect(one.requestId).not.toBe("");
      expect(one.requestId).not.toBe(two.requestId);
      expect(two.projectCost?.recordCount).toBe(2n);
    });

    it.each([
      ["negative cost", { costNanos: -1n }],
      ["negative input tokens", { inputTokens: -1n }],
      ["negative output tokens", { outputTokens: -1n }],
      ["empty project", { projectId: "" }],
      ["oversized project", { projectId: "p".repeat(129) }],
      ["odd characters in project", { projectId: "a b" }],
      ["odd characters in request id", { requestId: "r#1" }],
      ["oversized request id", { requestId: "r".repeat(129) }],
      ["odd characters in agent id", { agentId: "agent 7" }],
      ["model with a space", { model: "gpt 4" }],
    ])("rejects %s with INVALID_ARGUMENT and writes nothing", async (_label, bad) => {
      const c = getClient();
      const project = newProject("invalid");
      await c.recordCost({ projectId: project, costNanos: 1n, requestId: "seed" });
      const error = await c
        .recordCost({ projectId: project, costNanos: 1n, requestId: "x", ...bad })
        .catch((e: unknown) => ConnectError.from(e));
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage.length).toBeGreaterThan(10);
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: 1n, recordCount: 1n });
    });

    it("validates every RPC's fields", async () => {
      const c = getClient();
      expect(await codeOf(c.getProjectCost({ projectId: "" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.checkBudget({ projectId: "ok", estimatedCostNanos: -1n }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.checkBudget({ projectId: "bad id" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.setProjectBudget({ projectId: "ok", limitNanos: -1n }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.setProjectBudget({ projectId: "ok", limitNanos: 1n, currency: "usd" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.getProjectBudget({ projectId: "x".repeat(129) }))).toBe(Code.InvalidArgument);
    });

    it("refuses a cost that would overflow int64 and changes nothing", async () => {
      const c = getClient();
      const project = newProject("overflow");
      await c.recordCost({ projectId: project, costNanos: int64Max, requestId: "max" });
      const error = await c
        .recordCost({ projectId: project, costNanos: 1n, requestId: "one-more" })
        .catch((e: unknown) => ConnectError.from(e));
      expect((error as ConnectError).code).toBe(Code.FailedPrecondition);
      expect((error as ConnectError).rawMessage).toMatch(/overflow/);
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: int64Max, recordCount: 1n });
      // Tokens overflow the same way.
      const tokens = newProject("overflow-tokens");
      await c.recordCost({ projectId: tokens, inputTokens: int64Max, requestId: "a" });
      expect(await codeOf(c.recordCost({ projectId: tokens, inputTokens: 1n, requestId: "b" }))).toBe(Code.FailedPrecondition);
    });

    it("decides at the exact boundary: spent == limit is exhausted", async () => {
      const c = getClient();
      const project = newProject("boundary");
      await c.setProjectBudget({ projectId: project, limitNanos: usd(1) });
      await c.recordCost({ projectId: project, costNanos: usd(0.6), requestId: "a" });
      const fits = await c.checkBudget({ projectId: project, estimatedCostNanos: usd(0.4) });
      expect(fits).toMatchObject({
        allowed: true,
        reason: BudgetDecisionReason.WITHIN_BUDGET,
        limitNanos: usd(1),
        spentNanos: usd(0.6),
        remainingNanos: usd(0.4),
        estimatedCostNanos: usd(0.4),
        currency: "USD",
      });
      const tooMuch = await c.checkBudget({ projectId: project, estimatedCostNanos: usd(0.4) + 1n });
      expect(tooMuch).toMatchObject({ allowed: false, reason: BudgetDecisionReason.EXCEEDS_REMAINING });
      await c.recordCost({ projectId: project, costNanos: usd(0.4), requestId: "b" });
      const exhausted = await c.checkBudget({ projectId: project, estimatedCostNanos: 0n });
      expect(exhausted).toMatchObject({ allowed: false, reason: BudgetDecisionReason.EXHAUSTED, remainingNanos: 0n });
      // Reality wins: an actual cost past the limit is still recorded.
      const over = await c.recordCost({ projectId: project, costNanos: 5n, requestId: "c" });
      expect(over.projectCost?.totalCostNanos).toBe(usd(1) + 5n);
      expect((await c.checkBudget({ projectId: project })).remainingNanos).toBe(-5n);
    });

    it("treats no limit and a limit of 0 as enforcement disabled", async () => {
      const c = getClient();
      const project = newProject("disabled");
      await c.recordCost({ projectId: project, costNanos: usd(1000), requestId: "a" });
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: int64Max })).toMatchObject({
        allowed: true,
        reason: BudgetDecisionReason.NO_LIMIT,
        limitNanos: 0n,
        remainingNanos: 0n,
      });
      await c.setProjectBudget({ projectId: project, limitNanos: usd(1) });
      expect((await c.checkBudget({ projectId: project })).allowed).toBe(false);
      await c.setProjectBudget({ projectId: project, limitNanos: 0n });
      expect(await c.checkBudget({ projectId: project, estimatedCostNanos: usd(5) })).toMatchObject({
        allowed: true,
        reason: BudgetDecisionReason.NO_LIMIT,
      });
    });

    it("sets and reads budgets, and locks the currency once costs are recorded", async () => {
      const c = getClient();
      const project = newProject("budget");
      expect((await c.getProjectBudget({ projectId: project })).budget).toMatchObject({
        projectId: project,
        limitNanos: 0n,
        currency: "USD",
        configured: false,
      });
      const set = await c.setProjectBudget({ projectId: project, limitNanos: usd(25), currency: "EUR" });
      expect(set.budget).toMatchObject({ projectId: project, limitNanos: usd(25), currency: "EUR", configured: true });
      expect(set.budget?.updatedAt).toBeDefined();
      expect((await c.getProjectBudget({ projectId: project })).budget).toMatchObject({
        limitNanos: usd(25),
        currency: "EUR",
        configured: true,
      });
      await c.recordCost({ projectId: project, costNanos: 1n, requestId: "a" });
      expect(await codeOf(c.setProjectBudget({ projectId: project, limitNanos: usd(30), currency: "USD" }))).toBe(Code.FailedPrecondition);
      // Changing only the limit is fine.
      expect((await c.setProjectBudget({ projectId: project, limitNanos: usd(30) })).budget).toMatchObject({
        limitNanos: usd(30),
        currency: "EUR",
      });
      expect((await c.checkBudget({ projectId: project })).currency).toBe("EUR");
    });
  });
}

// The whole suite runs on every database Tally supports (SQLite always,
// PostgreSQL when TALLY_TEST_POSTGRES_URL is set; see test/databases.ts). On
// PostgreSQL the three depths share one database, as replicas would.
for (const kind of databaseKinds) {
  describe(`BudgetService on ${kind}`, () => {
    const databases = new TestDatabases(kind);
    let classInit: InitializedStore;
    let classHandler: BudgetServiceHandler;
    let routerInit: InitializedStore;
    let routerClient: BudgetClient;
    let server: TallyServer;
    let portClients: Record<string, BudgetClient>;

    beforeAll(async () => {
      const databaseUrl = await databases.scratch();
      const a = await memoryLedger(databaseUrl);
      classInit = a.init;
      classHandler = new BudgetServiceHandler(a.ledger);
      const b = await memoryLedger(databaseUrl);
      routerInit = b.init;
      routerClient = createClient(BudgetService, createRouterTransport(tallyRoutes(b.ledger)));
      server = await startTestServer({ databaseUrl });
      portClients = clientsFor(server.url);
    });
    afterAll(async () => {
      await classInit?.store.close();
      await routerInit?.store.close();
      await server?.close();
      await databases.cleanup();
    });

    behaviour("depth 1: the handler class", () => classClient(classHandler));
    behaviour("depth 2: createRouterTransport in memory", () => routerClient);
    for (const protocol of ["connect+proto h2c", "connect+json http/1.1", "grpc h2c", "grpc-web http/1.1"]) {
      behaviour(`depth 3: real port 0, ${protocol}`, () => portClients[protocol] as BudgetClient);
    }
  });
}
