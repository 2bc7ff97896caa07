// The shipped entry point as a real process: `node src/cli.ts serve`, what
// `npm start` runs. Proves SIGTERM shuts down cleanly (exit 0) and that every
// acknowledged write survives kill -9.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { generateApiKey } from "../src/auth/keys.ts";
import { clientsFor, tempDatabaseUrl, writeKeysFile, type BudgetClient } from "./helpers.ts";

const cli = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const children: ChildProcess[] = [];

/** Starts the CLI on port 0 and resolves with its URL once it logs server.listening. */
function serve(env: Record<string, string>): Promise<{ child: ChildProcess; url: string; lines: string[] }> {
  const child = spawn(process.execPath, [cli, "serve"], { env: { ...process.env, PORT: "0", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`tally exited early with ${code}: ${lines.join("\n")}`)));
    createInterface({ input: child.stderr! }).on("line", (line) => lines.push(line));
    createInterface({ input: child.stdout! }).on("line", (line) => {
      lines.push(line);
      const event = JSON.parse(line) as { event?: string; url?: string };
      if (event.event === "server.listening" && event.url) resolve({ child, url: event.url, lines });
    });
  });
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
});

describe("tally serve (process)", () => {
  it("logs one structured line per RPC and exits 0 on SIGTERM", async () => {
    const { child, url, lines } = await serve({ TALLY_DATABASE_URL: tempDatabaseUrl() });
    const client = clientsFor(url)["grpc h2c"] as BudgetClient;
    await client.recordCost({ projectId: "cli", costNanos: 5n, requestId: "a" });
    await client.getProjectCost({ projectId: "" }).catch(() => undefined);
    child.kill("SIGTERM");
    expect(await exited(child)).toEqual({ code: 0, signal: null });
    const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events).toContainEqual(
      expect.objectContaining({
        event: "rpc.completed",
        procedure: "tally.budget.v1.BudgetService/RecordCost",
        code: "ok",
        projectId: "cli",
      }),
    );
    expect(events).toContainEqual(
      expect.objectContaining({ event: "rpc.failed", procedure: "tally.budget.v1.BudgetService/GetProjectCost", code: "invalid_argument" }),
    );
    expect(events.at(-1)).toMatchObject({ event: "server.stopped", drained: true });
  });

  it("keeps every acknowledged write after kill -9, with no double counting on retry", async () => {
    const databaseUrl = tempDatabaseUrl();
    const first = await serve({ TALLY_DATABASE_URL: databaseUrl });
    const client = clientsFor(first.url)["connect+proto h2c"] as BudgetClient;
    const acknowledged: bigint[] = [];
    // Writes keep flowing when the process is killed; only acknowledged ones count.
    const writers = Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 1000; i++) {
        const cost = BigInt(w * 10_000 + i + 1);
        try {
          await client.recordCost({ projectId: "kill9", costNanos: cost, requestId: `w${w}-${i}` });
          acknowledged.push(cost);
        } catch {
          return; // the server is gone
        }
      }
    });
    while (acknowledged.length < 200) await new Promise((resolve) => setTimeout(resolve, 5));
    first.child.kill("SIGKILL");
    await Promise.all(writers);
    expect(await exited(first.child)).toMatchObject({ signal: "SIGKILL" });

    const second = await serve({ TALLY_DATABASE_URL: databaseUrl });
    const after = clientsFor(second.url)["grpc h2c"] as BudgetClient;
    const { projectCost } = await after.getProjectCost({ projectId: "kill9" });
    // At least every acknowledged write; at most those plus the ones in flight
    // at the kill (committed but not yet answered), one per writer.
    const sum = acknowledged.reduce((a, b) => a + b, 0n);
    expect(projectCost!.recordCount).toBeGreaterThanOrEqual(BigInt(acknowledged.length));
    expect(projectCost!.recordCount).toBeLessThanOrEqual(BigInt(acknowledged.length + 8));
    expect(projectCost!.totalCostNanos).toBeGreaterThanOrEqual(sum);
    // Retrying every acknowledged write is answered as a duplicate and adds nothing.
    const retry = await after.recordCost({
      projectId: "kill9",
      costNanos: acknowledged[0]!,
      requestId: `w${Number((acknowledged[0]! - 1n) / 10_000n)}-${Number((acknowledged[0]! - 1n) % 10_000n)}`,
    });
    expect(retry.duplicate).toBe(true);
    expect((await after.getProjectCost({ projectId: "kill9" })).projectCost?.totalCostNanos).toBe(projectCost!.totalCostNanos);
    second.child.kill("SIGTERM");
    expect((await exited(second.child)).code).toBe(0);
  });

  it("refuses a bad configuration with a clear message and exit code 2", async () => {
    const child = spawn(process.execPath, [cli, "serve"], {
      env: { ...process.env, TALLY_LEDGER_RETENTION_MS: "1000" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    expect((await exited(child)).code).toBe(2);
    expect(stderr).toMatch(/TALLY_LEDGER_RETENTION_MS=1000 is below the minimum/);
  });

  it("refuses to listen on a non-loopback address without API keys (exit 1, before binding)", async () => {
    const child = spawn(process.execPath, [cli, "serve"], {
      env: { ...process.env, HOST: "0.0.0.0", PORT: "0", TALLY_KEYS_FILE: "", TALLY_ADMIN_KEYS: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let stderr = "";
    let stdout = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    expect((await exited(child)).code).toBe(1);
    expect(stderr).toMatch(/refusing to listen on 0\.0\.0\.0 without API keys.*TALLY_KEYS_FILE/);
    expect(stdout).toContain('"event":"server.start_failed"');
    expect(stdout).not.toContain("server.listening");
  });

  it("refuses a second server on the same SQLite file (exit 1), and serves it again once the first was killed", async () => {
    const databaseUrl = tempDatabaseUrl();
    const first = await serve({ TALLY_DATABASE_URL: databaseUrl });
    const second = spawn(process.execPath, [cli, "serve"], {
      env: { ...process.env, PORT: "0", TALLY_DATABASE_URL: databaseUrl },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(second);
    let stderr = "";
    second.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    second.stdout!.resume();
    expect((await exited(second)).code).toBe(1);
    expect(stderr).toMatch(
      /tally: the SQLite database .* is already served by another Tally process .*use PostgreSQL for several replicas/,
    );
    // The lock dies with its process, however it ends.
    first.child.kill("SIGKILL");
    await exited(first.child);
    const third = await serve({ TALLY_DATABASE_URL: databaseUrl });
    const client = clientsFor(third.url)["grpc h2c"] as BudgetClient;
    expect((await client.recordCost({ projectId: "lock", costNanos: 1n, requestId: "a" })).projectCost?.totalCostNanos).toBe(1n);
  });

  it("reloads the keys file on SIGHUP", async () => {
    const oldKey = generateApiKey();
    const newKey = generateApiKey();
    const keysFile = writeKeysFile([{ id: "old", role: "admin", key: oldKey }]);
    const { child, url, lines } = await serve({ TALLY_DATABASE_URL: tempDatabaseUrl(), TALLY_KEYS_FILE: keysFile });
    await (clientsFor(url, oldKey)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "hup" });
    writeKeysFile([{ id: "new", role: "admin", key: newKey }], keysFile);
    child.kill("SIGHUP");
    // Bounded wait for the reload line (SIGHUP or the file poll, whichever is first).
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('"auth.keys_loaded"') && l.includes('"reload":true')); i++)
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect(
      (await (clientsFor(url, newKey)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "hup" })).projectCost?.recordCount,
    ).toBe(0n);
    const revoked = await (clientsFor(url, oldKey)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "hup" }).then(
      () => "ok",
      (e: unknown) => ConnectError.from(e).code,
    );
    expect(revoked).toBe(Code.Unauthenticated);
    child.kill("SIGTERM");
    expect((await exited(child)).code).toBe(0);
    expect(lines.join("\n")).not.toContain(oldKey);
  });
});
