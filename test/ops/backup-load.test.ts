// The short version of bench/ops/backup-load.ts for CI: two `tally backup`s of
// a SQLite file served to 64 writers; each restored backup has every write
// acknowledged before it began, passes `tally check`, and answers retries as
// duplicates. The tool exits non-zero on any loss.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const tool = fileURLToPath(new URL("../../bench/ops/backup-load.ts", import.meta.url));

describe("tally backup under load (64 writers)", () => {
  it("restores every write acknowledged before each backup began, nothing half-applied", { timeout: 240_000 }, async () => {
    const { stdout, stderr } = await run(
      process.execPath,
      [tool, "--writers", "64", "--backups", "2", "--warmup-ms", "1500", "--seconds", "200"],
      { timeout: 230_000 },
    ).catch((error: { stdout: string; stderr: string; code: number }) => {
      throw new Error(`backup-load failed (exit ${error.code}):\n${error.stdout}\n${error.stderr}`);
    });
    const summary = stdout.trim().split("\n").at(-1) ?? "";
    expect(summary, stderr).toMatch(/^backup-load: PASS writers=64 backups=2 /);
    expect(summary).toMatch(/ problems=0/);
    // Each backup began after writes were acknowledged, and writes went on during it.
    const before = /acked_before=(\d+),(\d+)/.exec(summary);
    expect(Number(before?.[1])).toBeGreaterThan(0);
    expect(Number(before?.[2])).toBeGreaterThan(Number(before?.[1]));
    expect(Number(/retries_checked=(\d+)/.exec(summary)?.[1])).toBeGreaterThan(0);
  });
});
