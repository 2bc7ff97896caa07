// @tally/guard (clients/ts), proven the way an agent uses it: its committed
// dist/ is what its sources compile to, `npm pack` of it and of @tally/client
// installed into an empty project, the scenario runner type-checked against the
// package's declarations and run with plain node through the shared scenario
// list (test/clients/guard/scenarios.json) against a `tally serve` child
// process that the scenarios kill and restart; then the ledger is checked.
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readmeSnippets } from "../readme/readme.ts";
import { ledgerProblems, runnerEnv, spec, startRun, type Run } from "./guard/harness.ts";
import { root, runTool, tools } from "./tools.ts";

describe("@tally/guard (clients/ts)", () => {
  let project: string;
  beforeAll(() => {
    project = mkdtempSync(join(tmpdir(), "tally-guard-ts-"));
  });
  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it("dist/ is exactly what `npm run build:guard` writes from src/", { timeout: 120_000 }, async () => {
    const out = mkdtempSync(join(tmpdir(), "tally-guard-dist-"));
    try {
      const build = await runTool(tools.tsc, ["-p", "clients/ts", "--outDir", out]);
      expect(build.code, build.output).toBe(0);
      const built = readdirSync(out).sort();
      expect(readdirSync(join(root, "clients/ts/dist")).sort()).toEqual(built);
      for (const file of built)
        expect(readFileSync(join(root, "clients/ts/dist", file), "utf8"), `clients/ts/dist/${file} is stale: npm run build:guard`).toBe(
          readFileSync(join(out, file), "utf8"),
        );
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("packs, installs beside @tally/client into an empty project and type-checks the runner against its declarations", {
    timeout: 240_000,
  }, async () => {
    for (const dir of ["./gen/ts", "./clients/ts"]) {
      const pack = await runTool("npm", ["pack", "--silent", "--pack-destination", project, dir]);
      expect(pack.code, pack.output).toBe(0);
    }
    const tarballs = readdirSync(project)
      .filter((f) => f.endsWith(".tgz"))
      .map((f) => `./${f}`);
    expect(tarballs).toHaveLength(2);
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "agent", private: true, type: "module" }));
    const install = await runTool(
      "npm",
      [
        "install",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        ...tarballs,
        "@bufbuild/protobuf@2.17.0",
        "@connectrpc/connect@2.3.0",
        "@connectrpc/connect-node@2.3.0",
        "@types/node@24.19.4",
      ],
      { cwd: project, timeoutMs: 230_000 },
    );
    expect(install.code, install.output).toBe(0);
    copyFileSync(join(root, "test/clients/guard/typescript/run-scenarios.ts"), join(project, "run-scenarios.ts"));
    const typecheck = await runTool(
      tools.tsc,
      [
        "--noEmit",
        "--strict",
        "--module",
        "nodenext",
        "--target",
        "es2024",
        "--lib",
        "es2024,esnext.disposable,dom",
        "--types",
        "node",
        "--allowImportingTsExtensions",
        "run-scenarios.ts",
      ],
      { cwd: project },
    );
    expect(typecheck.code, typecheck.output).toBe(0);
  });

  it("runs README.md's TypeScript guard example as written: the call settles its hold", { timeout: 180_000 }, async () => {
    const snippet = readmeSnippets(join(root, "README.md")).find((s) => s.language === "ts" && s.text.includes("@tally/guard"));
    expect(snippet, "README.md has a TypeScript block using @tally/guard").toBeDefined();
    // examples/ holds the same block, as a file to copy.
    expect(readFileSync(join(root, "examples/guard-ts/guard-call.ts"), "utf8")).toContain(snippet!.text);
    const run = await startRun("ts-readme");
    try {
      writeFileSync(join(project, "readme-example.ts"), snippet!.text.replaceAll("127.0.0.1:8080", new URL(run.tally.url).host));
      const result = await runTool(process.execPath, ["readme-example.ts"], { cwd: project, env: { TALLY_API_KEY: run.tally.adminKey } });
      expect(result.code, result.output).toBe(0);
      expect(result.stdout.trim()).toBe("settled 1234567");
    } finally {
      await run.close();
    }
  });

  describe("the shared scenarios", () => {
    let run: Run;
    beforeAll(async () => {
      run = await startRun("ts");
    }, 120_000);
    afterAll(async () => {
      await run?.close();
    }, 60_000);

    it(`passes all ${spec.scenarios.length} scenarios; the ledger matches each one`, { timeout: 480_000 }, async () => {
      const runner = await runTool(process.execPath, ["run-scenarios.ts"], { cwd: project, env: runnerEnv(run), timeoutMs: 420_000 });
      const endedMs = Date.now();
      expect(runner.code, runner.output).toBe(0);
      expect(runner.stdout.match(/^ok /gm)).toHaveLength(spec.scenarios.length);
      expect(await ledgerProblems(run, "typescript", endedMs)).toEqual([]);
    });
  });
});
