// The unary fast path against the real server: which calls it takes, which it
// leaves to Connect's router, and that both give the same answers and codes.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createConnectRouter } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { BudgetService, GetProjectCostRequestSchema, RecordCostRequestSchema } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { tallyRoutes } from "../../src/api/routes.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import type { TallyServer } from "../../src/server.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import { UnaryFastPath } from "../../src/transport/unary-fast-path.ts";
import { frame, h2Request } from "../raw-http.ts";
import { clientsFor, startTestServer, type BudgetClient } from "../helpers.ts";

let server: TallyServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.close();
});
let before = { served: 0, declined: 0 };
beforeEach(() => {
  before = { ...server.rpc.fastPath.stats };
});
const delta = () => ({
  served: server.rpc.fastPath.stats.served - before.served,
  declined: server.rpc.fastPath.stats.declined - before.declined,
});

async function codeAndMessage(call: Promise<unknown>): Promise<[Code, string] | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    const e = ConnectError.from(error);
    return [e.code, e.rawMessage];
  }
}

/** One raw HTTP/2 request; returns status, headers, body and trailers. */
function rawH2(
  url: string,
  headers: Record<string, string>,
  body: Uint8Array,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer; trailers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ...headers });
    const chunks: Buffer[] = [];
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (responseHeaders = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      session.close();
      resolve({ status: Number(responseHeaders[":status"]), headers: responseHeaders, body: Buffer.concat(chunks), trailers });
    });
    stream.on("error", reject);
    stream.end(body);
  });
}

describe("unary fast path", () => {
  it("serves every common unary encoding itself", async () => {
    for (const [name, client] of Object.entries(clientsFor(server.url))) {
      const project = `fast-${name.replace(/[^a-z0-9]/g, "-")}`;
      await client.recordCost({ projectId: project, costNanos: 5n, requestId: "a" });
      expect((await client.getProjectCost({ projectId: project })).projectCost?.totalCostNanos).toBe(5n);
    }
    expect(delta()).toEqual({ served: 8, declined: 0 });
  });

  it("honours deadlines and still answers within them", async () => {
    const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
    const result = await client.getProjectCost({ projectId: "deadline" }, { timeoutMs: 5_000 });
    expect(result.projectCost?.projectId).toBe("deadline");
    expect(delta().served).toBe(1);
  });

  it("leaves compressed requests and GET to Connect's router, with the same results", async () => {
    const gzip = createClient(
      BudgetService,
      createConnectTransport({ baseUrl: server.url, httpVersion: "2", sendCompression: compressionGzip, compressMinBytes: 0 }),
    );
    const grpcGzip = createClient(
      BudgetService,
      createGrpcTransport({ baseUrl: server.url, sendCompression: compressionGzip, compressMinBytes: 0 }),
    );
    const get = createClient(BudgetService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useHttpGet: true }));
    await gzip.recordCost({ projectId: "routed", costNanos: 2n, requestId: "a" });
    await grpcGzip.recordCost({ projectId: "routed", costNanos: 3n, requestId: "b" });
    expect((await get.getProjectCost({ projectId: "routed" })).projectCost).toMatchObject({ totalCostNanos: 5n, recordCount: 2n });
    expect(delta()).toEqual({ served: 0, declined: 2 }); // GET never reaches the fast path
  });

  it("gives the same error code and message on both paths", async () => {
    const cases: Array<(c: BudgetClient) => Promise<unknown>> = [
      (c) => c.recordCost({ projectId: "", costNanos: 1n }),
      (c) => c.recordCost({ projectId: "p", costNanos: -1n }),
      (c) => c.checkBudget({ projectId: "bad id" }),
      (c) => c.recordCost({ projectId: "p", model: "m".repeat(70_000) }),
    ];
    const fast = Object.values(clientsFor(server.url));
    const routed = [
      createClient(
        BudgetService,
        createConnectTransport({ baseUrl: server.url, httpVersion: "2", sendCompression: compressionGzip, compressMinBytes: 0 }),
      ),
      createClient(BudgetService, createGrpcTransport({ baseUrl: server.url, sendCompression: compressionGzip, compressMinBytes: 0 })),
      createClient(
        BudgetService,
        createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1", sendCompression: compressionGzip, compressMinBytes: 0 }),
      ),
    ];
    for (const call of cases) {
      const expected = await codeAndMessage(call(routed[0]!));
      expect(expected).not.toBe("ok");
      for (const client of [...fast, ...routed]) {
        const got = await codeAndMessage(call(client));
        expect(got === "ok" ? "ok" : got[0]).toBe((expected as [Code, string])[0]);
      }
    }
  });

  it("answers malformed gRPC envelopes with a clear error and keeps serving", async () => {
    const path = "/tally.budget.v1.BudgetService/GetProjectCost";
    const message = toBinary(GetProjectCostRequestSchema, create(GetProjectCostRequestSchema, { projectId: "raw" }));
    const frame = (flags: number, length: number, data: Uint8Array) => {
      const out = Buffer.alloc(5 + data.length);
      out[0] = flags;
      out.writeUInt32BE(length, 1);
      out.set(data, 5);
      return out;
    };
    const grpc = { ":path": path, "content-type": "application/grpc", te: "trailers" };
    const truncated = await rawH2(server.url, grpc, frame(0, message.length + 10, message));
    expect(truncated.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
    const compressedWithoutEncoding = await rawH2(server.url, grpc, frame(1, message.length, message));
    expect(compressedWithoutEncoding.trailers["grpc-status"]).toBe(String(Code.Internal));
    const garbage = await rawH2(server.url, grpc, frame(0, 4, Buffer.from([0xff, 0xff, 0xff, 0xff])));
    expect(garbage.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
    const ok = await rawH2(server.url, grpc, frame(0, message.length, message));
    expect(ok.trailers["grpc-status"]).toBe("0");
    expect(ok.headers["content-type"]).toBe("application/grpc+proto");
    // Connect unary with a broken JSON body.
    const json = await rawH2(server.url, { ":path": path, "content-type": "application/json" }, Buffer.from("{not json"));
    expect(json.status).toBe(400);
    expect(JSON.parse(json.body.toString())).toMatchObject({ code: "invalid_argument" });
  });

  it("percent-encodes grpc-message so every gRPC client can read it", async () => {
    const path = "/tally.budget.v1.BudgetService/RecordCost";
    const message = toBinary(RecordCostRequestSchema, create(RecordCostRequestSchema, { projectId: "p", costNanos: -1n }));
    const body = Buffer.alloc(5 + message.length);
    body.writeUInt32BE(message.length, 1);
    body.set(message, 5);
    const res = await rawH2(server.url, { ":path": path, "content-type": "application/grpc", te: "trailers" }, body);
    expect(res.trailers["grpc-status"]).toBe(String(Code.InvalidArgument));
    expect(res.trailers["grpc-message"]).toBe("cost_nanos must be >= 0, got -1");
  });
});

describe("unary fast path on raw HTTP/2 streams", () => {
  // The raw 'stream' entry skips guardRequests, so it keeps the same guards
  // itself: a short body-receive limit here so the test is quick.
  let init: InitializedStore;
  let h2: http2.Http2Server;
  let url = "";
  let fastPath: UnaryFastPath;
  let compat = 0;
  beforeAll(async () => {
    init = await initORM("sqlite::memory:");
    const ledger = new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 16, queueDepthMax: 64 }));
    fastPath = new UnaryFastPath({
      interceptors: [],
      readMaxBytes: 1024,
      guard: { headersCountMax: 16, headersBytesMax: 1024, bodyReceiveMs: 200 },
    });
    fastPath.routes(tallyRoutes(ledger))(createConnectRouter());
    h2 = http2.createServer();
    h2.on("stream", (stream, headers, _flags, rawHeaders) => {
      if (fastPath.handleStream(stream, headers, rawHeaders)) return;
      // Stands in for the compatibility path (and its guard).
      compat++;
      stream.respond({ ":status": 418 }, { endStream: true });
    });
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(h2.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => h2.close(resolve));
    await init.store.close();
  });

  const path = "/tally.budget.v1.BudgetService/RecordCost";
  const grpc = { "content-type": "application/grpc", te: "trailers" };
  const message = toBinary(
    RecordCostRequestSchema,
    create(RecordCostRequestSchema, { projectId: "raw-slow", costNanos: 5n, requestId: "raw-slow-1" }),
  );

  it("answers a call on the stream itself, headers, message and trailers", async () => {
    const res = await h2Request(url, { path, headers: grpc, body: frame(message) });
    expect({ status: res.status, contentType: res.headers["content-type"], grpcStatus: res.grpcStatus }).toEqual({
      status: 200,
      contentType: "application/grpc+proto",
      grpcStatus: 0,
    });
  });

  it("answers a body that stops arriving DEADLINE_EXCEEDED in every protocol, and nothing is written", async () => {
    const before = (
      await new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 1, queueDepthMax: 1 })).getProjectCost("raw-slow")
    ).recordCount;
    const res = await h2Request(url, { path, headers: grpc, body: frame(message).subarray(0, 8), keepOpen: true });
    expect(res.grpcStatus).toBe(Code.DeadlineExceeded);
    expect(res.grpcMessage).toMatch(/did not arrive within 200 ms/);
    const web = await h2Request(url, {
      path,
      headers: { "content-type": "application/grpc-web+proto" },
      body: frame(message).subarray(0, 8),
      keepOpen: true,
    });
    expect({ code: web.grpcStatus, message: web.grpcMessage }).toEqual({
      code: Code.DeadlineExceeded,
      message: "the request body did not arrive within 200 ms",
    });
    const connect = await h2Request(url, { path, headers: { "content-type": "application/json" }, body: '{"projectId":', keepOpen: true });
    expect({ status: connect.status, code: connect.connectCode }).toEqual({ status: 504, code: "deadline_exceeded" });
    const after = (
      await new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 1, queueDepthMax: 1 })).getProjectCost("raw-slow")
    ).recordCount;
    expect(after).toBe(before);
  });

  it("leaves a stream over the header limits to the compatibility path, whose guard refuses it", async () => {
    const many: Record<string, string> = { ...grpc };
    for (let i = 0; i < 20; i++) many[`x-extra-${i}`] = "v";
    const servedBefore = fastPath.stats.served;
    const compatBefore = compat;
    const res = await h2Request(url, { path, headers: many, body: frame(message) });
    expect(res.status).toBe(418);
    expect({ served: fastPath.stats.served - servedBefore, compat: compat - compatBefore }).toEqual({ served: 0, compat: 1 });
  });
});
