// README.md's code snippets, run as written, in order, against a fresh Tally:
// curl, buf curl and grpcurl, the Python, Go (connect-go and grpc-go) and
// TypeScript clients. A newcomer pastes them one after the other; they must
// all work, and together leave exactly the totals they claim.
//
// Every sh/python/go/ts block of the README carries a marker comment right
// above it saying how it runs (README.md's own convention, see readme.ts):
//   <!-- snippet: shell [dir=D] -->               bash, in a fresh directory D (default: the repository)
//   <!-- snippet: file=F dir=D run="CMD" -->      saved as D/F, then CMD runs in D
//   <!-- snippet: skip (why) -->                  not run here, and why
// A block without a marker fails the test, so no new snippet goes untested.
// The only edits: the server's address (127.0.0.1:8080 -> the test server's)
// and /path/to/tally (-> this checkout). Python runs the client from
// gen/python/src (PYTHONPATH) in .tools/venv; installing it with pip is
// test/clients/python.test.ts.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { root, runTool, type RunResult } from "../clients/tools.ts";
import { clientsFor, startTestServer, usd, writeKeysFile } from "../helpers.ts";
import { readmeSnippets, type Snippet } from "./readme.ts";

const snippets = readmeSnippets(join(root, "README.md"));
type Runnable = Snippet & ({ kind: "shell" } | { kind: "file"; file: string; run: string });
const runnable = snippets.filter((s): s is Runnable => s.kind === "shell" || s.kind === "file");
const programs = snippets.filter((s): s is Snippet & { kind: "file"; run: string } => s.kind === "file");

/** The environment every snippet runs in: the venv's python first on PATH, the
 * Python client importable, npm served from its cache when it can. */
const env = {
  PATH: `${root}.tools/venv/bin:${process.env.PATH ?? ""}`,
  PYTHONPATH: join(root, "gen/python/src"),
  PYTHONDONTWRITEBYTECODE: "1",
  npm_config_prefer_offline: "true",
  npm_config_audit: "false",
  npm_config_fund: "false",
  npm_config_update_notifier: "false",
  TALLY_API_KEY: "",
};

function substitute(text: string, server: TallyServer): string {
  return text.replaceAll("127.0.0.1:8080", new URL(server.url).host).replaceAll("/path/to/tally", root.replace(/\/$/, ""));
}

/** Saves every file block of `dir` (with this server's address). */
function writeFiles(work: string, dir: string, server: TallyServer): string {
  const path = join(work, dir);
  mkdirSync(path, { recursive: true });
  for (const s of programs.filter((p) => p.dir === dir)) writeFileSync(join(path, s.file), substitute(s.text, server));
  return path;
}

function run(command: string, cwd: string, extraEnv: Record<string, string> = {}): Promise<RunResult> {
  return runTool("bash", ["-e", "-o", "pipefail", "-c", command], { cwd, env: { ...env, ...extraEnv }, timeoutMs: 280_000 });
}

/** A Connect JSON error body (curl -s exits 0 on HTTP errors) or a grpcurl error. */
const failureInOutput = /"code":"[a-z_]+"|^ERROR:|Code: [A-Z]/m;

describe("README.md snippets", () => {
  it("marks every sh/python/go/ts block with how it runs (no snippet goes untested by accident)", () => {
    expect(snippets.length).toBeGreaterThan(10);
    for (const s of snippets) expect(s.kind, `README.md line ${s.line}: add a <!-- snippet: ... --> marker`).toMatch(/^(shell|file|skip)$/);
    expect(runnable.map((s) => s.language)).toEqual(expect.arrayContaining(["sh", "python", "go", "ts"]));
  });

  describe("in order against a fresh server", () => {
    let server: TallyServer;
    let work: string;
    beforeAll(async () => {
      server = await startTestServer();
      work = mkdtempSync(join(tmpdir(), "tally-readme-"));
    });
    afterAll(async () => {
      await server?.close();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it("runs every snippet, each succeeding, and the totals are what they recorded", { timeout: 900_000 }, async () => {
      for (const s of runnable) {
        const cwd = s.dir === "" ? root : existsSync(join(work, s.dir)) ? join(work, s.dir) : writeFiles(work, s.dir, server);
        const result = s.kind === "shell" ? await run(substitute(s.text, server), cwd) : await run(s.run, cwd);
        const where = `README.md line ${s.line} (${s.kind} ${s.language}${s.dir ? ` in ${s.dir}` : ""})\n${result.output}`;
        expect(result.code, where).toBe(0);
        expect(result.stdout, where).not.toMatch(failureInOutput);
        if (s.kind === "file") expect(result.output, where).toMatch(/invalid|refused|demo spent/i);
      }
      // curl call-0001 (1.50), Python, Go and TypeScript (1_234_567 each), the hold settled by call-0002 (1.70).
      const client = clientsFor(server.url)["connect+json http/1.1"]!;
      const { projectCost } = await client.getProjectCost({ projectId: "demo" });
      expect(projectCost?.recordCount).toBe(5n);
      expect(projectCost?.totalCostNanos).toBe(usd(1.5) + 3n * 1_234_567n + usd(1.7));
      expect(projectCost?.reservedNanos).toBe(0n);
    });
  });

  describe("the client snippets against a server with API keys", () => {
    const projectKey = generateApiKey();
    let server: TallyServer;
    let work: string;
    beforeAll(async () => {
      server = await startTestServer({
        keysFile: writeKeysFile([{ id: "demo-agent", role: "project", key: projectKey, projects: ["demo"] }]),
      });
      work = mkdtempSync(join(tmpdir(), "tally-readme-keyed-"));
    });
    afterAll(async () => {
      await server?.close();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it("each client sends TALLY_API_KEY; without it the call is UNAUTHENTICATED", { timeout: 900_000 }, async () => {
      // Set up each program's directory as the README says (shell blocks with a dir), then run it twice.
      for (const s of runnable.filter((r) => r.dir !== "")) {
        const cwd = existsSync(join(work, s.dir)) ? join(work, s.dir) : writeFiles(work, s.dir, server);
        if (s.kind === "shell") {
          const setup = await run(substitute(s.text, server), cwd);
          expect(setup.code, `README.md line ${s.line}\n${setup.output}`).toBe(0);
          continue;
        }
        const withKey = await run(s.run, cwd, { TALLY_API_KEY: projectKey });
        expect(withKey.code, `README.md line ${s.line} with the key\n${withKey.output}`).toBe(0);
        const withoutKey = await run(s.run, cwd);
        expect(withoutKey.code, `README.md line ${s.line} without a key\n${withoutKey.output}`).not.toBe(0);
        expect(withoutKey.output, `README.md line ${s.line} without a key`).toMatch(/unauthenticated/i);
      }
      const reader = clientsFor(server.url, projectKey)["connect+json http/1.1"]!;
      const { projectCost } = await reader.getProjectCost({ projectId: "demo" });
      // Python, Go (connect-go) and TypeScript recorded with the key; grpc-go only reads.
      expect(projectCost?.recordCount).toBe(3n);
    });
  });
});
