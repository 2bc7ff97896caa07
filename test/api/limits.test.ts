// Limits past which a caller gets a specific error instead of a hang: a stalled
// request body, too many calls in flight, a full write queue, and the HTTP/2
// settings the server advertises.
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type UnaryRequest } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RecordCostRequestSchema } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { guardRequests } from "../../src/transport/http-guard.ts";
import { LifecycleGate } from "../../src/transport/lifecycle-gate.ts";
import { tallyNodeAdapter } from "../../src/transport/node-adapter.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { http2StreamsPerConnectionMax, requestBodyReceiveMsMax, transportHeadersBytesMax } from "../../src/limits.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { clientsFor, startTestServer, type BudgetClient } from "../helpers.ts";
import { frame, h1Request, h2Request } from "../raw-http.ts";

describe("a request body that stops arriving", () => {
  let init: InitializedStore;
  let ledger: Ledger;
  let h2: http2.Http2Server;
  let h1: http.Server;
  const urls = { h2: "", h1: "" };
  beforeAll(async () => {
    init = await initORM("sqlite::memory:");
    ledger = new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 16, queueDepthMax: 64 }));
    // The real handler stack with a short receive limit, so the test is quick.
    const handler = guardRequests(
      tallyNodeAdapter({ routes: tallyRoutes(ledger), fallback: (_req, res) => (res as http.ServerResponse).writeHead(404).end() }),
      { headersCountMax: 64, headersBytesMax: 8192, bodyReceiveMs: 300 },
    );
    h2 = http2.createServer(handler);
    h1 = http.createServer(handler);
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    await new Promise<void>((resolve) => h1.listen(0, "127.0.0.1", resolve));
    urls.h2 = `http://127.0.0.1:${(h2.address() as AddressInfo).port}`;
    urls.h1 = `http://127.0.0.1:${(h1.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    h1.closeAllConnections();
    await new Promise((resolve) => h1.close(resolve));
    await new Promise((resolve) => h2.close(resolve));
    await init.store.close();
  });

  const valid = toBinary(
    RecordCostRequestSchema,
    create(RecordCostRequestSchema, { projectId: "slow", costNanos: 5n, requestId: "slow-1" }),
  );
  const partial = frame(valid).subarray(0, 8); // the header and 3 bytes, then silence

  it("is answered DEADLINE_EXCEEDED over gRPC, and nothing is written", async () => {
    const res = await h2Request(urls.h2, {
      path: "/tally.budget.v1.BudgetService/RecordCost",
      headers: { "content-type": "application/grpc", te: "trailers" },
      body: partial,
      keepOpen: true,
    });
    expect(res.grpcStatus).toBe(Code.DeadlineExceeded);
    expect(res.grpcMessage).toMatch(/did not arrive within 300 ms/);
    expect((await ledger.getProjectCost("slow")).recordCount).toBe(0n);
  });

  it("is answered DEADLINE_EXCEEDED over gRPC-Web and Connect (HTTP/1.1)", async () => {
    const web = await h1Request(urls.h1, {
      path: "/tally.budget.v1.BudgetService/RecordCost",
      headers: { "content-type": "application/grpc-web+proto", "content-length": String(valid.length + 5) },
      body: partial,
      keepOpen: true,
    });
    expect(web.grpcStatus).toBe(Code.DeadlineExceeded);
    const connect = await h1Request(urls.h1, {
      path: "/tally.budget.v1.BudgetService/RecordCost",
      headers: { "content-type": "application/json", "content-length": "100" },
      body: '{"projectId":',
      keepOpen: true,
    });
    expect({ status: connect.status, code: connect.connectCode }).toEqual({ status: 504, code: "deadline_exceeded" });
    expect((await ledger.getProjectCost("slow")).recordCount).toBe(0n);
  });

  it("is a limit well above what a real body needs", () => {
    // 64 KiB at 10 KiB/s takes under 7 s.
    expect(requestBodyReceiveMsMax).toBeGreaterThanOrEqual(10_000);
  });
});

describe("calls in flight", () => {
  it("past the limit are refused with RESOURCE_EXHAUSTED, and admitted again once calls finish", async () => {
    const gate = new LifecycleGate(2);
    const releases: Array<() => void> = [];
    const next = () => new Promise<never>((_resolve, reject) => releases.push(() => reject(new Error("done"))));
    const call = () => gate.interceptor(next as never)({} as UnaryRequest);
    const held = [call(), call()];
    expect(gate.inFlight).toBe(2);
    const refused = (await call().catch((e: unknown) => ConnectError.from(e))) as ConnectError;
    expect(refused.code).toBe(Code.ResourceExhausted);
    expect(refused.rawMessage).toMatch(/2 calls in flight/);
    for (const release of releases.splice(0)) release();
    await Promise.allSettled(held);
    expect(gate.inFlight).toBe(0);
    const admitted = call();
    expect(gate.inFlight).toBe(1);
    for (const release of releases.splice(0)) release();
    await admitted.catch(() => undefined);
  });
});

describe("the server's transport limits", () => {
  it("advertises its HTTP/2 stream and header limits", async () => {
    const server = await startTestServer();
    const session = http2.connect(server.url);
    try {
      const settings = await new Promise<http2.Settings>((resolve) => session.once("remoteSettings", resolve));
      expect(settings.maxConcurrentStreams).toBe(http2StreamsPerConnectionMax);
      expect(settings.maxHeaderListSize).toBe(transportHeadersBytesMax);
    } finally {
      session.close();
      await server.close();
    }
  });

  it("refuses writes past the queue depth with RESOURCE_EXHAUSTED and counts exactly the accepted ones", async () => {
    const server = await startTestServer({ batchSizeMax: 1, queueDepthMax: 1 });
    try {
      const client = clientsFor(server.url)["grpc h2c"] as BudgetClient;
      let accepted = 0;
      let refused = 0;
      // Bounded: at most 10 bursts of 200 concurrent writes.
      for (let burst = 0; burst < 10 && refused === 0; burst++) {
        const outcomes = await Promise.allSettled(
          Array.from({ length: 200 }, (_, i) => client.recordCost({ projectId: "queue", costNanos: 1n, requestId: `b${burst}-${i}` })),
        );
        for (const o of outcomes) {
          if (o.status === "fulfilled") accepted++;
          else {
            expect(ConnectError.from(o.reason).code).toBe(Code.ResourceExhausted);
            refused++;
          }
        }
      }
      expect(refused).toBeGreaterThan(0);
      expect((await client.getProjectCost({ projectId: "queue" })).projectCost).toMatchObject({
        totalCostNanos: BigInt(accepted),
        recordCount: BigInt(accepted),
      });
    } finally {
      await server.close();
    }
  });
});
