// /metrics and the dashboard once API keys are configured: /metrics needs an
// admin key (over HTTP/1.1 and HTTP/2), the page's files stay public (they hold
// no data) while the API calls the page makes need a key. Without keys (loopback
// only) everything stays open: test/api/metrics.test.ts scrapes without a key.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { generateApiKey } from "../../src/auth/keys.ts";
import { defaultConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import { startServer, type TallyServer } from "../../src/server.ts";
import { clientsFor, writeKeysFile, type BudgetClient } from "../helpers.ts";

/** GET over HTTP/2 (prior knowledge), as Prometheus may scrape. */
function h2Get(url: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({ ":path": path, ...headers });
    let status = 0;
    let body = "";
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
    stream.on("end", () => {
      session.close();
      resolve({ status, body });
    });
    stream.on("error", reject);
  });
}

describe("operator paths with API keys", () => {
  const adminKey = generateApiKey();
  const projectKey = generateApiKey();
  let server: TallyServer;
  const logLines: string[] = [];

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-operator-auth-"));
    mkdirSync(join(dir, "assets"));
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>t</title>");
    writeFileSync(join(dir, "assets", "index-abc.js"), "console.log(1)");
    const keysFile = writeKeysFile([
      { id: "ops", role: "admin", key: adminKey },
      { id: "team-a", role: "project", key: projectKey, projectPrefixes: ["team-a/"] },
    ]);
    const logStream = new PassThrough();
    logStream.on("data", (chunk: Buffer) =>
      logLines.push(
        ...chunk
          .toString()
          .split("\n")
          .filter((l) => l !== ""),
      ),
    );
    server = await startServer(
      { ...defaultConfig, port: 0, databaseUrl: "sqlite::memory:", logLevel: "info", keysFile, dashboardDir: dir },
      createLogger("info", logStream),
    );
    await (clientsFor(server.url, adminKey)["grpc h2c"] as BudgetClient).recordCost({
      projectId: "team-a/secret-spend",
      costNanos: 42n,
      requestId: "a",
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it("/metrics without a key, or with a bad one, is 401 with a Bearer challenge and no data", async () => {
    for (const authorization of [
      undefined,
      "Bearer tally_not-a-key-at-all-000000000000000000000",
      "Basic b3BzOnB3",
      `Bearer ${adminKey.slice(0, -1)}`,
    ]) {
      const res = await fetch(`${server.url}/metrics`, { headers: authorization === undefined ? {} : { authorization } });
      expect(res.status, String(authorization)).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="tally"');
      const body = await res.text();
      expect(body).toMatch(/admin API key/);
      expect(body).not.toMatch(/tally_|secret-spend/);
    }
    expect((await fetch(`${server.url}/metrics`, { method: "HEAD" })).status).toBe(401);
  });

  it("/metrics with a project key is 403: it shows every project's spend", async () => {
    const res = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${projectKey}` } });
    expect(res.status).toBe(403);
    expect(await res.text()).toMatch(/needs an admin key; key "team-a" is a project key/);
  });

  it("/metrics with an admin key is served, over HTTP/1.1 and HTTP/2", async () => {
    const res = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${adminKey}` } });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('tally_project_spent_nanos{project="team-a/secret-spend",currency="USD"} 42');
    const h2 = await h2Get(server.url, "/metrics", { authorization: `Bearer ${adminKey}` });
    expect(h2.status).toBe(200);
    expect(h2.body).toContain("tally_rpc_handled_total");
    expect((await h2Get(server.url, "/metrics")).status).toBe(401);
  });

  it("logs refused scrapes with the key id, never the key", async () => {
    await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${projectKey}` } });
    const denied = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.event === "metrics.denied");
    expect(denied).toContainEqual(expect.objectContaining({ procedure: "GET /metrics", code: "permission_denied", keyId: "team-a" }));
    expect(denied).toContainEqual(expect.objectContaining({ procedure: "GET /metrics", code: "unauthenticated" }));
    const all = logLines.join("\n");
    expect(all).not.toContain(adminKey);
    expect(all).not.toContain(projectKey);
  });

  it("the dashboard's files stay public, the data behind them needs a key", async () => {
    const page = await fetch(`${server.url}/`);
    expect(page.status).toBe(200);
    expect((await fetch(`${server.url}/assets/index-abc.js`)).status).toBe(200);
    // What the page calls first: ListProjects, over Connect JSON as connect-web sends it.
    const anonymous = clientsFor(server.url)["connect+json http/1.1"] as BudgetClient;
    const refused = await anonymous.listProjects({}).then(
      () => null,
      (e: unknown) => ConnectError.from(e),
    );
    expect(refused?.code).toBe(Code.Unauthenticated);
    const scoped = clientsFor(server.url, projectKey)["connect+json http/1.1"] as BudgetClient;
    expect(
      await scoped.listProjects({}).then(
        () => null,
        (e: unknown) => ConnectError.from(e).code,
      ),
    ).toBe(Code.PermissionDenied);
    const admin = clientsFor(server.url, adminKey)["connect+json http/1.1"] as BudgetClient;
    expect((await admin.listProjects({})).projects.map((p) => p.projectId)).toEqual(["team-a/secret-spend"]);
  });
});
