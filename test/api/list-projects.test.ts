// ListProjects as one behaviour suite at three depths (handler class,
// createRouterTransport, real port 0 per protocol), each on its own empty
// database, since a listing sees every project of the store.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { BudgetService, ListProjectsRequestSchema, ProjectOrder, type ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { withErrorMapping } from "../../src/api/errors.ts";
import { BudgetServiceHandler } from "../../src/api/budget-service.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import { decodePageToken, encodePageToken } from "../../src/api/page-token.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { int64Max } from "../../src/ledger/money.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { listProjectsPageSizeDefault, listProjectsPageSizeMax } from "../../src/limits.ts";
import type { TallyServer } from "../../src/server.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { createPostgresDatabase, databaseKinds, emptyTables, type DatabaseKind } from "../databases.ts";
import { clientsFor, startTestServer, TestClock, usd, codeOf, type BudgetClient } from "../helpers.ts";

type Lister = Pick<BudgetClient, "listProjects" | "recordCost" | "setProjectBudget" | "getProjectCost">;

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  // Servers and stores first, then the databases they used (pushed before them).
  for (const close of closers.splice(0).reverse()) await close();
});

/** Something built on an empty database. On SQLite every call gets a new
 * in-memory database. On PostgreSQL a new database costs about a second, so each
 * `key` keeps one database (with what was built on it) and empties its tables
 * before handing it out again (tests in a file run one after another). */
const reused = new Map<string, { url: string; built: unknown }>();
async function onEmptyDatabase<T>(kind: DatabaseKind, key: string, build: (databaseUrl: string) => Promise<T>): Promise<T> {
  if (kind === "sqlite") return build("sqlite::memory:");
  const entry = reused.get(key);
  if (entry !== undefined) {
    await emptyTables(entry.url);
    return entry.built as T;
  }
  const db = await createPostgresDatabase();
  closers.push(db.drop);
  const built = await build(db.url);
  reused.set(key, { url: db.url, built });
  return built;
}

async function memoryLedger(databaseUrl: string, clock?: TestClock): Promise<Ledger> {
  const init: InitializedStore = await initORM(databaseUrl);
  const uow = new UnitOfWork(init.store, { batchSizeMax: 256, queueDepthMax: 4096, now: clock?.now });
  closers.push(async () => {
    await uow.close();
    await init.store.close();
  });
  return new Ledger(init.store, uow, { now: clock?.now });
}

/** Depth 1: the handler class, with the ledger for seeding. */
async function classLister(databaseUrl: string, clock?: TestClock): Promise<{ client: BudgetClient; ledger: Ledger }> {
  const ledger = await memoryLedger(databaseUrl, clock);
  const handler = withErrorMapping(BudgetService, new BudgetServiceHandler(ledger));
  const seed = createClient(BudgetService, createRouterTransport(tallyRoutes(ledger)));
  const client: BudgetClient = {
    ...seed,
    listProjects: ((init?: MessageInitShape<typeof ListProjectsRequestSchema>) =>
      handler.listProjects(create(ListProjectsRequestSchema, init))) as BudgetClient["listProjects"],
  };
  return { client, ledger };
}

async function listAll(c: Lister, order: ProjectOrder, pageSize: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let pageToken = "";
  for (let pages = 1; pages <= 100; pages++) {
    const page = await c.listProjects({ pageSize, pageToken, order });
    expect(page.projects.length).toBeLessThanOrEqual(pageSize);
    ids.push(...page.projects.map((p) => p.projectId));
    if (page.nextPageToken === "") return { ids, pages };
    pageToken = page.nextPageToken;
  }
  throw new Error("more than 100 pages");
}

function behaviour(name: string, fresh: () => Promise<Lister>) {
  describe(name, () => {
    it("lists nothing, with no next page, when no project exists", async () => {
      const c = await fresh();
      expect(await c.listProjects({})).toMatchObject({ projects: [], nextPageToken: "" });
    });

    it("lists projects with costs, with a budget, or both, once each, with totals, budget and share of the limit", async () => {
      const c = await fresh();
      await c.setProjectBudget({ projectId: "b-only", limitNanos: usd(10), currency: "EUR" });
      await c.recordCost({ projectId: "costs-only", costNanos: usd(3), inputTokens: 10n, outputTokens: 2n, requestId: "r1" });
      await c.setProjectBudget({ projectId: "both", limitNanos: usd(10) });
      await c.recordCost({ projectId: "both", costNanos: usd(2.5), requestId: "r1" });
      await c.setProjectBudget({ projectId: "over", limitNanos: 3n });
      await c.recordCost({ projectId: "over", costNanos: 4n, requestId: "r1" });
      await c.setProjectBudget({ projectId: "huge", limitNanos: 1n });
      await c.recordCost({ projectId: "huge", costNanos: int64Max, requestId: "r1" });
      const { projects, nextPageToken } = await c.listProjects({});
      expect(nextPageToken).toBe("");
      expect(projects.map((p) => p.projectId)).toEqual(["b-only", "both", "costs-only", "huge", "over"]);
      const byId = new Map(projects.map((p) => [p.projectId, p] as [string, ProjectSummary]));
      expect(byId.get("b-only")).toMatchObject({
        cost: { totalCostNanos: 0n, recordCount: 0n },
        budget: { limitNanos: usd(10), currency: "EUR", configured: true },
        limitUsedBasisPoints: 0n,
      });
      expect(byId.get("b-only")?.cost?.updatedAt).toBeUndefined();
      expect(byId.get("costs-only")).toMatchObject({
        cost: { totalCostNanos: usd(3), inputTokens: 10n, outputTokens: 2n, recordCount: 1n },
        budget: { limitNanos: 0n, currency: "USD", configured: false },
        limitUsedBasisPoints: 0n,
      });
      expect(byId.get("both")).toMatchObject({
        cost: { totalCostNanos: usd(2.5) },
        budget: { limitNanos: usd(10) },
        limitUsedBasisPoints: 2_500n,
      });
      // 4 of 3 is 133.33 %: rounded down to 13333 basis points.
      expect(byId.get("over")?.limitUsedBasisPoints).toBe(13_333n);
      expect(byId.get("huge")?.limitUsedBasisPoints).toBe(int64Max);
      // Each entry equals what GetProjectCost says.
      for (const p of projects) expect(p.cost).toEqual((await c.getProjectCost({ projectId: p.projectId })).projectCost);
    });

    it("pages by project id: every project exactly once, the last page has no token", async () => {
      const c = await fresh();
      const ids = Array.from({ length: 7 }, (_, i) => `proj-${String.fromCharCode(103 - i)}`); // g..a, created out of order
      for (const [i, id] of ids.entries()) {
        if (i % 2 === 0) await c.setProjectBudget({ projectId: id, limitNanos: 100n });
        else await c.recordCost({ projectId: id, costNanos: BigInt(i), requestId: "r" });
      }
      await c.recordCost({ projectId: "proj-g", costNanos: 1n, requestId: "r" }); // in both tables
      const { ids: listed, pages } = await listAll(c, ProjectOrder.PROJECT_ID, 3);
      expect(listed).toEqual([...ids].sort());
      expect(pages).toBe(3);
      // Exactly one page worth: no token pointing at an empty page.
      expect((await c.listProjects({ pageSize: 7 })).nextPageToken).toBe("");
      // A project created behind the cursor while paging is not listed twice, one ahead is listed.
      const first = await c.listProjects({ pageSize: 3 });
      await c.recordCost({ projectId: "proj-0", costNanos: 1n, requestId: "r" });
      await c.recordCost({ projectId: "proj-z", costNanos: 1n, requestId: "r" });
      const rest = await c.listProjects({ pageSize: 100, pageToken: first.nextPageToken });
      expect([...first.projects, ...rest.projects].map((p) => p.projectId)).toEqual([...[...ids].sort(), "proj-z"]);
    });

    it("orders by spend, largest first, ties by project id, across pages", async () => {
      const c = await fresh();
      const spend: Record<string, bigint> = { a: 5n, b: 9n, c: 5n, d: 1n, e: 5n, f: 0n };
      for (const [id, cost] of Object.entries(spend)) await c.recordCost({ projectId: id, costNanos: cost, requestId: "r" });
      await c.setProjectBudget({ projectId: "budget-only", limitNanos: 1n });
      const { ids } = await listAll(c, ProjectOrder.SPENT_DESC, 2);
      expect(ids).toEqual(["b", "a", "c", "e", "d", "budget-only", "f"]);
      const top = await c.listProjects({ order: ProjectOrder.SPENT_DESC, pageSize: 1 });
      expect(top.projects[0]).toMatchObject({ projectId: "b", cost: { totalCostNanos: 9n } });
    });

    it("serves page sizes above the maximum at the maximum, and 0 as the default", async () => {
      const c = await fresh();
      await c.recordCost({ projectId: "p", costNanos: 1n, requestId: "r" });
      expect((await c.listProjects({ pageSize: 1_000_000 })).projects).toHaveLength(1);
      expect((await c.listProjects({ pageSize: 0 })).projects).toHaveLength(1);
    });

    it("rejects a negative page size, a damaged token, a token of another order and an unknown order", async () => {
      const c = await fresh();
      for (const id of ["a", "b", "c"]) await c.recordCost({ projectId: id, costNanos: 1n, requestId: "r" });
      const { nextPageToken } = await c.listProjects({ pageSize: 1 });
      expect(nextPageToken).not.toBe("");
      expect(await codeOf(c.listProjects({ pageSize: 1, pageToken: nextPageToken }))).toBe("ok");
      expect(await codeOf(c.listProjects({ pageSize: -1 }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.listProjects({ pageToken: "not a token!" }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.listProjects({ pageToken: nextPageToken.slice(0, -3) }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.listProjects({ pageToken: "x".repeat(600) }))).toBe(Code.InvalidArgument);
      expect(
        await codeOf(c.listProjects({ pageToken: Buffer.from('{"v":1,"o":"project_id","id":"a b","s":"0"}').toString("base64url") })),
      ).toBe(Code.InvalidArgument);
      expect(await codeOf(c.listProjects({ pageToken: nextPageToken, order: ProjectOrder.SPENT_DESC }))).toBe(Code.InvalidArgument);
      expect(await codeOf(c.listProjects({ order: 7 as ProjectOrder }))).toBe(Code.InvalidArgument);
      const error = await c.listProjects({ pageSize: -5 }).catch((e: unknown) => ConnectError.from(e));
      expect((error as ConnectError).rawMessage).toMatch(/page_size must be >= 0/);
    });
  });
}

/** Active holds in the summaries: reserved_nanos and active_hold_count as
 * GetProjectCost reports them, expired holds leaving at once (clock moved by hand). */
function holdsBehaviour(name: string, fresh: () => Promise<{ client: BudgetClient; clock: TestClock }>) {
  describe(name, () => {
    it("reports each project's active holds, exactly as GetProjectCost does, and drops expired ones at once", async () => {
      const { client: c, clock } = await fresh();
      clock.set("2026-11-27T12:00:00Z");
      await c.setProjectBudget({ projectId: "h-a", limitNanos: usd(100) });
      const long = await c.checkBudget({ projectId: "h-a", estimatedCostNanos: usd(30), reserve: true, holdTtl: { seconds: 600n } });
      const short = await c.checkBudget({ projectId: "h-a", estimatedCostNanos: usd(20), reserve: true, holdTtl: { seconds: 5n } });
      expect([long.allowed, short.allowed]).toEqual([true, true]);
      await c.recordCost({ projectId: "h-a", costNanos: usd(1), requestId: "r1" });
      // h-b: a hold released; h-c: a hold settled by its cost; h-d: no holds at all.
      const released = await c.checkBudget({ projectId: "h-b", estimatedCostNanos: usd(5), reserve: true });
      await c.releaseHold({ projectId: "h-b", holdId: released.holdId });
      await c.recordCost({ projectId: "h-b", costNanos: usd(2), requestId: "r1" });
      const settled = await c.checkBudget({ projectId: "h-c", estimatedCostNanos: usd(5), reserve: true });
      await c.recordCost({ projectId: "h-c", costNanos: usd(4), requestId: "r1", holdId: settled.holdId });
      await c.setProjectBudget({ projectId: "h-d", limitNanos: usd(1) });

      const summaries = async (order: ProjectOrder) => {
        const { projects } = await c.listProjects({ order });
        for (const p of projects) expect(p.cost, p.projectId).toEqual((await c.getProjectCost({ projectId: p.projectId })).projectCost);
        return Object.fromEntries(projects.map((p) => [p.projectId, [p.cost?.reservedNanos, p.cost?.activeHoldCount]]));
      };
      const before = { "h-a": [usd(50), 2n], "h-b": [0n, 0n], "h-c": [0n, 0n], "h-d": [0n, 0n] };
      expect(await summaries(ProjectOrder.PROJECT_ID)).toEqual(before);
      expect(await summaries(ProjectOrder.SPENT_DESC)).toEqual(before);
      // Paging one at a time reads the same numbers.
      const first = await c.listProjects({ pageSize: 1 });
      expect(first.projects[0]?.cost).toMatchObject({ reservedNanos: usd(50), activeHoldCount: 2n });

      clock.advance(5_000); // the short hold expires now, swept or not
      expect(await summaries(ProjectOrder.PROJECT_ID)).toEqual({ ...before, "h-a": [usd(30), 1n] });
      await c.recordCost({ projectId: "h-a", costNanos: usd(29), requestId: "r2", holdId: long.holdId });
      expect(await summaries(ProjectOrder.SPENT_DESC)).toEqual({ ...before, "h-a": [0n, 0n] });
    });
  });
}

for (const kind of databaseKinds) {
  describe(`ListProjects on ${kind}`, () => {
    behaviour("depth 1: the handler class", async () => (await onEmptyDatabase(kind, "depth 1", (url) => classLister(url))).client);
    behaviour("depth 2: createRouterTransport in memory", () =>
      onEmptyDatabase(kind, "depth 2", async (url) =>
        createClient(BudgetService, createRouterTransport(tallyRoutes(await memoryLedger(url)))),
      ),
    );
    for (const protocol of ["connect+proto h2c", "connect+json http/1.1", "grpc h2c", "grpc-web http/1.1"]) {
      behaviour(`depth 3: real port 0, ${protocol}`, () =>
        onEmptyDatabase(kind, `depth 3 ${protocol}`, async (databaseUrl) => {
          const server: TallyServer = await startTestServer({ databaseUrl });
          closers.push(() => server.close());
          return clientsFor(server.url)[protocol] as BudgetClient;
        }),
      );
    }

    holdsBehaviour("holds, depth 1: the handler class", () =>
      onEmptyDatabase(kind, "holds depth 1", async (url) => {
        const clock = new TestClock("2026-11-27T12:00:00Z");
        return { client: (await classLister(url, clock)).client, clock };
      }),
    );
    holdsBehaviour("holds, depth 2: createRouterTransport in memory", () =>
      onEmptyDatabase(kind, "holds depth 2", async (url) => {
        const clock = new TestClock("2026-11-27T12:00:00Z");
        return { client: createClient(BudgetService, createRouterTransport(tallyRoutes(await memoryLedger(url, clock)))), clock };
      }),
    );
    for (const protocol of ["connect+json http/1.1", "grpc h2c"]) {
      holdsBehaviour(`holds, depth 3: real port 0, ${protocol}`, () =>
        onEmptyDatabase(kind, `holds depth 3 ${protocol}`, async (databaseUrl) => {
          const clock = new TestClock("2026-11-27T12:00:00Z");
          const server: TallyServer = await startTestServer({ databaseUrl }, { now: clock.now });
          closers.push(() => server.close());
          return { client: clientsFor(server.url)[protocol] as BudgetClient, clock };
        }),
      );
    }

    it("caps a page at the maximum size (depth 1, seeded through the ledger)", async () => {
      const { client, ledger } = await onEmptyDatabase(kind, "cap", (url) => classLister(url));
      const n = listProjectsPageSizeMax + 5;
      await Promise.all(
        Array.from({ length: n }, (_, i) =>
          ledger.setProjectBudget({ projectId: `p${String(i).padStart(5, "0")}`, limitNanos: 1n, currency: null }),
        ),
      );
      const big = await client.listProjects({ pageSize: n });
      expect(big.projects).toHaveLength(listProjectsPageSizeMax);
      expect(big.nextPageToken).not.toBe("");
      expect((await client.listProjects({ pageToken: big.nextPageToken, pageSize: n })).projects).toHaveLength(5);
      expect((await client.listProjects({})).projects).toHaveLength(listProjectsPageSizeDefault);
    });
  });
}

describe("ListProjects page tokens", () => {
  it("issues tokens that decode only for their own order", () => {
    const token = encodePageToken("spent_desc", { projectId: "org/a", spentNanos: int64Max });
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodePageToken(token, "spent_desc")).toEqual({ projectId: "org/a", spentNanos: int64Max });
    expect(decodePageToken("", "spent_desc")).toBeNull();
    expect(() => decodePageToken(token, "project_id")).toThrow(/order spent_desc/);
  });
});
