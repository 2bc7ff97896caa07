// Per-key rate limits: the token bucket alone on a hand-moved clock, then on a
// real server through the fast path and Connect's router, keys file and all.
import { readFileSync, writeFileSync } from "node:fs";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey, hashApiKey, parseKeysFile } from "../../src/auth/keys.ts";
import { KeyRateLimiter } from "../../src/auth/rate-limit.ts";
import { encodeRetryInfo } from "../../src/retry-info.ts";
import { apiKeysMax } from "../../src/limits.ts";
import type { TallyServer } from "../../src/server.ts";
import { bearer, clientsFor, codeOf, startTestServer, TestClock, writeKeysFile, type BudgetClient } from "../helpers.ts";

const refusal = (call: () => void): ConnectError | null => {
  try {
    call();
    return null;
  } catch (error) {
    return ConnectError.from(error);
  }
};

describe("KeyRateLimiter", () => {
  it("admits a second's worth at once, then one call per 1/rate seconds", () => {
    const clock = new TestClock("2026-11-27T12:00:00Z");
    const limiter = new KeyRateLimiter(clock.now);
    for (let i = 0; i < 3; i++) expect(refusal(() => limiter.take("k", "digest-k", 3))).toBeNull();
    const refused = refusal(() => limiter.take("k", "digest-k", 3));
    expect([refused?.code, refused?.rawMessage]).toEqual([
      Code.ResourceExhausted,
      'API key "k" is over its rate limit of 3 calls/s; retry in 334 ms',
    ]);
    clock.advance(333);
    expect(refusal(() => limiter.take("k", "digest-k", 3))?.code).toBe(Code.ResourceExhausted); // refused calls cost nothing
    clock.advance(1);
    expect(refusal(() => limiter.take("k", "digest-k", 3))).toBeNull();
    // Another key has its own bucket; a changed limit starts a full bucket.
    expect(refusal(() => limiter.take("other", "digest-o", 1))).toBeNull();
    expect(refusal(() => limiter.take("k", "digest-k", 10))).toBeNull();
    // Idle for long, the bucket holds one second's worth, never more.
    clock.advance(60_000);
    for (let i = 0; i < 10; i++) expect(refusal(() => limiter.take("k", "digest-k", 10))).toBeNull();
    expect(refusal(() => limiter.take("k", "digest-k", 10))?.code).toBe(Code.ResourceExhausted);
  });

  it("stays bounded: at the key bound, buckets that are full again are forgotten", () => {
    const clock = new TestClock("2026-11-27T12:00:00Z");
    const limiter = new KeyRateLimiter(clock.now);
    for (let i = 0; i < apiKeysMax; i++) limiter.take(`k${i}`, `d${i}`, 1);
    expect(limiter.size).toBe(apiKeysMax);
    clock.advance(1_000);
    limiter.take("new", "d-new", 1);
    expect(limiter.size).toBe(1);
  });

  it("reads rateLimitPerSecond from the keys file and refuses anything but a whole number in range", () => {
    const entry = (rateLimitPerSecond: unknown) =>
      JSON.stringify({ keys: [{ id: "k", role: "admin", sha256: hashApiKey(generateApiKey()), rateLimitPerSecond }] });
    expect(parseKeysFile(entry(50), "t")[0]?.rateLimitPerSecond).toBe(50);
    for (const bad of [0, -1, 1.5, "50", 1_000_001, null]) {
      expect(() => parseKeysFile(entry(bad), "t"), String(bad)).toThrow(/"rateLimitPerSecond" must be a whole number from 1 to 1000000/);
    }
  });
});

describe("rate limits on the server", () => {
  const limitedKey = generateApiKey();
  const freeKey = generateApiKey();
  const clock = new TestClock("2026-11-27T12:00:00Z");
  let server: TallyServer;
  beforeAll(async () => {
    const keysFile = writeKeysFile([
      { id: "free", role: "admin", key: freeKey },
      { id: "limited", role: "project", key: limitedKey, projects: ["rl"] },
    ]);
    // writeKeysFile knows no limits: add one to the entry as an operator would.
    const doc = JSON.parse(readFileSync(keysFile, "utf8")) as { keys: Array<Record<string, unknown>> };
    doc.keys[1]!.rateLimitPerSecond = 4;
    writeFileSync(keysFile, JSON.stringify(doc));
    server = await startTestServer({ keysFile }, { now: clock.now });
  });
  afterAll(async () => {
    await server.close();
  });

  it("refuses a key's calls beyond its limit with RESOURCE_EXHAUSTED on the fast path and the router alike, and admits them again as time passes", async () => {
    const fast = clientsFor(server.url, limitedKey)["grpc h2c"] as BudgetClient;
    const routed = createClient(
      BudgetService,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "2",
        sendCompression: compressionGzip,
        compressMinBytes: 0,
        interceptors: [bearer(limitedKey)],
      }),
    );
    const admin = clientsFor(server.url, freeKey)["connect+proto h2c"] as BudgetClient;
    const codes: Array<Code | "ok"> = [];
    for (const client of [fast, routed, fast, routed, fast, routed]) codes.push(await codeOf(client.getProjectCost({ projectId: "rl" })));
    expect(codes).toEqual(["ok", "ok", "ok", "ok", Code.ResourceExhausted, Code.ResourceExhausted]);
    const refused = ConnectError.from(await fast.recordCost({ projectId: "rl", costNanos: 1n, requestId: "x" }).catch((e: unknown) => e));
    expect(refused.rawMessage).toBe('API key "limited" is over its rate limit of 4 calls/s; retry in 250 ms');
    // The wait travels as google.rpc.RetryInfo too (what client helpers read),
    // on the fast path (gRPC trailers) and through the router (Connect JSON) alike.
    const routedRefusal = ConnectError.from(await routed.getProjectCost({ projectId: "rl" }).catch((e: unknown) => e));
    const connectJson = createClient(
      BudgetService,
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: false, interceptors: [bearer(limitedKey)] }),
    );
    const jsonRefusal = ConnectError.from(await connectJson.getProjectCost({ projectId: "rl" }).catch((e: unknown) => e));
    for (const error of [refused, routedRefusal, jsonRefusal]) {
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(error.details.map((d) => ("type" in d ? [d.type, Buffer.from(d.value).toString("hex")] : null))).toEqual([
        ["google.rpc.RetryInfo", Buffer.from(encodeRetryInfo(250)).toString("hex")],
      ]);
    }
    expect((await admin.getProjectCost({ projectId: "rl" })).projectCost?.recordCount).toBe(0n); // refused before any work; other keys unaffected
    clock.advance(250);
    expect(await codeOf(fast.getProjectCost({ projectId: "rl" }))).toBe("ok");
    expect(await codeOf(routed.getProjectCost({ projectId: "rl" }))).toBe(Code.ResourceExhausted);
  });
});
