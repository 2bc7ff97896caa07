// `tally keys create` and `--key` on the client commands, as real processes:
// a key created into a keys file opens a `tally serve` started on that file
// (and one added while it runs, once it reloads); the client commands send it
// and say clearly what is wrong when it is missing, wrong or not enough.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { hashApiKey, parseKeysFile } from "../src/api/keys.ts";
import { runKeysCommand } from "../src/cli-keys.ts";
import { clientsFor, tempDatabaseUrl, type BudgetClient } from "./helpers.ts";

const bin = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const baseEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, TALLY_URL: "", TALLY_API_KEY: "" };

function tally(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...baseEnv, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr });
    });
  });
}

const codeOf = (call: Promise<unknown>) => call.then(() => "ok" as const, (e: unknown) => ConnectError.from(e).code);
const tempDir = () => mkdtempSync(join(tmpdir(), "tally-cli-keys-"));

describe("tally keys create, then tally serve on that keys file", () => {
  let server: ChildProcess;
  let url: string;
  let keysFile: string;
  let adminKey: string;
  const serverLines: string[] = [];

  beforeAll(async () => {
    keysFile = join(tempDir(), "keys.json");
    const created = await tally(["keys", "create", "--id", "ops", "--role", "admin", "--file", keysFile, "--json"]);
    expect(created).toMatchObject({ code: 0, stderr: "" });
    const out = JSON.parse(created.stdout) as { id: string; key: string; entry: { sha256: string } };
    adminKey = out.key;
    server = spawn(process.execPath, [bin, "serve"], { env: { ...baseEnv, PORT: "0", TALLY_DATABASE_URL: tempDatabaseUrl(), TALLY_KEYS_FILE: keysFile, TALLY_ADMIN_KEYS: "" }, stdio: ["ignore", "pipe", "pipe"] });
    createInterface({ input: server.stderr! }).on("line", (line) => serverLines.push(line));
    url = await new Promise<string>((resolve, reject) => {
      server.once("exit", (code) => reject(new Error(`tally serve exited with ${code}: ${serverLines.join("\n")}`)));
      createInterface({ input: server.stdout! }).on("line", (line) => {
        serverLines.push(line);
        const event = JSON.parse(line) as { event?: string; url?: string };
        if (event.event === "server.listening" && event.url) resolve(event.url);
      });
    });
  });
  afterAll(() => {
    if (server?.exitCode === null) server.kill("SIGTERM");
  });

  it("prints the key once, stores only its hash, and the server accepts it", async () => {
    const text = readFileSync(keysFile, "utf8");
    expect(text).not.toContain(adminKey);
    expect(JSON.parse(text)).toEqual({ keys: [{ id: "ops", role: "admin", sha256: hashApiKey(adminKey) }] });
    expect(statSync(keysFile).mode & 0o777).toBe(0o600);
    expect(adminKey).toMatch(/^tally_[A-Za-z0-9_-]{43}$/);
    const admin = clientsFor(url, adminKey)["connect+json http/1.1"] as BudgetClient;
    expect(await codeOf(admin.setProjectBudget({ projectId: "team-a/chat", limitNanos: 5_000_000_000n }))).toBe("ok");
    expect(await codeOf((clientsFor(url)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "team-a/chat" }))).toBe(Code.Unauthenticated);
  });

  it("adds a project key to the file of a running server, which reloads it by itself", async () => {
    const created = await tally(["keys", "create", "--id", "team-a", "--role", "project", "--prefix", "team-a/", "--project", "shared-bot", "--file", keysFile]);
    expect(created.code).toBe(0);
    // stdout is the key alone (easy to capture); the explanations go to stderr.
    expect(created.stdout).toMatch(/^tally_[A-Za-z0-9_-]{43}\n$/);
    expect(created.stderr).toMatch(/added project key "team-a" to .*keys\.json/);
    expect(created.stderr).toMatch(/shown only this once/);
    const projectKey = created.stdout.trim();
    expect(parseKeysFile(readFileSync(keysFile, "utf8"), "keys").map((k) => k.id)).toEqual(["ops", "team-a"]);
    // No temporary or lock file is left next to it.
    expect(readdirSync(dirname(keysFile))).toEqual(["keys.json"]);

    const scoped = clientsFor(url, projectKey)["grpc h2c"] as BudgetClient;
    // The server polls the file every 2 s: a bounded wait for the reload.
    let code: Code | "ok" = Code.Unauthenticated;
    for (let i = 0; i < 100 && code === Code.Unauthenticated; i++) {
      code = await codeOf(scoped.getProjectCost({ projectId: "team-a/chat" }));
      if (code === Code.Unauthenticated) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(code).toBe("ok");
    expect(await codeOf(scoped.recordCost({ projectId: "shared-bot", costNanos: 1n, requestId: "a" }))).toBe("ok");
    expect(await codeOf(scoped.getProjectCost({ projectId: "team-b/chat" }))).toBe(Code.PermissionDenied);
    expect(await codeOf(scoped.setProjectBudget({ projectId: "team-a/chat", limitNanos: 1n }))).toBe(Code.PermissionDenied);
    expect(serverLines.join("\n")).toMatch(/"event":"auth.keys_loaded".*"keyCount":2.*"reload":true/);

    // The client commands with that key: reads on its own projects work...
    const cost = await tally(["cost", "team-a/chat", "--url", url], { TALLY_API_KEY: projectKey });
    expect(cost).toMatchObject({ code: 0, stderr: "" });
    expect(cost.stdout).toMatch(/^limit\s+5 USD$/m);
    // ...operator commands say an admin key is needed.
    for (const args of [["budget", "set", "team-a/chat", "7"], ["projects"], ["cost", "team-b/chat"]]) {
      const denied = await tally([...args, "--url", url, "--key", projectKey]);
      expect(denied.code, args.join(" ")).toBe(1);
      expect(denied.stderr, args.join(" ")).toMatch(/^tally: the API key may not do this \(PermissionDenied: .+\)\. budget set and projects need an admin key/);
      expect(denied.stderr).not.toContain(projectKey);
    }
  });

  it("client commands send --key or TALLY_API_KEY, and say what to do without one", async () => {
    const none = await tally(["budget", "get", "team-a/chat", "--url", url]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^tally: Tally at http:\/\/[^ ]+ needs an API key \(Unauthenticated: .*\)\. Pass --key or set TALLY_API_KEY; an operator creates keys with `tally keys create`\.$/m);
    const wrong = await tally(["budget", "get", "team-a/chat", "--url", url, "--key", "tally_mistyped0000000000000000000000000000000000"]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/did not accept the API key .*mistyped, revoked, or from another deployment/);
    expect(wrong.stderr).not.toContain("tally_mistyped");

    const set = await tally(["budget", "set", "team-a/chat", "7.5", "--url", url, "--key", adminKey, "--json"]);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ budget: { projectId: "team-a/chat", limitNanos: "7500000000" } });
    const listed = await tally(["projects", "--order", "id", "--json", "--url", url], { TALLY_API_KEY: adminKey });
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).projects.map((p: { projectId: string }) => p.projectId)).toEqual(["shared-bot", "team-a/chat"]);
    // --key wins over the environment.
    const both = await tally(["budget", "get", "team-a/chat", "--url", url, "--key", adminKey], { TALLY_API_KEY: "tally_wrong000000000000000000000000000000000000" });
    expect(both.code).toBe(0);
    // A key that could never be sent as a header is a usage error, before any call.
    const bad = await tally(["cost", "x", "--url", url, "--key", "two words"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/the API key \(--key or TALLY_API_KEY\) must be/);
  });
});

describe("tally keys create: the keys file stays valid", () => {
  const run = async (...args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runKeysCommand(args, { out: (line) => out.push(line), err: (line) => err.push(line) });
    return { code, out: out.join("\n"), err: err.join("\n") };
  };

  it("without --file prints the key and the entry to paste, whose hash is the key's", async () => {
    const res = await run("create", "--id", "ci", "--role", "project", "--project", "a", "--project", "b");
    expect(res.code).toBe(0);
    const [key, entryLine] = res.out.split("\n") as [string, string];
    expect(JSON.parse(entryLine)).toEqual({ id: "ci", role: "project", sha256: hashApiKey(key), projects: ["a", "b"] });
    expect(res.err).toMatch(/add the entry above to the "keys" array/);
    const json = await run("create", "--id", "ci", "--role", "admin", "--json");
    const doc = JSON.parse(json.out) as { id: string; key: string; entry: { sha256: string } };
    expect(Object.keys(doc)).toEqual(["id", "key", "entry"]);
    expect(doc.entry).toEqual({ id: "ci", role: "admin", sha256: hashApiKey(doc.key) });
    // Every run makes a new key.
    expect(doc.key).not.toBe(key);
  });

  it("refuses a duplicate id, an invalid file and a held lock, changing nothing", async () => {
    const dir = tempDir();
    const file = join(dir, "keys.json");
    expect((await run("create", "--id", "ops", "--role", "admin", "--file", file)).code).toBe(0);
    chmodSync(file, 0o640);
    const before = readFileSync(file, "utf8");
    const duplicate = await run("create", "--id", "ops", "--role", "admin", "--file", file);
    expect(duplicate).toMatchObject({ code: 1, out: "" });
    expect(duplicate.err).toMatch(/already has a key with id "ops"/);
    expect(readFileSync(file, "utf8")).toBe(before);

    writeFileSync(join(dir, "lock-held.json"), before);
    writeFileSync(join(dir, "lock-held.json.lock"), "");
    const locked = await run("create", "--id", "new", "--role", "admin", "--file", join(dir, "lock-held.json"));
    expect(locked).toMatchObject({ code: 1, out: "" });
    expect(locked.err).toMatch(/lock-held\.json\.lock exists: another `tally keys create` or `tally keys revoke` is writing/);

    const broken = join(dir, "broken.json");
    writeFileSync(broken, '{"keys": [{"id": "x", "role": "admin"}]}');
    const invalid = await run("create", "--id", "new", "--role", "admin", "--file", broken);
    expect(invalid).toMatchObject({ code: 1, out: "" });
    expect(invalid.err).toMatch(/fix it first; nothing was changed.*"sha256" must be/);
    expect(readFileSync(broken, "utf8")).toBe('{"keys": [{"id": "x", "role": "admin"}]}');

    // An accepted addition keeps the file's permissions and leaves nothing behind.
    expect((await run("create", "--id", "second", "--role", "project", "--prefix", "t/", "--file", file)).code).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(parseKeysFile(readFileSync(file, "utf8"), "keys").map((k) => k.id)).toEqual(["ops", "second"]);
    expect(existsSync(`${file}.lock`)).toBe(false);
    expect(readdirSync(dir).filter((name) => name.includes(".tmp"))).toEqual([]);
  });

  it("concurrent runs never lose an entry: each one is added or refused", async () => {
    const file = join(tempDir(), "keys.json");
    const runs = await Promise.all(Array.from({ length: 4 }, (_, i) => tally(["keys", "create", "--id", `k${i}`, "--role", "admin", "--file", file])));
    const added = runs.flatMap((r, i) => (r.code === 0 ? [`k${i}`] : []));
    for (const r of runs) if (r.code !== 0) expect(r.stderr).toMatch(/another `tally keys create` or `tally keys revoke` is writing/);
    expect(added.length).toBeGreaterThan(0);
    expect(parseKeysFile(readFileSync(file, "utf8"), "keys").map((k) => k.id).sort()).toEqual(added.sort());
  });

  it("rejects bad usage with exit 2 and the usage text", async () => {
    for (const args of [
      [],
      ["delete"],
      ["create"],
      ["create", "--id", "x"],
      ["create", "--id", "x", "--role", "root"],
      ["create", "--id", "x", "--role", "project"],
      ["create", "--id", "x", "--role", "admin", "--project", "p"],
      ["create", "--id", "bad id", "--role", "admin"],
      ["create", "--id", "env-admin-1", "--role", "admin"],
      ["create", "--id", "x", "--role", "project", "--prefix", "no spaces"],
      ["create", "--id", "x", "--role", "admin", "--bogus"],
    ]) {
      const res = await run(...args);
      expect(res.code, args.join(" ")).toBe(2);
      expect(res.out, args.join(" ")).toBe("");
      expect(res.err, args.join(" ")).toMatch(/usage:/);
    }
    const help = await run("--help");
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/works on the file, not through the API/);
  });
});
