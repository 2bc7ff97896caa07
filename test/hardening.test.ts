// The smaller holes of issue 15 (item 7): ids logged raw, a stack trace for a
// database that cannot be served, keys-file permissions, prefixes without a
// separator, and `tally keys list` accepting a file the server refuses.
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey, hashApiKey } from "../src/auth/keys.ts";
import { defaultConfig, type TallyConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { StartupError } from "../src/security.ts";
import { startServer } from "../src/server.ts";
import { codeOf, writeKeysFile } from "./helpers.ts";

const cli = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

class LogCapture extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    this.text += chunk.toString();
    done();
  }
  events(): Array<Record<string, unknown>> {
    return this.text
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

function start(overrides: Partial<TallyConfig>, log = new LogCapture()) {
  const config: TallyConfig = { ...defaultConfig, port: 0, databaseUrl: "sqlite::memory:", logLevel: "info", ...overrides };
  return startServer(config, createLogger(config.logLevel, log));
}

/** `tally <args>` as a process: exit code, stdout and stderr lines. */
function tally(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string[]; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args], {
    env: { ...process.env, PORT: "0", TALLY_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, stdout: stdout.split("\n").filter(Boolean), stderr })));
}

describe("log lines carry only valid or truncated ids", () => {
  it("logs a 60,000-character project_id as its first 32 characters and its length", async () => {
    const log = new LogCapture();
    const server = await start({}, log);
    try {
      const client = createClient(BudgetService, createGrpcTransport({ baseUrl: server.url }));
      const huge = "x".repeat(60_000);
      expect(await codeOf(client.getProjectCost({ projectId: huge }))).not.toBe("ok");
      await client.getProjectCost({ projectId: "fine/id" });
    } finally {
      await server.close();
    }
    expect(log.text).not.toContain("x".repeat(33));
    const lines = log.events().filter((e) => e.procedure === "tally.budget.v1.BudgetService/GetProjectCost");
    expect(lines.map((e) => e.projectId)).toEqual([`${"x".repeat(32)}... (invalid, 60000 characters)`, "fine/id"]);
  });
});

describe("a database that cannot be served stops the start with one clear line", () => {
  const expectOneLine = (run: Awaited<ReturnType<typeof tally>>, message: RegExp) => {
    expect(run.code).toBe(1);
    const failed = run.stdout.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.event === "server.start_failed");
    expect(failed).toHaveLength(1);
    expect(failed[0]!.message).toMatch(message);
    // No stack trace, on either stream.
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.stdout.join("\n")).not.toMatch(/\s+at .*\.(ts|js):\d+/);
  };

  it("a file that is not a SQLite database", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-garbage-"));
    const file = join(dir, "tally.db");
    writeFileSync(file, Buffer.alloc(20_000, 0x5a));
    const run = await tally(["serve"], { TALLY_DATABASE_URL: `sqlite:${file}` });
    expectOneLine(run, new RegExp(`the SQLite database ${file} is not a database or is damaged .*restore it from a backup`));
    expect(run.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("a database file this process cannot write", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-readonly-"));
    const file = join(dir, "tally.db");
    // A valid database first.
    expect((await tally(["migrate"], { TALLY_DATABASE_URL: `sqlite:${file}` })).code).toBe(0);
    // root ignores mode bits: make the file immutable instead.
    const root = process.getuid?.() === 0;
    if (root) execFileSync("chattr", ["+i", file]);
    else chmodSync(file, 0o444);
    try {
      const run = await tally(["serve"], { TALLY_DATABASE_URL: `sqlite:${file}` });
      expectOneLine(run, new RegExp(`the SQLite database ${file} is read-only for this process`));
    } finally {
      if (root) execFileSync("chattr", ["-i", file]);
    }
  });
});

describe("keys files", () => {
  it("warns when the keys file is readable by every user, not when only its owner or group can read it", async () => {
    const file = writeKeysFile([{ id: "admin", role: "admin", key: generateApiKey() }]);
    chmodSync(file, 0o644);
    const exposed = new LogCapture();
    await (await start({ keysFile: file }, exposed)).close();
    const warning = `the keys file ${file} is readable by every user (mode 0644); it lists every key's hash and scope: chmod o-r ${file} (0600, or 0640 for the service's group)`;
    expect(exposed.events()).toContainEqual(expect.objectContaining({ event: "auth.keys_file_exposed", level: 40, message: warning }));
    const list = await tally(["keys", "list", "--file", file]);
    expect(list.code).toBe(0);
    expect(list.stderr).toContain(`tally: warning: ${warning}`);
    for (const mode of [0o600, 0o640]) {
      chmodSync(file, mode);
      const quiet = new LogCapture();
      await (await start({ keysFile: file }, quiet)).close();
      expect(quiet.events().map((e) => e.event)).not.toContain("auth.keys_file_exposed");
      expect((await tally(["keys", "list", "--file", file])).stderr).toBe("");
    }
  });

  it("refuses a project prefix that does not end with a separator", async () => {
    const file = writeKeysFile([{ id: "team", role: "project", key: generateApiKey(), projectPrefixes: ["team"] }]);
    const refusal = `prefix "team" does not end with a separator (/ : . - _), so it also covers ids such as "teamx"; write "team/"`;
    await expect(start({ keysFile: file })).rejects.toThrow(StartupError);
    await expect(start({ keysFile: file })).rejects.toThrow(refusal);
    const create = await tally(["keys", "create", "--id", "t2", "--role", "project", "--prefix", "team", "--json"]);
    expect(create.code).not.toBe(0);
    expect(create.stderr).toContain(`does not end with a separator`);
    for (const ok of ["team/", "team-", "team:", "team.", "team_"]) {
      const good = writeKeysFile([{ id: "team", role: "project", key: generateApiKey(), projectPrefixes: [ok] }]);
      await (await start({ keysFile: good })).close();
    }
  });

  it("`tally keys list` refuses what the server refuses: duplicate secrets, an oversized file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tally-keys-list-"));
    const twice = join(dir, "twice.json");
    const sha256 = hashApiKey(generateApiKey());
    writeFileSync(
      twice,
      JSON.stringify({
        keys: [
          { id: "a", role: "admin", sha256 },
          { id: "b", role: "admin", sha256 },
        ],
      }),
      { mode: 0o600 },
    );
    await expect(start({ keysFile: twice })).rejects.toThrow(`key "b" has the same secret as key "a"`);
    const list = await tally(["keys", "list", "--file", twice]);
    expect(list.code).not.toBe(0);
    expect(list.stderr).toContain(`key "b" has the same secret as key "a"`);
    const big = join(dir, "big.json");
    // Valid JSON, one empty key list: only its size (trailing spaces) is wrong.
    const bigText = `${JSON.stringify({ keys: [] })}${" ".repeat(5 * 1024 * 1024)}`;
    writeFileSync(big, bigText, { mode: 0o600 });
    await expect(start({ keysFile: big })).rejects.toThrow(`${bigText.length} bytes; at most 4194304`);
    const bigList = await tally(["keys", "list", "--file", big]);
    expect(bigList.code).not.toBe(0);
    expect(bigList.stderr).toContain(`${big} is ${bigText.length} bytes`);
  });
});
