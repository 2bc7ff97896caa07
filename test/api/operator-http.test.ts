// The dashboard's static serving: only the files of the build, with the right
// types and caching, nothing else from the disk; a clear 503 when not built.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadDashboard } from "../../src/operator/operator-http.ts";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer } from "../helpers.ts";

/** A raw HTTP/1.1 request, so the path reaches the server exactly as written
 * (fetch would normalise "/../"). */
function rawGet(url: string, path: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () =>
      socket.end(`GET ${path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`),
    );
    let text = "";
    socket.on("data", (chunk) => (text += chunk.toString()));
    socket.on("end", () => resolve(text));
    socket.on("error", reject);
  });
}

describe("dashboard serving", () => {
  let built: TallyServer;
  let unbuilt: TallyServer;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-static-"));
    mkdirSync(join(dir, "assets"));
    writeFileSync(join(dir, "index.html"), "<!doctype html><title>t</title>");
    writeFileSync(join(dir, "assets", "index-abc.js"), "console.log(1)");
    writeFileSync(join(dir, "assets", "index-abc.css"), "body{}");
    built = await startTestServer({ dashboardDir: dir });
    unbuilt = await startTestServer({ dashboardDir: join(dir, "missing") });
  });
  afterAll(async () => {
    await built.close();
    await unbuilt.close();
  });

  it("serves the page at / and /index.html, revalidated, under a strict CSP", async () => {
    for (const path of ["/", "/index.html"]) {
      const res = await fetch(built.url + path);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(res.headers.get("cache-control")).toBe("no-cache");
      expect(res.headers.get("content-security-policy")).toMatch(/default-src 'self'; connect-src 'self'/);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(await res.text()).toBe("<!doctype html><title>t</title>");
    }
  });

  it("serves hashed assets as immutable, with their types", async () => {
    const js = await fetch(`${built.url}/assets/index-abc.js`);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(await js.text()).toBe("console.log(1)");
    expect((await fetch(`${built.url}/assets/index-abc.css`)).headers.get("content-type")).toBe("text/css; charset=utf-8");
    const head = await fetch(`${built.url}/assets/index-abc.js`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("14");
  });

  it("serves nothing outside the build: other paths and traversal are 404", async () => {
    expect((await fetch(`${built.url}/assets/missing.js`)).status).toBe(404);
    expect(await rawGet(built.url, "/../package.json")).toMatch(/^HTTP\/1\.1 404/);
    expect(await rawGet(built.url, "/assets/../../package.json")).toMatch(/^HTTP\/1\.1 404/);
    expect(await rawGet(built.url, "/%2e%2e/package.json")).toMatch(/^HTTP\/1\.1 404/);
    expect((await fetch(`${built.url}/`, { method: "DELETE" })).status).toBe(405);
  });

  it("answers 503 with how to build it when the dashboard is not built", async () => {
    const res = await fetch(`${unbuilt.url}/`);
    expect(res.status).toBe(503);
    expect(await res.text()).toMatch(/npm run build/);
    expect((await fetch(`${unbuilt.url}/assets/x.js`)).status).toBe(404);
  });

  it("refuses a build directory far larger than a dashboard", () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-static-big-"));
    writeFileSync(join(dir, "index.html"), "x");
    for (let i = 0; i < 101; i++) writeFileSync(join(dir, `f${i}.js`), "x");
    expect(() => loadDashboard(dir)).toThrow(/more than 100 files/);
  });
});
