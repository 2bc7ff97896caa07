// tally_guard (clients/python), proven the way an agent uses it: pip-installed
// (with the generated tally-client it depends on) into a fresh directory, type
// checked with mypy --strict, then the shared scenario list
// (test/clients/guard/scenarios.json) run by pytest twice, with AsyncTally and
// with the blocking Tally from threads, each against its own `tally serve`
// child process that the scenarios kill and restart. The ledger is checked
// against every scenario's expectations afterwards.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readmeSnippets } from "../readme/readme.ts";
import { ledgerProblems, runnerEnv, spec, startRun, type Run } from "./guard/harness.ts";
import { root, runTool, tools } from "./tools.ts";

const pythonEnv = { PYTHONDONTWRITEBYTECODE: "1" };

describe("tally_guard (clients/python)", () => {
  let site: string;
  beforeAll(() => {
    site = mkdtempSync(join(tmpdir(), "tally-guard-py-"));
  });
  afterAll(() => {
    if (site) rmSync(site, { recursive: true, force: true });
  });

  it("pip-installs beside the generated client and type-checks with mypy --strict", { timeout: 180_000 }, async () => {
    // --target: a fresh directory, never the shared tools venv; --no-deps: grpcio
    // and protobuf come from the venv, tally-client from gen/python here.
    const install = await runTool(
      tools.python,
      [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        site,
        "./gen/python",
        "./clients/python",
      ],
      { env: pythonEnv },
    );
    expect(install.code, install.output).toBe(0);
    const show = await runTool(
      tools.python,
      [
        "-c",
        "import tally_guard, importlib.metadata as m; print(m.version('tally-guard'), tally_guard.Tally.__name__, tally_guard.AsyncTally.__name__)",
      ],
      { cwd: tmpdir(), env: { ...pythonEnv, PYTHONPATH: site } },
    );
    expect(show.code, show.output).toBe(0);
    expect(show.stdout.trim()).toBe("1.0.0 Tally AsyncTally");
    const cacheDir = mkdtempSync(join(tmpdir(), "tally-mypy-"));
    const mypy = await runTool(tools.python, ["-m", "mypy", "--strict", "--cache-dir", cacheDir, "-p", "tally_guard"], {
      env: { ...pythonEnv, MYPYPATH: site, PYTHONPATH: site },
      timeoutMs: 170_000,
    });
    rmSync(cacheDir, { recursive: true, force: true });
    expect(mypy.code, mypy.output).toBe(0);
  });

  it("runs README.md's Python guard example as written: the call settles its hold", { timeout: 180_000 }, async () => {
    const snippet = readmeSnippets(join(root, "README.md")).find(
      (s) => s.language === "python" && s.text.includes("from tally_guard import"),
    );
    expect(snippet, "README.md has a Python block using tally_guard").toBeDefined();
    // examples/ holds the same block, as a file to copy.
    expect(readFileSync(join(root, "examples/guard-python/guard_call.py"), "utf8")).toContain(snippet!.text);
    const run = await startRun("py-readme");
    try {
      const program = join(site, "readme_example.py");
      writeFileSync(program, snippet!.text.replaceAll("127.0.0.1:8080", new URL(run.tally.url).host));
      const result = await runTool(tools.python, [program], { env: { ...pythonEnv, PYTHONPATH: site, TALLY_API_KEY: run.tally.adminKey } });
      expect(result.code, result.output).toBe(0);
      expect(result.stdout.trim()).toBe("settled 1234567");
    } finally {
      await run.close();
    }
  });

  for (const variant of ["asyncio", "sync"] as const) {
    describe(`the shared scenarios with ${variant === "asyncio" ? "AsyncTally" : "Tally (threads)"}`, () => {
      let run: Run;
      beforeAll(async () => {
        run = await startRun(`py-${variant}`);
      }, 120_000);
      afterAll(async () => {
        await run?.close();
      }, 60_000);

      it(`passes all ${spec.scenarios.length} scenarios; the ledger matches each one`, { timeout: 480_000 }, async () => {
        const pytest = await runTool(tools.python, ["-m", "pytest", "-p", "no:cacheprovider", "-v", "test/clients/guard/python"], {
          env: { ...pythonEnv, ...runnerEnv(run), PYTHONPATH: site, TALLY_VARIANT: variant },
          timeoutMs: 420_000,
        });
        const endedMs = Date.now();
        expect(pytest.code, pytest.output).toBe(0);
        expect(pytest.stdout).toMatch(new RegExp(`\\b${spec.scenarios.length} passed\\b`));
        expect(await ledgerProblems(run, `python-${variant}`, endedMs)).toEqual([]);
      });
    });
  }
});
