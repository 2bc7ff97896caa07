// One key cannot take every WatchBudget slot (issue 15, item 4): past its
// share (watchSubscribersPerKeyMax) its next watch is RESOURCE_EXHAUSTED while
// another key still gets streams.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey } from "../../src/auth/keys.ts";
import { watchSubscribersMax, watchSubscribersPerKeyMax } from "../../src/limits.ts";
import type { TallyServer } from "../../src/server.ts";
import { bearer, startTestServer, within, writeKeysFile } from "../helpers.ts";

describe("WatchBudget slots per key", () => {
  const greedyKey = generateApiKey();
  const otherKey = generateApiKey();
  let server: TallyServer;
  beforeAll(async () => {
    server = await startTestServer({
      keysFile: writeKeysFile([
        { id: "greedy", role: "project", key: greedyKey, projectPrefixes: ["greedy/"] },
        { id: "other", role: "project", key: otherKey, projectPrefixes: ["other/"] },
      ]),
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it(`lets one key hold ${watchSubscribersPerKeyMax} streams, refuses its next, and still serves another key`, async () => {
    expect(watchSubscribersPerKeyMax).toBeLessThan(watchSubscribersMax);
    const client = (key: string) => createClient(BudgetService, createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(key)] }));
    const greedy = client(greedyKey);
    const abort = new AbortController();
    const open = Array.from({ length: watchSubscribersPerKeyMax }, (_, i) =>
      greedy.watchBudget({ projectId: `greedy/p${i}` }, { signal: abort.signal })[Symbol.asyncIterator](),
    );
    try {
      // Each is open once its snapshot arrived.
      await within(Promise.all(open.map((s) => s.next())), `${watchSubscribersPerKeyMax} snapshots`, 30_000);
      const refused = await greedy
        .watchBudget({ projectId: "greedy/one-more" })
        [Symbol.asyncIterator]()
        .next()
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      expect(refused?.code).toBe(Code.ResourceExhausted);
      expect(refused?.rawMessage).toBe(
        `API key greedy already has ${watchSubscribersPerKeyMax} WatchBudget streams open (its share of the server's ${watchSubscribersMax}); close one or retry later`,
      );
      const other = client(otherKey).watchBudget({ projectId: "other/p" }, { signal: abort.signal })[Symbol.asyncIterator]();
      const snapshot = await within(other.next(), "the other key's snapshot");
      expect(snapshot.value?.event?.projectId).toBe("other/p");
    } finally {
      abort.abort();
    }
  });
});
