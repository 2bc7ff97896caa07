// Open mode (no keys, loopback only) answers only requests addressed to a
// loopback name from loopback pages (issue 15, item 6): DNS rebinding and
// cross-origin pages are refused with PERMISSION_DENIED and a message.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer, writeKeysFile } from "../helpers.ts";
import { frame, h1Request, h2Request } from "../raw-http.ts";

const getCost = "/tally.budget.v1.BudgetService/GetProjectCost";
const json = (headers: Record<string, string>) => ({
  path: getCost,
  headers: { "content-type": "application/json", ...headers },
  body: '{"projectId":"p"}',
});
const grpc = (headers: Record<string, string>) => ({
  path: getCost,
  headers: { "content-type": "application/grpc", te: "trailers", ...headers },
  body: frame(new Uint8Array([10, 1, 112])),
});

describe("open mode: Host and Origin", () => {
  let open: TallyServer;
  let keyed: TallyServer;
  const adminKey = generateApiKey();
  beforeAll(async () => {
    open = await startTestServer();
    keyed = await startTestServer({ keysFile: writeKeysFile([{ id: "admin", role: "admin", key: adminKey }]) });
  });
  afterAll(async () => {
    await open.close();
    await keyed.close();
  });

  it("answers requests addressed to localhost, 127.0.0.1 or [::1], with or without a port", async () => {
    for (const host of [
      "localhost",
      `localhost:${open.port}`,
      "127.0.0.1",
      `127.0.0.1:${open.port}`,
      "[::1]",
      `[::1]:${open.port}`,
      "LOCALHOST",
    ]) {
      const h1 = await h1Request(open.url, json({ host }));
      expect({ host, status: h1.status }).toEqual({ host, status: 200 });
      const h2 = await h2Request(open.url, grpc({ ":authority": host }));
      expect({ host, grpcStatus: h2.grpcStatus }).toEqual({ host, grpcStatus: 0 });
    }
  });

  it("refuses any other Host (DNS rebinding) with PERMISSION_DENIED and says why, on every protocol and on /metrics", async () => {
    for (const host of ["evil.example", `evil.example:${open.port}`, "127.0.0.1.nip.io", "localhost.evil.example"]) {
      const h1 = await h1Request(open.url, json({ host }));
      expect(h1.status).toBe(403);
      expect(h1.connectCode).toBe("permission_denied");
      expect(h1.connectMessage).toContain(
        `answers only requests addressed to localhost, 127.0.0.1 or [::1]; the request was addressed to "${host}"`,
      );
      const h2 = await h2Request(open.url, grpc({ ":authority": host }));
      expect(h2.grpcStatus).toBe(7);
      expect(h2.grpcMessage).toContain(`the request was addressed to "${host}"`);
    }
    const metrics = await h1Request(open.url, { method: "GET", path: "/metrics", headers: { host: "evil.example" } });
    expect(metrics.status).toBe(403);
    expect(metrics.body.toString()).not.toContain("tally_rpc_in_flight");
    const metricsH2 = await h2Request(open.url, { method: "GET", path: "/metrics", headers: { ":authority": "evil.example" } });
    expect(metricsH2.status).toBe(403);
  });

  it("refuses browser requests from pages that are not loopback, and serves loopback pages", async () => {
    for (const origin of ["https://evil.example", "null", "http://localhost.evil.example", "file://"]) {
      const h1 = await h1Request(open.url, json({ origin }));
      expect({ origin, code: h1.connectCode }).toEqual({ origin, code: "permission_denied" });
      expect(h1.connectMessage).toContain(`answers browser requests only from loopback pages`);
      const h2 = await h2Request(open.url, grpc({ origin }));
      expect({ origin, grpcStatus: h2.grpcStatus }).toEqual({ origin, grpcStatus: 7 });
    }
    for (const origin of ["http://localhost:5173", "http://127.0.0.1:8080", "http://[::1]:3000"]) {
      const h1 = await h1Request(open.url, json({ origin }));
      expect({ origin, status: h1.status }).toEqual({ origin, status: 200 });
    }
  });

  it("leaves servers with keys alone: the key is what protects them", async () => {
    const h1 = await h1Request(
      keyed.url,
      json({ host: "tally.internal.example", origin: "https://dashboard.example", authorization: `Bearer ${adminKey}` }),
    );
    expect(h1.status).toBe(200);
    const h2 = await h2Request(keyed.url, grpc({ ":authority": "tally.internal.example", authorization: `Bearer ${adminKey}` }));
    expect(h2.grpcStatus).toBe(0);
  });
});
