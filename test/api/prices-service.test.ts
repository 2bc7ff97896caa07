// The price catalog through the API (issue 17): SetModelPrice and
// ListModelPrices, and CheckBudget from model + input_tokens +
// max_output_tokens with candidate_models advice. One behaviour suite at
// every depth (handler class, in-memory router, real port 0 over each
// protocol), on SQLite and PostgreSQL.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BreakdownDimension, BudgetDecisionReason, BudgetService, CostSource } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { BudgetServiceHandler } from "../../src/api/budget-service.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import type { TallyServer } from "../../src/server.ts";
import type { InitializedStore } from "../../src/store/orm.ts";
import { databaseKinds, TestDatabases } from "../databases.ts";
import { clientsFor, codeOf, startTestServer, TestClock, type BudgetClient } from "../helpers.ts";
import { classClient, memoryLedger } from "./depths.ts";

let unique = 0;
const newName = (label: string) => `t${++unique}-${label}`;
const start = Date.parse("2026-12-01T00:00:00Z");
const at = (ms: number) => timestampFromMs(ms);
/** $/1M tokens as nanos per million tokens. */
const perMillion = (usd: string) => BigInt(Math.round(Number(usd) * 1e6)) * 1000n;

function behaviour(name: string, getClient: () => BudgetClient, getClock: () => TestClock) {
  describe(name, () => {
    const price = (model: string, over: Record<string, unknown> = {}) => ({
      model,
      inputNanosPerMillion: perMillion("0.15"),
      cachedInputNanosPerMillion: perMillion("0.075"),
      cacheWriteNanosPerMillion: perMillion("0.15"),
      outputNanosPerMillion: perMillion("0.6"),
      effectiveFrom: at(start),
      source: "https://example.test/pricing",
      ...over,
    });

    it("SetModelPrice stores an entry, answers a repeat as a duplicate and refuses a changed one", async () => {
      const c = getClient();
      const model = newName("m");
      const first = await c.setModelPrice(price(model));
      expect(first.duplicate).toBe(false);
      expect(first.price).toMatchObject({
        model,
        projectId: "",
        currency: "USD",
        inputNanosPerMillion: 150_000_000n,
        cachedInputNanosPerMillion: 75_000_000n,
        outputNanosPerMillion: 600_000_000n,
      });
      expect(first.price?.priceId).not.toBe("");
      const again = await c.setModelPrice(price(model));
      expect(again.duplicate).toBe(true);
      expect(again.price?.priceId).toBe(first.price?.priceId);
      expect(await codeOf(c.setModelPrice(price(model, { outputNanosPerMillion: 1n })))).toBe(Code.AlreadyExists);
      const list = await c.listModelPrices({ model });
      expect(list.prices.map((p) => p.outputNanosPerMillion)).toEqual([600_000_000n]);
    });

    it("SetModelPrice refuses bad input with INVALID_ARGUMENT", async () => {
      const c = getClient();
      const model = newName("bad");
      for (const bad of [
        { model: "" },
        { model: "has space" },
        { effectiveFrom: undefined },
        { source: "" },
        { inputNanosPerMillion: -1n },
        { currency: "usd" },
        { projectId: "bad project" },
      ]) {
        expect(
          await codeOf(c.setModelPrice(price(model, bad))),
          JSON.stringify(bad, (_, v) => (typeof v === "bigint" ? v.toString() : v)),
        ).toBe(Code.InvalidArgument);
      }
      expect((await c.listModelPrices({ model })).prices).toEqual([]);
    });

    it("ListModelPrices shows history in order, filters, and pages with tokens", async () => {
      const c = getClient();
      const model = newName("hist");
      const project = newName("p");
      await c.setModelPrice(price(model, { effectiveFrom: at(start + 2_000), inputNanosPerMillion: 3n }));
      await c.setModelPrice(price(model, { effectiveFrom: at(start), inputNanosPerMillion: 1n }));
      await c.setModelPrice(price(model, { effectiveFrom: at(start + 1_000), inputNanosPerMillion: 2n }));
      await c.setModelPrice(price(model, { projectId: project, inputNanosPerMillion: 9n }));
      const all = await c.listModelPrices({ model });
      expect(all.prices.map((p) => [p.projectId, p.inputNanosPerMillion])).toEqual([
        ["", 1n],
        ["", 2n],
        ["", 3n],
        [project, 9n],
      ]);
      expect((await c.listModelPrices({ model, projectId: project })).prices.map((p) => p.inputNanosPerMillion)).toEqual([9n]);
      const seen: bigint[] = [];
      let token = "";
      do {
        const page = await c.listModelPrices({ model, pageSize: 1, pageToken: token });
        expect(page.prices.length).toBe(1);
        seen.push(page.prices[0]!.inputNanosPerMillion);
        token = page.nextPageToken;
      } while (token !== "");
      expect(seen).toEqual([1n, 2n, 3n, 9n]);
      const firstPage = await c.listModelPrices({ model, pageSize: 1 });
      expect(await codeOf(c.listModelPrices({ model: newName("other"), pageSize: 1, pageToken: firstPage.nextPageToken }))).toBe(
        Code.InvalidArgument,
      );
      expect(await codeOf(c.listModelPrices({ model, pageToken: "not a token" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.listModelPrices({ pageSize: -1 }))).toBe(Code.InvalidArgument);
    });

    it("CheckBudget from tokens estimates the worst case and reserves exactly that", async () => {
      const c = getClient();
      const model = newName("est");
      const project = newName("p");
      getClock().set("2026-12-02T00:00:00Z");
      const set = await c.setModelPrice(price(model));
      await c.setProjectBudget({ projectId: project, limitNanos: 1_000_000n });
      // Worst case: 1000 input tokens at the dearest input-side price ($0.15/1M = 150 nanos a token) = 150_000 nanos, plus 500 output at 600 = 300_000.
      const check = await c.checkBudget({ projectId: project, model, inputTokens: 1000n, maxOutputTokens: 500n, reserve: true });
      expect(check.allowed).toBe(true);
      expect(check.estimatedCostNanos).toBe(450_000n);
      expect(check.priceId).toBe(set.price?.priceId);
      expect(check.advisedModel).toBe(model);
      expect(check.candidateEstimates.map((e) => [e.model, e.estimatedCostNanos, e.fits])).toEqual([[model, 450_000n, true]]);
      expect(check.holdId).not.toBe("");
      expect((await c.getProjectCost({ projectId: project })).projectCost?.reservedNanos).toBe(450_000n);
      // One input token, no output: 150 nanos.
      const tiny = await c.checkBudget({ projectId: project, model, inputTokens: 1n, maxOutputTokens: 0n });
      expect(tiny.estimatedCostNanos).toBe(150n);
    });

    it("CheckBudget from tokens refuses an unknown model with FAILED_PRECONDITION and mixed inputs with INVALID_ARGUMENT", async () => {
      const c = getClient();
      const project = newName("p");
      const model = newName("known");
      await c.setModelPrice(price(model));
      getClock().set("2026-12-02T00:00:00Z");
      expect(
        await codeOf(c.checkBudget({ projectId: project, model: newName("unknown"), inputTokens: 1n, maxOutputTokens: 1n, reserve: true })),
      ).toBe(Code.FailedPrecondition);
      expect(await codeOf(c.checkBudget({ projectId: project, model, candidateModels: [newName("unknown")] }))).toBe(
        Code.FailedPrecondition,
      );
      expect((await c.getProjectCost({ projectId: project })).projectCost?.reservedNanos).toBe(0n);
      expect(await codeOf(c.checkBudget({ projectId: project, model, estimatedCostNanos: 5n }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.checkBudget({ projectId: project, inputTokens: 5n }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.checkBudget({ projectId: project, candidateModels: [model] }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.checkBudget({ projectId: project, model, candidateModels: [model] }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.checkBudget({ projectId: project, model, maxOutputTokens: -1n }))).toBe(Code.InvalidArgument);
      // Before the first entry is in effect there is no price either.
      getClock().set("2026-11-30T23:59:59Z");
      expect(await codeOf(c.checkBudget({ projectId: project, model, inputTokens: 1n }))).toBe(Code.FailedPrecondition);
    });

    it("advises the first candidate that fits: the expensive model does not, the cheaper one does", async () => {
      const c = getClient();
      const project = newName("p");
      const [big, mid, small] = [newName("big"), newName("mid"), newName("small")];
      getClock().set("2026-12-02T00:00:00Z");
      await c.setModelPrice(
        price(big, {
          inputNanosPerMillion: perMillion("15"),
          cachedInputNanosPerMillion: perMillion("1.5"),
          cacheWriteNanosPerMillion: perMillion("18.75"),
          outputNanosPerMillion: perMillion("75"),
        }),
      );
      await c.setModelPrice(
        price(mid, {
          inputNanosPerMillion: perMillion("3"),
          cachedInputNanosPerMillion: perMillion("0.3"),
          cacheWriteNanosPerMillion: perMillion("3.75"),
          outputNanosPerMillion: perMillion("15"),
        }),
      );
      await c.setModelPrice(price(small));
      // 10k input at the dearest input price + 1k output: big 10k x 18.75 + 1k x 75 = 0.2625 USD; mid 0.0525 USD; small 0.0021 USD. Limit 0.01 USD.
      await c.setProjectBudget({ projectId: project, limitNanos: 10_000_000n });
      const check = await c.checkBudget({
        projectId: project,
        model: big,
        inputTokens: 10_000n,
        maxOutputTokens: 1_000n,
        candidateModels: [mid, small],
        reserve: true,
      });
      expect(check.allowed).toBe(false);
      expect(check.reason).toBe(BudgetDecisionReason.EXCEEDS_REMAINING);
      expect(check.holdId).toBe("");
      expect(check.advisedModel).toBe(small);
      expect(check.candidateEstimates.map((e) => [e.model, e.estimatedCostNanos, e.fits])).toEqual([
        [big, 262_500_000n, false],
        [mid, 52_500_000n, false],
        [small, 2_100_000n, true],
      ]);
      const downgraded = await c.checkBudget({
        projectId: project,
        model: small,
        inputTokens: 10_000n,
        maxOutputTokens: 1_000n,
        reserve: true,
      });
      expect(downgraded.allowed).toBe(true);
      expect(downgraded.estimatedCostNanos).toBe(2_100_000n);
      // Nothing fits once the budget is spent.
      await c.recordCost({ projectId: project, costNanos: 10_000_000n, requestId: "spend-all" });
      expect((await c.checkBudget({ projectId: project, model: big, inputTokens: 1n, candidateModels: [small] })).advisedModel).toBe("");
    });

    it("a price change at T: a check at T-1ms uses the old entry, at T the new one; a project's override wins", async () => {
      const c = getClient();
      const model = newName("change");
      const project = newName("p");
      const t = Date.parse("2026-12-03T00:00:00Z");
      const old = await c.setModelPrice(price(model, { effectiveFrom: at(start) }));
      const next = await c.setModelPrice(price(model, { effectiveFrom: at(t), outputNanosPerMillion: perMillion("1.2") }));
      getClock().set(new Date(t - 1).toISOString());
      const before = await c.checkBudget({ projectId: project, model, maxOutputTokens: 1_000_000n });
      expect([before.priceId, before.estimatedCostNanos]).toEqual([old.price?.priceId, 600_000_000n]);
      getClock().set(new Date(t).toISOString());
      const after = await c.checkBudget({ projectId: project, model, maxOutputTokens: 1_000_000n });
      expect([after.priceId, after.estimatedCostNanos]).toEqual([next.price?.priceId, 1_200_000_000n]);
      const deal = await c.setModelPrice(
        price(model, { projectId: project, effectiveFrom: at(t), outputNanosPerMillion: perMillion("0.3") }),
      );
      expect((await c.checkBudget({ projectId: project, model, maxOutputTokens: 1_000_000n })).priceId).toBe(deal.price?.priceId);
      expect((await c.checkBudget({ projectId: newName("other"), model, maxOutputTokens: 1_000_000n })).priceId).toBe(next.price?.priceId);
    });

    it("RecordCost priced by the catalog: exact nanos for fractional prices, the entry stored and listed", async () => {
      const c = getClient();
      const model = newName("rec");
      const project = newName("p");
      getClock().set("2026-12-02T00:00:00Z");
      // $0.075 per 1M cached tokens = 75 nanos a token; $0.15 input, $0.6 output, cache write $0.1875.
      const set = await c.setModelPrice(price(model, { cacheWriteNanosPerMillion: perMillion("0.1875") }));
      const r = await c.recordCost({
        projectId: project,
        model,
        requestId: "r1",
        costSource: CostSource.CATALOG,
        inputTokens: 3n,
        cachedInputTokens: 7n,
        cacheWriteTokens: 2n,
        outputTokens: 1n,
      });
      // 3 x 150e6 + 7 x 75e6 + 2 x 187.5e6 + 1 x 600e6 = 1_950_000_000 / 1e6 = 1950 nanos exactly.
      expect([r.costNanos, r.catalogCostNanos, r.priceId]).toEqual([1950n, 1950n, set.price?.priceId]);
      // A price that is not a whole number of nanos a token: 1.000001 nanos; 3 tokens are 3.000003, rounded up once to 4.
      const odd = newName("odd");
      await c.setModelPrice(price(odd, { inputNanosPerMillion: 1_000_001n }));
      const one = await c.recordCost({ projectId: project, model: odd, requestId: "r2", costSource: CostSource.CATALOG, inputTokens: 3n });
      expect(one.costNanos).toBe(4n);
      expect(one.projectCost?.totalCostNanos).toBe(1954n);
      const records = (await c.listCostRecords({ projectId: project })).records;
      expect(
        records.map((x) => [
          x.requestId,
          x.costNanos,
          x.catalogCostNanos,
          x.priceId,
          x.costSource,
          x.cachedInputTokens,
          x.cacheWriteTokens,
        ]),
      ).toEqual([
        ["r1", 1950n, 1950n, set.price?.priceId, CostSource.CATALOG, 7n, 2n],
        ["r2", 4n, 4n, one.priceId, CostSource.CATALOG, 0n, 0n],
      ]);
    });

    it("a price change at T: a record at T-1ms uses the old entry, at T the new one; old records unchanged; a retry keeps its price", async () => {
      const c = getClient();
      const model = newName("chg");
      const project = newName("p");
      const t = Date.parse("2026-12-03T00:00:00Z");
      getClock().set(new Date(t + 60_000).toISOString());
      const old = await c.setModelPrice(price(model, { effectiveFrom: at(start) }));
      const before = await c.recordCost({
        projectId: project,
        model,
        requestId: "before",
        costSource: CostSource.CATALOG,
        outputTokens: 1_000n,
        occurredAt: at(t - 1),
      });
      const next = await c.setModelPrice(price(model, { effectiveFrom: at(t), outputNanosPerMillion: perMillion("1.2") }));
      const atT = await c.recordCost({
        projectId: project,
        model,
        requestId: "at",
        costSource: CostSource.CATALOG,
        outputTokens: 1_000n,
        occurredAt: at(t),
      });
      expect([before.costNanos, before.priceId]).toEqual([600_000n, old.price?.priceId]);
      expect([atT.costNanos, atT.priceId]).toEqual([1_200_000n, next.price?.priceId]);
      const later = await c.recordCost({
        projectId: project,
        model,
        requestId: "now",
        costSource: CostSource.CATALOG,
        outputTokens: 1_000n,
      });
      await c.setModelPrice(price(model, { effectiveFrom: at(t + 30_000), outputNanosPerMillion: perMillion("2.4") }));
      // The retry of "now" (no occurred_at) after yet another price: the same call, the original price.
      const retry = await c.recordCost({
        projectId: project,
        model,
        requestId: "now",
        costSource: CostSource.CATALOG,
        outputTokens: 1_000n,
      });
      expect([retry.duplicate, retry.costNanos, retry.priceId]).toEqual([true, later.costNanos, later.priceId]);
      const records = (await c.listCostRecords({ projectId: project })).records;
      expect(records.map((x) => [x.requestId, x.costNanos, x.priceId])).toEqual([
        ["before", 600_000n, old.price?.priceId],
        ["at", 1_200_000n, next.price?.priceId],
        ["now", later.costNanos, later.priceId],
      ]);
      expect(
        await codeOf(c.recordCost({ projectId: project, model, requestId: "now", costSource: CostSource.CATALOG, outputTokens: 999n })),
      ).toBe(Code.AlreadyExists);
    });

    it("an unknown model priced by the catalog is FAILED_PRECONDITION and writes nothing; bad pricing input is INVALID_ARGUMENT", async () => {
      const c = getClient();
      const project = newName("p");
      const model = newName("known");
      getClock().set("2026-12-01T12:00:00Z");
      await c.setModelPrice(price(model));
      await c.recordCost({ projectId: project, costNanos: 5n, requestId: "first" });
      const unknown = newName("unknown");
      expect(
        await codeOf(
          c.recordCost({ projectId: project, model: unknown, requestId: "x", costSource: CostSource.CATALOG, inputTokens: 10n }),
        ),
      ).toBe(Code.FailedPrecondition);
      expect(
        await codeOf(
          c.recordCost({ projectId: project, model, requestId: "x", costSource: CostSource.CATALOG, occurredAt: at(start - 1) }),
        ),
      ).toBe(Code.FailedPrecondition);
      for (const bad of [
        { model, costSource: CostSource.CATALOG, costNanos: 5n },
        { costSource: CostSource.CATALOG, inputTokens: 1n },
        { model, costSource: 99 as CostSource },
        { model, cachedInputTokens: -1n },
        { model, costSource: CostSource.CATALOG, occurredAt: at(Date.parse("2026-12-02T00:10:00Z")) },
        { model, costSource: CostSource.CATALOG, occurredAt: at(Date.parse("2026-11-30T00:00:00Z")) },
      ]) {
        expect(await codeOf(c.recordCost({ projectId: project, requestId: "x", ...bad }))).toBe(Code.InvalidArgument);
      }
      expect((await c.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: 5n, recordCount: 1n });
    });

    it("a reported cost is kept as reported with the catalog cost beside it; per model, catalog vs recorded", async () => {
      const c = getClient();
      const project = newName("p");
      const model = newName("rep");
      const unpriced = newName("unpriced");
      getClock().set("2026-12-02T00:00:00Z");
      const set = await c.setModelPrice(price(model));
      const reported = await c.recordCost({
        projectId: project,
        model,
        requestId: "a",
        costNanos: 1_000n,
        inputTokens: 1_000n,
        outputTokens: 1_000n,
      });
      expect([reported.costNanos, reported.catalogCostNanos, reported.priceId]).toEqual([1_000n, 750_000n, set.price?.priceId]);
      const none = await c.recordCost({ projectId: project, model: unpriced, requestId: "b", costNanos: 0n, inputTokens: 5n });
      expect([none.costNanos, none.catalogCostNanos, none.priceId]).toEqual([0n, undefined, ""]);
      await c.recordCost({ projectId: project, model, requestId: "c", costSource: CostSource.CATALOG, inputTokens: 1_000n });
      const records = (await c.listCostRecords({ projectId: project })).records;
      expect(records.map((x) => [x.costSource, x.costNanos, x.catalogCostNanos])).toEqual([
        [CostSource.REPORTED, 1_000n, 750_000n],
        [CostSource.REPORTED, 0n, undefined],
        [CostSource.CATALOG, 150_000n, 150_000n],
      ]);
      const byModel = (await c.getProjectCost({ projectId: project, breakdownBy: [BreakdownDimension.MODEL] })).breakdowns[0]!.entries;
      const row = (key: string) => byModel.find((e) => e.key === key)!;
      expect([row(model).totalCostNanos, row(model).pricedCostNanos, row(model).catalogCostNanos, row(model).unpricedRecordCount]).toEqual([
        151_000n,
        151_000n,
        900_000n,
        0n,
      ]);
      expect([row(unpriced).recordCount, row(unpriced).unpricedRecordCount, row(unpriced).catalogCostNanos]).toEqual([1n, 1n, 0n]);
    });

    it("reservation idempotency covers model and tokens", async () => {
      const c = getClient();
      const project = newName("p");
      const [a, b] = [newName("a"), newName("b")];
      getClock().set("2026-12-02T00:00:00Z");
      await c.setModelPrice(price(a));
      await c.setModelPrice(price(b));
      const req = { projectId: project, model: a, inputTokens: 10n, maxOutputTokens: 10n, reserve: true, requestId: "res-1" };
      const first = await c.checkBudget(req);
      const again = await c.checkBudget(req);
      expect([again.duplicate, again.holdId]).toEqual([true, first.holdId]);
      for (const change of [{ model: b }, { inputTokens: 11n }, { maxOutputTokens: 9n }, { candidateModels: [b] }]) {
        expect(await codeOf(c.checkBudget({ ...req, ...change }))).toBe(Code.AlreadyExists);
      }
      // Same estimate in nanos, no tokens: a different reservation payload too.
      expect(
        await codeOf(
          c.checkBudget({ projectId: project, estimatedCostNanos: first.estimatedCostNanos, reserve: true, requestId: "res-1" }),
        ),
      ).toBe(Code.AlreadyExists);
    });

    it("200 concurrent reservers by tokens on one budget: exactly the budget's worth granted", async () => {
      const c = getClient();
      const model = newName("conc");
      const project = newName("p");
      getClock().set("2026-12-02T00:00:00Z");
      await c.setModelPrice(price(model));
      // Each reservation: 1000 input (150_000) + 500 output (300_000) = 450_000 nanos; room for exactly 37 of them.
      await c.setProjectBudget({ projectId: project, limitNanos: 450_000n * 37n + 449_999n });
      const answers = await Promise.all(
        Array.from({ length: 200 }, () =>
          c.checkBudget({ projectId: project, model, inputTokens: 1000n, maxOutputTokens: 500n, reserve: true }),
        ),
      );
      expect(answers.filter((a) => a.allowed).length).toBe(37);
      expect((await c.getProjectCost({ projectId: project })).projectCost?.reservedNanos).toBe(450_000n * 37n);
    });
  });
}

for (const kind of databaseKinds) {
  describe(`price catalog on ${kind}`, () => {
    const databases = new TestDatabases(kind);
    const clocks = {
      class: new TestClock("2026-12-02T00:00:00Z"),
      router: new TestClock("2026-12-02T00:00:00Z"),
      port: new TestClock("2026-12-02T00:00:00Z"),
    };
    let classInit: InitializedStore;
    let classHandler: BudgetServiceHandler;
    let routerInit: InitializedStore;
    let routerClient: BudgetClient;
    let server: TallyServer;
    let portClients: Record<string, BudgetClient>;

    beforeAll(async () => {
      const a = await memoryLedger(await databases.scratch(), clocks.class.now);
      classInit = a.init;
      classHandler = new BudgetServiceHandler(a.ledger);
      const b = await memoryLedger(await databases.scratch(), clocks.router.now);
      routerInit = b.init;
      routerClient = createClient(BudgetService, createRouterTransport(tallyRoutes(b.ledger)));
      server = await startTestServer({ databaseUrl: await databases.scratch() }, { now: clocks.port.now });
      portClients = clientsFor(server.url);
    });
    afterAll(async () => {
      await classInit?.store.close();
      await routerInit?.store.close();
      await server?.close();
      await databases.cleanup();
    });

    behaviour(
      "depth 1: the handler class",
      () => classClient(classHandler),
      () => clocks.class,
    );
    behaviour(
      "depth 2: createRouterTransport in memory",
      () => routerClient,
      () => clocks.router,
    );
    for (const protocol of ["connect+proto h2c", "connect+json http/1.1", "grpc h2c", "grpc-web http/1.1"]) {
      behaviour(
        `depth 3: real port 0, ${protocol}`,
        () => portClients[protocol] as BudgetClient,
        () => clocks.port,
      );
    }
  });
}
