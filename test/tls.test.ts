// Optional TLS: one HTTPS port where ALPN picks h2 or http/1.1, serving every
// protocol; certificates are generated here at runtime (no private key is
// committed) and rotated with reload().
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey } from "../src/auth/keys.ts";
import type { TallyServer } from "../src/server.ts";
import { bearer, selfSignedCert, startTestServer, writeKeysFile } from "./helpers.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

function alpn(port: number, protocols: string[], ca: Buffer): Promise<{ protocol: string | false | null; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ALPNProtocols: protocols, ca }, () => {
      resolve({ protocol: socket.alpnProtocol ?? null, fingerprint: socket.getPeerCertificate().fingerprint256 });
      socket.end();
    });
    socket.on("error", reject);
  });
}

describe("TLS", () => {
  const dir = mkdtempSync(join(tmpdir(), "tally-tls-"));
  const adminKey = generateApiKey();
  let first: ReturnType<typeof selfSignedCert>;
  let server: TallyServer;
  beforeAll(async () => {
    first = selfSignedCert(dir, "tally-test");
    server = await startTestServer({
      tlsCertFile: first.certFile,
      tlsKeyFile: first.keyFile,
      keysFile: writeKeysFile([{ id: "admin", role: "admin", key: adminKey }]),
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it("serves https and negotiates h2 or http/1.1 by ALPN on the same port", async () => {
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect((await alpn(server.port, ["h2", "http/1.1"], first.cert)).protocol).toBe("h2");
    expect((await alpn(server.port, ["http/1.1"], first.cert)).protocol).toBe("http/1.1");
  });

  it("serves Connect (h2), gRPC (h2) and gRPC-Web (http/1.1) over TLS", async () => {
    const interceptors = [bearer(adminKey)];
    const nodeOptions = { ca: first.cert };
    const clients = {
      connect: createClient(BudgetService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", interceptors, nodeOptions })),
      grpc: createClient(BudgetService, createGrpcTransport({ baseUrl: server.url, interceptors, nodeOptions })),
      grpcWeb: createClient(BudgetService, createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors, nodeOptions })),
      connectJsonHttp1: createClient(
        BudgetService,
        createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: false, interceptors, nodeOptions }),
      ),
    };
    let expected = 0n;
    for (const [name, client] of Object.entries(clients)) {
      expected += 10n;
      const res = await client.recordCost({ projectId: "tls", costNanos: 10n, requestId: name });
      expect(res.projectCost?.totalCostNanos, name).toBe(expected);
    }
  });

  it("serves @grpc/grpc-js with TLS credentials", async () => {
    const definition = protoLoader.loadSync("tally/budget/v1/budget.proto", {
      includeDirs: [`${root}/proto`],
      keepCase: true,
      longs: String,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as any;
    const client = new pkg.tally.budget.v1.BudgetService(
      `127.0.0.1:${server.port}`,
      grpc.credentials.createSsl(first.cert),
    ) as grpc.Client & Record<string, Function>;
    try {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${adminKey}`);
      const res = await new Promise<any>((resolve, reject) =>
        client.GetProjectCost!({ project_id: "tls" }, metadata, (err: unknown, r: unknown) => (err ? reject(err) : resolve(r))),
      );
      expect(res.project_cost.total_cost_nanos).toBe("40");
    } finally {
      client.close();
    }
  });

  it("does not speak cleartext on the TLS port", async () => {
    const res = await fetch(`http://127.0.0.1:${server.port}/tally.budget.v1.BudgetService/GetProjectCost`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    }).catch((e: unknown) => e);
    expect(res).toBeInstanceOf(Error);
  });

  it("rotates the certificate on reload() without a restart", async () => {
    const second = selfSignedCert(dir, "tally-rotated");
    // Same paths: the new files replace the old ones, as a renewal would.
    execFileSync("cp", [second.certFile, first.certFile]);
    execFileSync("cp", [second.keyFile, first.keyFile]);
    const before = await alpn(server.port, ["h2"], first.cert);
    expect(server.reload()).toBe(true);
    const after = await alpn(server.port, ["h2"], second.cert);
    expect(after.fingerprint).not.toBe(before.fingerprint);
    const x509 = new (await import("node:crypto")).X509Certificate(second.cert);
    expect(after.fingerprint).toBe(x509.fingerprint256);
  });
});
