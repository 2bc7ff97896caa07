// The unary fast path against the real server: which calls it takes, which it
// leaves to Connect's router, and that both give the same answers and codes.
import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { BudgetService, GetProjectCostRequestSchema, RecordCostRequestSchema } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { TallyServer } from "../../src/server.ts";
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
const delta = () => ({ served: server.rpc.fastPath.stats.served - before.served, declined: server.rpc.fastPath.stats.declined - before.declined });

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
function rawH2(url: string, headers: Record<string, string>, body: Uint8Array): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer; trailers: http2.IncomingHttpHeaders }> {
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
    const gzip = createClient(BudgetService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", sendCompression: compressionGzip, compressMinBytes: 0 }));
    const grpcGzip = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url, sendCompression: compressionGzip, compressMinBytes: 0 }));
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
      createClient(BudgetService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", sendCompression: compressionGzip, compressMinBytes: 0 })),
      createClient(BudgetService, createGrpcTransport({ baseUrl: server.url, sendCompression: compressionGzip, compressMinBytes: 0 })),
      createClient(BudgetService, createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1", sendCompression: compressionGzip, compressMinBytes: 0 })),
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
