// The short version of `npm run crashtest` for CI: five kill -9s under load
// with retrying clients, then the exact accounting checks (see
// bench/crashtest/main.ts). The tool exits non-zero on any loss or double count.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const crashtest = fileURLToPath(new URL("../../bench/crashtest/main.ts", import.meta.url));

describe("crash test (kill -9 under load)", () => {
  it("loses no acknowledged cost and counts none twice across 5 kills", { timeout: 180_000 }, async () => {
    const { stdout, stderr } = await run(
      process.execPath,
      [crashtest, "--kills", "5", "--seconds", "150", "--loaders", "1", "--workers", "16"],
      {
        timeout: 170_000,
      },
    ).catch((error: { stdout: string; stderr: string; code: number }) => {
      throw new Error(`crashtest failed (exit ${error.code}):\n${error.stdout}\n${error.stderr}`);
    });
    const summary = stdout.trim().split("\n").at(-1) ?? "";
    expect(summary, stderr).toMatch(/^crashtest: PASS kills=5 /);
    expect(summary).toMatch(/ problems=0 /);
    expect(Number(/acknowledged=(\d+)/.exec(summary)?.[1])).toBeGreaterThan(0);
  });
});
