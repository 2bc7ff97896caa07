// Keys scoped to a parent project read its descendants (issue 18, decision
// 0013): GetProjectCost, GetProjectBudget, ListCostRecords and WatchBudget of
// any project below one the key covers (by id or by prefix), over every
// protocol; writes still need the project itself, and a key never reads a
// tree it does not cover any level of.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { clientsFor, codeOf, startTestServer, usd, writeKeysFile, type BudgetClient } from "../helpers.ts";

const adminKey = generateApiKey();
const orgKey = generateApiKey(); // project "acme"
const teamKey = generateApiKey(); // prefix "team-b/"
const strangerKey = generateApiKey(); // project "elsewhere"

describe("keys scoped to a parent read its children", () => {
  let server: TallyServer;
  let admin: BudgetClient;
  beforeAll(async () => {
    const keysFile = writeKeysFile([
      { id: "ops", role: "admin", key: adminKey },
      { id: "acme", role: "project", key: orgKey, projects: ["acme"] },
      { id: "team-b", role: "project", key: teamKey, projectPrefixes: ["team-b/"] },
      { id: "stranger", role: "project", key: strangerKey, projects: ["elsewhere"] },
    ]);
    server = await startTestServer({ keysFile });
    admin = clientsFor(server.url, adminKey)["grpc h2c"]!;
    await admin.setProjectBudget({ projectId: "acme", limitNanos: usd(100) });
    await admin.setProjectBudget({ projectId: "acme-team-a", limitNanos: 0n, parentId: "acme" });
    await admin.setProjectBudget({ projectId: "team-b/root", limitNanos: 0n, parentId: "acme" });
    await admin.setProjectBudget({ projectId: "chat", limitNanos: usd(10), parentId: "acme-team-a" });
    await admin.setProjectBudget({ projectId: "search", limitNanos: usd(10), parentId: "team-b/root" });
    await admin.recordCost({ projectId: "chat", costNanos: usd(1), requestId: "c1", agentId: "bot" });
    await admin.recordCost({ projectId: "search", costNanos: usd(2), requestId: "s1" });
    await admin.setProjectBudget({ projectId: "elsewhere", limitNanos: usd(1) });
  });
  afterAll(async () => {
    await server?.close();
  });

  for (const protocol of ["connect+proto h2c", "connect+json http/1.1", "grpc h2c", "grpc-web http/1.1"])
    it(`over ${protocol}: the org key reads every level below it, writes only its own project`, async () => {
      const org = clientsFor(server.url, orgKey)[protocol]!;
      expect((await org.getProjectCost({ projectId: "acme" })).projectCost!.totalCostNanos).toBe(usd(3));
      expect((await org.getProjectCost({ projectId: "acme-team-a" })).projectCost!.totalCostNanos).toBe(usd(1));
      expect((await org.getProjectCost({ projectId: "chat" })).projectCost!.totalCostNanos).toBe(usd(1));
      expect((await org.getProjectBudget({ projectId: "search" })).budget).toMatchObject({ parentId: "team-b/root", limitNanos: usd(10) });
      const records = await org.listCostRecords({ projectId: "chat" });
      expect(records.records.map((r) => r.requestId)).toEqual(["c1"]);
      // Writes and reservations need the project itself.
      expect(await codeOf(org.recordCost({ projectId: "chat", costNanos: 1n, requestId: `w-${protocol}` }))).toBe(Code.PermissionDenied);
      expect(await codeOf(org.checkBudget({ projectId: "chat", estimatedCostNanos: 1n }))).toBe(Code.PermissionDenied);
      // Outside the tree: denied, and so is a project that does not exist.
      expect(await codeOf(org.getProjectCost({ projectId: "elsewhere" }))).toBe(Code.PermissionDenied);
      expect(await codeOf(org.getProjectCost({ projectId: "nobody" }))).toBe(Code.PermissionDenied);
    });

  it("a team key (by prefix) reads its team's children, not its siblings' nor the org above it", async () => {
    const team = clientsFor(server.url, teamKey)["connect+json http/1.1"]!;
    expect((await team.getProjectCost({ projectId: "search" })).projectCost!.totalCostNanos).toBe(usd(2));
    expect(await codeOf(team.getProjectCost({ projectId: "chat" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(team.getProjectCost({ projectId: "acme" }))).toBe(Code.PermissionDenied);
    const stranger = clientsFor(server.url, strangerKey)["grpc h2c"]!;
    expect(await codeOf(stranger.getProjectCost({ projectId: "search" }))).toBe(Code.PermissionDenied);
    // An id that is not an id is bad input, not a tree lookup.
    expect(await codeOf(team.getProjectCost({ projectId: "has space" }))).toBe(Code.InvalidArgument);
  });

  it("moving a project out of the tree ends the parent key's reads of it", async () => {
    const org = clientsFor(server.url, orgKey)["grpc h2c"]!;
    await admin.setProjectBudget({ projectId: "moved", limitNanos: 0n, parentId: "acme-team-a" });
    expect((await org.getProjectBudget({ projectId: "moved" })).budget?.parentId).toBe("acme-team-a");
    await admin.setProjectBudget({ projectId: "moved", limitNanos: 0n, parentId: "" });
    expect(await codeOf(org.getProjectBudget({ projectId: "moved" }))).toBe(Code.PermissionDenied);
  });

  it("WatchBudget of a child streams to the parent's key", async () => {
    const org = clientsFor(server.url, orgKey)["connect+proto h2c"]!;
    const abort = new AbortController();
    const stream = org.watchBudget({ projectId: "chat" }, { signal: abort.signal });
    const iterator = stream[Symbol.asyncIterator]();
    const first = iterator.next();
    // The first event is the snapshot or the next change; record to be sure one comes.
    await admin.recordCost({ projectId: "chat", costNanos: usd(1), requestId: "c-watch" });
    const { value, done } = await first;
    expect(done).toBe(false);
    expect(value?.projectId ?? "chat").toBe("chat");
    abort.abort();
    await iterator.return?.(undefined).catch(() => undefined);
  });
});
