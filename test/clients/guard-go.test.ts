// tally.local/guard (clients/go), proven the way an agent uses it: go vet and
// its unit tests under the race detector (usage adapters, retry policy,
// errors, and the failure policies and bounded outbox against a port that
// refuses connections: no server needed),
// then the shared scenario list (test/clients/guard/scenarios.json) run by
// the Go runner (test/clients/guard/go, a module that requires clients/go
// through a replace directive, as an agent's module would) against a `tally
// serve` child process that the scenarios kill and restart; then the ledger is
// checked against every scenario's expectations.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readmeSnippets } from "../readme/readme.ts";
import { ledgerProblems, runnerEnv, spec, startRun, type Run } from "./guard/harness.ts";
import { root, runTool } from "./tools.ts";

describe("tally.local/guard (clients/go)", () => {
  it("passes go vet and its unit tests", { timeout: 300_000 }, async () => {
    const cwd = `${root}clients/go`;
    const vet = await runTool("go", ["vet", "./..."], { cwd, timeoutMs: 290_000 });
    expect(vet.code, vet.output).toBe(0);
    const test = await runTool("go", ["test", "-count=1", "-race", "-v", "./..."], { cwd, timeoutMs: 290_000 });
    expect(test.code, test.output).toBe(0);
    expect(test.stdout).toMatch(/^ok\s+tally\.local\/guard/m);
    // The failure policies and the bounded outbox, against an unreachable port.
    for (const name of [
      "TestFailClosedRefusesWhenTallyIsUnreachable",
      "TestFailOpenRunsUncheckedAndKeepsRecordsInTheBoundedOutbox",
      "TestAFailedFuncsReportThatCannotBeQueuedIsNotLost",
      "TestAPanicInTheFuncPanicsOnAndRecordsNothing",
    ])
      expect(test.stdout).toContain(`--- PASS: ${name}`);
  });

  it("runs examples/guard-go, whose middle is README.md's Go guard block: the call settles its hold", { timeout: 300_000 }, async () => {
    const snippet = readmeSnippets(join(root, "README.md")).find((s) => s.language === "go" && s.text.includes("tally.Guard("));
    expect(snippet, "README.md has a Go block using tally.Guard").toBeDefined();
    const example = readFileSync(join(root, "examples/guard-go/main.go"), "utf8");
    for (const line of snippet!.text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== ""))
      expect(example, `README's Go line is in examples/guard-go/main.go: ${line}`).toContain(line);
    const run = await startRun("go-readme");
    try {
      const result = await runTool("go", ["run", "."], {
        cwd: join(root, "examples/guard-go"),
        env: { TALLY_URL: run.tally.url, TALLY_API_KEY: run.tally.adminKey },
        timeoutMs: 290_000,
      });
      expect(result.code, result.output).toBe(0);
      expect(result.stdout.trim()).toBe("settled 1234567");
    } finally {
      await run.close();
    }
  });

  describe("the shared scenarios", () => {
    let run: Run;
    beforeAll(async () => {
      run = await startRun("go");
    }, 120_000);
    afterAll(async () => {
      await run?.close();
    }, 60_000);

    it(`passes all ${spec.scenarios.length} scenarios; the ledger matches each one`, { timeout: 600_000 }, async () => {
      const cwd = `${root}test/clients/guard/go`;
      // Built first, so the run's time is the scenarios' and not the compiler's.
      // -race: 32 goroutines share one client in restart-under-load.
      const build = await runTool("go", ["build", "-race", "-o", `${run.reportPath}.bin`, "."], { cwd, timeoutMs: 290_000 });
      expect(build.code, build.output).toBe(0);
      const runner = await runTool(`${run.reportPath}.bin`, [], { cwd, env: runnerEnv(run), timeoutMs: 420_000 });
      const endedMs = Date.now();
      expect(runner.code, runner.output).toBe(0);
      expect(runner.stdout.match(/^ok /gm)).toHaveLength(spec.scenarios.length);
      expect(await ledgerProblems(run, "go", endedMs)).toEqual([]);
    });
  });
});
