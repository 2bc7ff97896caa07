// The PostgreSQL failover test for CI (bench/failover/main.ts): two clusters on
// this machine with a synchronous standby, a Tally server on a multi-host URL
// with target_session_attrs=read-write, retrying load, three SIGKILLs of the
// primary each followed by a promotion and a re-seed; the tool exits non-zero
// on any acknowledged write lost or any write counted twice.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const failover = fileURLToPath(new URL("../../bench/failover/main.ts", import.meta.url));

describe("PostgreSQL failover (SIGKILL the primary, promote the synchronous standby)", () => {
  it("loses no acknowledged write and counts none twice across 3 failovers", { timeout: 240_000 }, async () => {
    const { stdout, stderr } = await run(process.execPath, [failover, "--failovers", "3", "--seconds", "200", "--workers", "16"], {
      timeout: 230_000,
    }).catch((error: { stdout: string; stderr: string; code: number }) => {
      throw new Error(`failover test failed (exit ${error.code}):\n${error.stdout}\n${error.stderr}`);
    });
    const summary = stdout.trim().split("\n").at(-1) ?? "";
    expect(summary, stderr).toMatch(/^failover: PASS failovers=3 /);
    expect(summary).toMatch(/ problems=0 /);
    expect(Number(/acknowledged=(\d+)/.exec(summary)?.[1])).toBeGreaterThan(0);
  });
});
