// The generated Go client (gen/go, a module of its own), proven the way an
// agent uses it: `go test` in test/clients/go (a separate module that requires
// gen/go through a replace directive) against a real Tally on an ephemeral
// port, then the example agent loop (examples/go).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer, writeKeysFile } from "../helpers.ts";
import { root, runTool, selfSignedCert } from "./tools.ts";

describe("generated Go client (gen/go)", () => {
  let server: TallyServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it("passes go vet and the go test smoke test against a running Tally, over Connect and gRPC (connect-go and grpc-go stubs): budget, check, record, retry, read, watch, INVALID_ARGUMENT", {
    timeout: 300_000,
  }, async () => {
    const cwd = `${root}test/clients/go`;
    const vet = await runTool("go", ["vet", "./..."], { cwd, timeoutMs: 290_000 });
    expect(vet.code, vet.output).toBe(0);
    const test = await runTool("go", ["test", "-count=1", "-v", "./..."], { cwd, env: { TALLY_URL: server.url }, timeoutMs: 290_000 });
    expect(test.code, test.output).toBe(0);
    expect(test.stdout).toContain("--- PASS: TestBudgetCheckRecordRetryRead/grpc");
    expect(test.stdout).toContain("--- PASS: TestInvalidArgumentIsAConnectError/connect");
    // The grpc-go stubs (protoc-gen-go-grpc) against the same server.
    expect(test.stdout).toContain("--- PASS: TestGrpcGoStubs");
    expect(test.stdout).toMatch(/^ok\s+tally\.local\/clienttest/m);
  });

  it("runs the example agent loop (examples/go) until the budget refuses", { timeout: 300_000 }, async () => {
    const example = await runTool("go", ["run", "."], { cwd: `${root}examples/go`, env: { TALLY_URL: server.url }, timeoutMs: 290_000 });
    expect(example.code, example.output).toBe(0);
    expect(example.stdout).toMatch(/budget refused step \d+/);
    expect(example.stdout).toMatch(/recorded \d+ calls/);
  });
});

describe("the Go example against a Tally with TLS and API keys", () => {
  const adminKey = generateApiKey();
  let server: TallyServer;
  let dir: string;
  let certFile: string;
  beforeAll(async () => {
    dir = mkdtempSync(`${tmpdir()}/tally-go-tls-`);
    const cert = selfSignedCert(dir);
    certFile = cert.certFile;
    server = await startTestServer({
      tlsCertFile: cert.certFile,
      tlsKeyFile: cert.keyFile,
      keysFile: writeKeysFile([{ id: "ops", role: "admin", key: adminKey }]),
    });
  });
  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("sends TALLY_API_KEY over https:// and runs until the budget refuses; without the key it stops at UNAUTHENTICATED", {
    timeout: 300_000,
  }, async () => {
    expect(server.url).toMatch(/^https:\/\//);
    // SSL_CERT_FILE: Go trusts the throwaway certificate as it would a real CA's.
    const env = { TALLY_URL: server.url, SSL_CERT_FILE: certFile };
    const keyed = await runTool("go", ["run", "."], {
      cwd: `${root}examples/go`,
      env: { ...env, TALLY_API_KEY: adminKey },
      timeoutMs: 290_000,
    });
    expect(keyed.code, keyed.output).toBe(0);
    expect(keyed.stdout).toMatch(/budget refused step \d+/);
    const unkeyed = await runTool("go", ["run", "."], {
      cwd: `${root}examples/go`,
      env: { ...env, TALLY_API_KEY: "" },
      timeoutMs: 290_000,
    });
    expect(unkeyed.code, unkeyed.output).not.toBe(0);
    expect(unkeyed.stderr).toMatch(/SetProjectBudget: unauthenticated: .*needs an API key/);
  });
});
