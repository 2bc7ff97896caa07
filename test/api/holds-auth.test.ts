// API keys on the hold, watch and ledger RPCs: a project key acts on its own
// projects' holds, streams and records only (every one of these requests names
// its project, so the same authorization table covers them).
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetEventKind } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { clientsFor, startTestServer, writeKeysFile, codeOf, type BudgetClient } from "../helpers.ts";

const teamKey = generateApiKey();
const otherKey = generateApiKey();

describe("holds, WatchBudget and ListCostRecords with API keys", () => {
  let server: TallyServer;
  beforeAll(async () => {
    const keysFile = writeKeysFile([
      { id: "team", role: "project", key: teamKey, projects: ["team-p"] },
      { id: "other", role: "project", key: otherKey, projects: ["other-p"] },
    ]);
    server = await startTestServer({ keysFile });
  });
  afterAll(async () => {
    await server.close();
  });

  it("lets a project key reserve, settle, release, watch and list its own project only", async () => {
    const team = clientsFor(server.url, teamKey)["grpc h2c"] as BudgetClient;
    const other = clientsFor(server.url, otherKey)["grpc h2c"] as BudgetClient;
    const first = await team.checkBudget({ projectId: "team-p", estimatedCostNanos: 5n, reserve: true });
    const second = await team.checkBudget({ projectId: "team-p", estimatedCostNanos: 5n, reserve: true });
    expect((await team.recordCost({ projectId: "team-p", costNanos: 4n, requestId: "r1", holdId: first.holdId })).settledHoldNanos).toBe(
      5n,
    );

    // Another project's key cannot touch the hold, whatever project it names.
    expect(await codeOf(other.releaseHold({ projectId: "team-p", holdId: second.holdId }))).toBe(Code.PermissionDenied);
    expect(await codeOf(other.releaseHold({ projectId: "other-p", holdId: second.holdId }))).toBe(Code.NotFound);
    expect(await codeOf(other.recordCost({ projectId: "other-p", costNanos: 1n, requestId: "x", holdId: second.holdId }))).toBe(
      Code.FailedPrecondition,
    );
    expect(await codeOf(other.listCostRecords({ projectId: "team-p" }))).toBe(Code.PermissionDenied);
    const denied = other.watchBudget({ projectId: "team-p" })[Symbol.asyncIterator]();
    expect(await codeOf(denied.next())).toBe(Code.PermissionDenied);

    expect((await team.releaseHold({ projectId: "team-p", holdId: second.holdId })).releasedNanos).toBe(5n);
    expect((await team.listCostRecords({ projectId: "team-p" })).records.map((r) => r.holdId)).toEqual([first.holdId]);
    const abort = new AbortController();
    const stream = team.watchBudget({ projectId: "team-p" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.event?.kind).toBe(BudgetEventKind.SNAPSHOT);
    abort.abort();
    await stream.return?.();
  });
});
