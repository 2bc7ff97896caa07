// A request Tally cannot read because of its content type (none at all, or one
// it does not serve) is 415 with a one-line reason in a text/plain body, over
// HTTP/1.1 and HTTP/2, on unary and streaming methods (issue 21, item 8).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer } from "../helpers.ts";
import { h1Request, h2Request } from "../raw-http.ts";

const svc = "/tally.budget.v1.BudgetService";
const body = '{"projectId":"demo","costNanos":"5","requestId":"r1"}';

describe("415 Unsupported Media Type says why", () => {
  let server: TallyServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  for (const [transport, send] of [
    ["HTTP/1.1", h1Request],
    ["HTTP/2", h2Request],
  ] as const) {
    it(`${transport}: no content-type on a unary method`, async () => {
      const res = await send(server.url, { path: `${svc}/RecordCost`, body });
      expect(res.status).toBe(415);
      expect(res.headers["content-type"]).toBe("text/plain; charset=utf-8");
      const text = res.body.toString();
      expect(text).toBe(
        "the request has no content-type header for /tally.budget.v1.BudgetService/RecordCost: send application/json or application/proto (Connect), application/grpc (gRPC), application/grpc-web (gRPC-Web)\n",
      );
      expect(res.headers["content-length"]).toBe(String(Buffer.byteLength(text)));
    });

    it(`${transport}: a content-type Tally does not serve, on unary and streaming methods`, async () => {
      const plain = await send(server.url, {
        path: `${svc}/GetProjectCost`,
        headers: { "content-type": "text/plain" },
        body: '{"projectId":"demo"}',
      });
      expect(plain.status).toBe(415);
      expect(plain.body.toString()).toMatch(
        /^content-type "text\/plain" is not served for \/tally\.budget\.v1\.BudgetService\/GetProjectCost: send application\/json or application\/proto \(Connect\), [^\n]+\n$/,
      );
      const stream = await send(server.url, {
        path: `${svc}/WatchBudget`,
        headers: { "content-type": "application/json" },
        body: '{"projectId":"demo"}',
      });
      expect(stream.status).toBe(415);
      expect(stream.body.toString()).toMatch(
        /^content-type "application\/json" is not served for \/tally\.budget\.v1\.BudgetService\/WatchBudget: send application\/connect\+json or application\/connect\+proto \(Connect streaming\), application\/grpc \(gRPC\), application\/grpc-web \(gRPC-Web\)\n$/,
      );
    });
  }

  it("a served content type is answered as before (the rewrite touches 415 only)", async () => {
    const res = await h1Request(server.url, { path: `${svc}/RecordCost`, headers: { "content-type": "application/json" }, body });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString()).projectCost.totalCostNanos).toBe("5");
  });
});
