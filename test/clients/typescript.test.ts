// The generated TypeScript client as an npm package (gen/ts/package.json),
// proven the way an agent uses it: `npm pack`, install the tarball into an
// empty project next to @connectrpc/connect (from the npm cache when it has
// them), type-check test/clients/typescript/smoke.mjs against the package's
// declarations, and run it with node against a real Tally on an ephemeral port.
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TallyServer } from "../../src/server.ts";
import { startTestServer } from "../helpers.ts";
import { root, runTool, tools } from "./tools.ts";

describe("generated TypeScript client as an npm package (gen/ts)", () => {
  let server: TallyServer;
  let project: string;
  beforeAll(async () => {
    server = await startTestServer();
    project = mkdtempSync(join(tmpdir(), "tally-ts-agent-"));
  });
  afterAll(async () => {
    await server?.close();
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it("packs, installs into an empty project, type-checks and passes the smoke test: budget, check, record, retry, read, INVALID_ARGUMENT", {
    timeout: 180_000,
  }, async () => {
    const pack = await runTool("npm", ["pack", "--silent", "--pack-destination", project, "./gen/ts"]);
    expect(pack.code, pack.output).toBe(0);
    const tarball = readdirSync(project).find((f) => f.endsWith(".tgz"));
    expect(tarball, pack.output).toBeDefined();

    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "agent", private: true, type: "module" }));
    // The same versions Tally itself uses, so the npm cache (filled by npm ci) serves them.
    const install = await runTool(
      "npm",
      [
        "install",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        `./${tarball}`,
        "@connectrpc/connect@2.3.0",
        "@connectrpc/connect-node@2.3.0",
        "@types/node@24.19.4",
      ],
      { cwd: project, timeoutMs: 170_000 },
    );
    expect(install.code, install.output).toBe(0);

    copyFileSync(join(root, "test/clients/typescript/smoke.mjs"), join(project, "smoke.mjs"));
    const typecheck = await runTool(
      tools.tsc,
      ["--noEmit", "--allowJs", "--checkJs", "--strict", "--module", "nodenext", "--target", "es2024", "--types", "node", "smoke.mjs"],
      { cwd: project },
    );
    expect(typecheck.code, typecheck.output).toBe(0);

    const smoke = await runTool(process.execPath, ["smoke.mjs"], { cwd: project, env: { TALLY_URL: server.url } });
    expect(smoke.code, smoke.output).toBe(0);
    expect(smoke.stdout).toContain("ok connect http/1.1");
    expect(smoke.stdout).toContain("ok grpc h2c");
  });
});
