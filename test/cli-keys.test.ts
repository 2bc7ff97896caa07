// `tally keys create|list|revoke` and `--key` on the client commands: a key
// created into a keys file opens a `tally serve` started on that file (and one
// added while it runs, once it reloads), a revoked one stops working once the
// server reloads; the client commands send the key and say clearly what is
// wrong when it is missing, wrong or not enough.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { hashApiKey, parseKeysFile } from "../src/auth/keys.ts";
import { runKeysCommand } from "../src/cli-keys.ts";
import type { TallyServer } from "../src/server.ts";
import { clientsFor, startTestServer, tempDatabaseUrl, type BudgetClient } from "./helpers.ts";

const bin = fileURLToPath(new URL("../src/cli.ts", import.meta.url));
const baseEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`, TALLY_URL: "", TALLY_API_KEY: "" };

function tally(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(bin, args, { env: { ...baseEnv, ...env }, timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr });
    });
  });
}

const codeOf = (call: Promise<unknown>) =>
  call.then(
    () => "ok" as const,
    (e: unknown) => ConnectError.from(e).code,
  );
const tempDir = () => mkdtempSync(join(tmpdir(), "tally-cli-keys-"));

/** `tally keys ...` in-process; `env` stands for the environment (no
 * TALLY_KEYS_FILE unless given, whatever the test runner's is). */
async function runKeys(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runKeysCommand(args, { out: (line) => out.push(line), err: (line) => err.push(line) }, env);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

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
    server = spawn(process.execPath, [bin, "serve"], {
      env: { ...baseEnv, PORT: "0", TALLY_DATABASE_URL: tempDatabaseUrl(), TALLY_KEYS_FILE: keysFile, TALLY_ADMIN_KEYS: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
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
    expect(await codeOf((clientsFor(url)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "team-a/chat" }))).toBe(
      Code.Unauthenticated,
    );
  });

  it("adds a project key to the file of a running server, which reloads it by itself", async () => {
    const created = await tally([
      "keys",
      "create",
      "--id",
      "team-a",
      "--role",
      "project",
      "--prefix",
      "team-a/",
      "--project",
      "shared-bot",
      "--file",
      keysFile,
    ]);
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
      expect(denied.stderr, args.join(" ")).toMatch(
        /^tally: the API key may not do this \(PermissionDenied: .+\)\. budget set and projects need an admin key/,
      );
      expect(denied.stderr).not.toContain(projectKey);
    }
  });

  it("client commands send --key or TALLY_API_KEY, and say what to do without one", async () => {
    const none = await tally(["budget", "get", "team-a/chat", "--url", url]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(
      /^tally: Tally at http:\/\/[^ ]+ needs an API key \(Unauthenticated: .*\)\. Pass --key or set TALLY_API_KEY; an operator creates keys with `tally keys create`\.$/m,
    );
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
    const both = await tally(["budget", "get", "team-a/chat", "--url", url, "--key", adminKey], {
      TALLY_API_KEY: "tally_wrong000000000000000000000000000000000000",
    });
    expect(both.code).toBe(0);
    // A key that could never be sent as a header is a usage error, before any call.
    const bad = await tally(["cost", "x", "--url", url, "--key", "two words"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/the API key \(--key or TALLY_API_KEY\) must be/);
  });
});

describe("tally keys create: the keys file stays valid", () => {
  const run = (...args: string[]) => runKeys(args);

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
    const runs = await Promise.all(
      Array.from({ length: 4 }, (_, i) => tally(["keys", "create", "--id", `k${i}`, "--role", "admin", "--file", file])),
    );
    const added = runs.flatMap((r, i) => (r.code === 0 ? [`k${i}`] : []));
    for (const r of runs) if (r.code !== 0) expect(r.stderr).toMatch(/another `tally keys create` or `tally keys revoke` is writing/);
    expect(added.length).toBeGreaterThan(0);
    expect(
      parseKeysFile(readFileSync(file, "utf8"), "keys")
        .map((k) => k.id)
        .sort(),
    ).toEqual(added.sort());
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

describe("tally keys list and revoke, with a server on that keys file", () => {
  let server: TallyServer;
  let dir: string;
  let keysFile: string;
  const keys: Record<string, string> = {};
  const as = (id: string) => clientsFor(server.url, keys[id])["grpc h2c"] as BudgetClient;

  beforeAll(async () => {
    dir = tempDir();
    keysFile = join(dir, "keys.json");
    for (const args of [
      ["--id", "ops", "--role", "admin"],
      ["--id", "backup", "--role", "admin"],
      ["--id", "team-a", "--role", "project", "--prefix", "team-a/", "--project", "shared-bot"],
      ["--id", "ci", "--role", "project", "--project", "ci"],
    ]) {
      const created = await runKeys(["create", ...args, "--file", keysFile, "--json"]);
      expect(created.code).toBe(0);
      const { id, key } = JSON.parse(created.out) as { id: string; key: string };
      keys[id] = key;
    }
    chmodSync(keysFile, 0o640);
    server = await startTestServer({ keysFile });
  });
  afterAll(async () => {
    await server.close();
  });

  it("create --expires-in / --expires-at writes an expiry that list shows, and refuses bad ones", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "tally-keys-expiry-")), "keys.json");
    const before = Date.now();
    const made = await runKeys([
      "create",
      "--id",
      "temp",
      "--role",
      "project",
      "--project",
      "p",
      "--expires-in",
      "90d",
      "--file",
      file,
      "--json",
    ]);
    expect(made.code).toBe(0);
    const expiresAtMs = Date.parse(JSON.parse(made.out).entry.expiresAt);
    expect(expiresAtMs).toBeGreaterThanOrEqual(before + 90 * 86_400_000);
    expect(expiresAtMs).toBeLessThanOrEqual(Date.now() + 90 * 86_400_000);
    expect(
      (
        await runKeys([
          "create",
          "--id",
          "fixed",
          "--role",
          "admin",
          "--expires-at",
          "2999-01-31T12:00:00+01:00",
          "--rate-limit",
          "50",
          "--file",
          file,
        ])
      ).code,
    ).toBe(0);
    const listed = JSON.parse((await runKeys(["list", "--file", file, "--json"])).out);
    expect(
      listed.keys.map((k: { id: string; expiresAt?: string; expired?: boolean; rateLimitPerSecond?: number }) => [
        k.id,
        k.expiresAt,
        k.expired,
        k.rateLimitPerSecond,
      ]),
    ).toEqual([
      ["temp", new Date(expiresAtMs).toISOString(), false, undefined],
      ["fixed", "2999-01-31T11:00:00.000Z", false, 50],
    ]);
    expect((await runKeys(["list", "--file", file])).out).toContain("fixed  admin    2999-01-31T11:00:00.000Z  50/s   all projects");
    for (const bad of [
      ["--expires-in", "90"],
      ["--expires-in", "0d"],
      ["--expires-in", "1w"],
      ["--expires-at", "2999-01-31"],
      ["--expires-at", "2001-01-01T00:00:00Z"],
      ["--expires-in", "1d", "--expires-at", "2999-01-31T00:00:00Z"],
      ["--rate-limit", "0"],
      ["--rate-limit", "1.5"],
      ["--rate-limit", "2000000"],
    ]) {
      const result = await runKeys(["create", "--id", "bad", "--role", "admin", ...bad, "--file", file]);
      expect([bad, result.code]).toEqual([bad, 2]);
    }
    expect((await runKeys(["revoke", "--id", "temp", "--expires-in", "1d", "--file", file])).code).toBe(2);
  });

  it("list shows each key's id, role and scope, never a hash or a key", async () => {
    const human = await runKeys(["list", "--file", keysFile]);
    expect(human).toMatchObject({ code: 0, err: "" });
    expect(human.out.split("\n")).toEqual([
      "ID      ROLE     EXPIRES  LIMIT  SCOPE",
      "ops     admin    never    -      all projects",
      "backup  admin    never    -      all projects",
      "team-a  project  never    -      projects: shared-bot; prefixes: team-a/",
      "ci      project  never    -      projects: ci",
    ]);
    // Without --file it reads the file the server reads.
    const json = await runKeys(["list", "--json"], { TALLY_KEYS_FILE: keysFile });
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)).toEqual({
      file: keysFile,
      keys: [
        { id: "ops", role: "admin" },
        { id: "backup", role: "admin" },
        { id: "team-a", role: "project", projects: ["shared-bot"], projectPrefixes: ["team-a/"] },
        { id: "ci", role: "project", projects: ["ci"] },
      ],
    });
    for (const [id, key] of Object.entries(keys)) {
      for (const text of [human.out, json.out]) {
        expect(text, id).not.toContain(key);
        expect(text, id).not.toContain(hashApiKey(key));
      }
    }
    expect(json.out).not.toContain("sha256");
  });

  it("revoke removes only that entry, and the server refuses the key once its poll sees the file change", async () => {
    expect(await codeOf(as("team-a").getProjectCost({ projectId: "team-a/chat" }))).toBe("ok");
    const before = JSON.parse(readFileSync(keysFile, "utf8")) as { keys: Array<{ id: string }> };
    const revoked = await runKeys(["revoke", "--id", "team-a"], { TALLY_KEYS_FILE: keysFile });
    expect(revoked).toMatchObject({ code: 0, out: "" });
    expect(revoked.err).toMatch(
      /^tally: revoked project key "team-a" \(removed from .*keys\.json\); a running Tally refuses it once it reloads the file/,
    );
    expect(revoked.err).not.toMatch(/warning/);
    // The other entries are kept exactly as they were, hashes included.
    expect(JSON.parse(readFileSync(keysFile, "utf8"))).toEqual({ keys: before.keys.filter((k) => k.id !== "team-a") });
    expect(statSync(keysFile).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir)).toEqual(["keys.json"]);

    // No reload() here: the server's own poll of the file must pick it up (bounded wait).
    let code: Code | "ok" = "ok";
    for (let i = 0; i < 100 && code === "ok"; i++) {
      code = await codeOf(as("team-a").getProjectCost({ projectId: "team-a/chat" }));
      if (code === "ok") await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(code).toBe(Code.Unauthenticated);
    expect(await codeOf(as("ci").getProjectCost({ projectId: "ci" }))).toBe("ok");
    expect(await codeOf(as("ops").setProjectBudget({ projectId: "team-a/chat", limitNanos: 1n }))).toBe("ok");
  });

  it("revoke as a process, then a reload (what SIGHUP does): the key is refused at once", async () => {
    const revoked = await tally(["keys", "revoke", "--id", "ci", "--file", keysFile]);
    expect(revoked).toMatchObject({ code: 0, stdout: "" });
    expect(revoked.stderr).toMatch(/^tally: revoked project key "ci"/);
    expect(server.reload()).toBe(true);
    expect(await codeOf(as("ci").getProjectCost({ projectId: "ci" }))).toBe(Code.Unauthenticated);
    expect(await codeOf(as("backup").getProjectCost({ projectId: "ci" }))).toBe("ok");
    expect(ids(keysFile)).toEqual(["ops", "backup"]);
  });

  it("revoking the last admin key is allowed with a warning; the server stays closed, not open", async () => {
    const revokedBackup = await runKeys(["revoke", "--id", "backup", "--file", keysFile]);
    expect(revokedBackup.code).toBe(0);
    expect(revokedBackup.err).not.toMatch(/warning/); // "ops" is still an admin key
    const bot = JSON.parse(
      (await runKeys(["create", "--id", "bot", "--role", "project", "--project", "bot", "--file", keysFile, "--json"])).out,
    ) as { key: string };
    keys.bot = bot.key;

    const revokedOps = await runKeys(["revoke", "--id", "ops", "--file", keysFile]);
    expect(revokedOps.code).toBe(0);
    const lines = revokedOps.err.split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(
      /^tally: warning: "ops" was the last admin key in .*keys\.json: once Tally reloads it, only TALLY_ADMIN_KEYS keys \(if any\) can set budgets, list projects, read \/metrics or use the dashboard; project keys keep working, and Tally does not fall back to running without keys\. Add one with `tally keys create --id ID --role admin --file .*`\.$/,
    );
    expect(server.reload()).toBe(true);
    expect(await codeOf(as("ops").setProjectBudget({ projectId: "bot", limitNanos: 1n }))).toBe(Code.Unauthenticated);
    expect(await codeOf(as("bot").recordCost({ projectId: "bot", costNanos: 1n, requestId: "after-last-admin" }))).toBe("ok");
    expect(await codeOf((clientsFor(server.url)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "bot" }))).toBe(
      Code.Unauthenticated,
    );

    // The last key of all: the file is valid and empty, and every call is refused.
    const revokedBot = await runKeys(["revoke", "--id", "bot", "--file", keysFile]);
    expect(revokedBot.code).toBe(0);
    expect(revokedBot.err.split("\n")[1]).toMatch(
      /^tally: warning: .*keys\.json now has no keys: once Tally reloads it, every API call is refused \(UNAUTHENTICATED\) except with TALLY_ADMIN_KEYS keys, if any; Tally does not fall back to running without keys\./,
    );
    expect(JSON.parse(readFileSync(keysFile, "utf8"))).toEqual({ keys: [] });
    expect(server.reload()).toBe(true);
    expect(await codeOf(as("bot").getProjectCost({ projectId: "bot" }))).toBe(Code.Unauthenticated);
    expect(await codeOf((clientsFor(server.url)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "bot" }))).toBe(
      Code.Unauthenticated,
    );
    const listed = await runKeys(["list", "--file", keysFile]);
    expect(listed).toMatchObject({ code: 0, out: "" });
    expect(listed.err).toMatch(/has no keys: a Tally reading it refuses every API call/);
  });
});

describe("tally keys list and revoke: errors change nothing", () => {
  const admin = { id: "ops", role: "admin", sha256: "a".repeat(64) };
  const project = { id: "team-a", role: "project", sha256: "b".repeat(64), projectPrefixes: ["team-a/"] };

  it("an unknown id is exit 1 with one line, and the file is untouched", async () => {
    const file = join(tempDir(), "keys.json");
    writeFileSync(file, JSON.stringify({ keys: [admin, project] }));
    const before = readFileSync(file, "utf8");
    const unknown = await runKeys(["revoke", "--id", "team-b", "--file", file]);
    expect(unknown).toMatchObject({ code: 1, out: "" });
    expect(unknown.err).toBe(
      `tally: ${file} has no key with id "team-b"; nothing was changed; \`tally keys list --file ${file}\` shows the ids`,
    );
    // TALLY_ADMIN_KEYS keys are named like this in the server, never in the file.
    const env = await runKeys(["revoke", "--id", "env-admin-1", "--file", file]);
    expect(env.code).toBe(1);
    expect(env.err).toMatch(
      /no key with id "env-admin-1".*looks like a TALLY_ADMIN_KEYS key: remove it from that variable and restart Tally$/,
    );
    expect(readFileSync(file, "utf8")).toBe(before);
    expect(readdirSync(dirname(file))).toEqual(["keys.json"]);
  });

  it("a missing file, an invalid file and a held lock are exit 1 and change nothing", async () => {
    const dir = tempDir();
    const missing = join(dir, "nowhere", "keys.json");
    for (const args of [["list"], ["revoke", "--id", "ops"]]) {
      const res = await runKeys([...args, "--file", missing]);
      expect(res, args[0]).toMatchObject({ code: 1, out: "" });
      expect(res.err, args[0]).toMatch(/^tally: there is no keys file at .*nowhere\/keys\.json/);
    }
    expect(readdirSync(dir)).toEqual([]);

    const broken = join(dir, "broken.json");
    writeFileSync(broken, JSON.stringify({ keys: [admin, { ...project, projectPrefixes: [] }] }));
    const before = readFileSync(broken, "utf8");
    const list = await runKeys(["list", "--file", broken]);
    expect(list).toMatchObject({ code: 1, out: "" });
    expect(list.err).toMatch(/keys file .*broken\.json: keys\[1\] \("team-a"\): a project key needs "projects" or "projectPrefixes"/);
    const revoke = await runKeys(["revoke", "--id", "ops", "--file", broken]);
    expect(revoke.code).toBe(1);
    expect(revoke.err).toMatch(/fix it first; nothing was changed/);
    expect(readFileSync(broken, "utf8")).toBe(before);

    const held = join(dir, "held.json");
    writeFileSync(held, JSON.stringify({ keys: [admin, project] }));
    writeFileSync(`${held}.lock`, "");
    const locked = await runKeys(["revoke", "--id", "team-a", "--file", held]);
    expect(locked.code).toBe(1);
    expect(locked.err).toMatch(/held\.json\.lock exists: another `tally keys create` or `tally keys revoke` is writing/);
    expect(ids(held)).toEqual(["ops", "team-a"]);
  });

  it("revoke through a symlink replaces the file it points to, keeping the link", async () => {
    const dir = tempDir();
    const real = join(dir, "real.json");
    writeFileSync(real, JSON.stringify({ keys: [admin, project] }));
    symlinkSync(real, join(dir, "keys.json"));
    expect((await runKeys(["revoke", "--id", "team-a", "--file", join(dir, "keys.json")])).code).toBe(0);
    expect(lstatSync(join(dir, "keys.json")).isSymbolicLink()).toBe(true);
    expect(ids(real)).toEqual(["ops"]);
  });

  it("rejects bad usage with exit 2 and the usage text", async () => {
    const file = join(tempDir(), "keys.json");
    writeFileSync(file, JSON.stringify({ keys: [admin, project] }));
    const before = readFileSync(file, "utf8");
    for (const args of [
      ["list"], // neither --file nor TALLY_KEYS_FILE
      ["revoke", "--id", "ops"],
      ["list", "extra", "--file", file],
      ["list", "--id", "ops", "--file", file],
      ["list", "--role", "admin", "--file", file],
      ["revoke", "--file", file],
      ["revoke", "--id", "", "--file", file],
      ["revoke", "--id", "ops", "--role", "admin", "--file", file],
      ["revoke", "--id", "ops", "--json", "--file", file],
      ["revoke", "--id", "ops", "--prefix", "team-a/", "--file", file],
      ["revoke", "--id", "ops", "--file", ""],
    ]) {
      const res = await runKeys(args, { TALLY_KEYS_FILE: "" });
      expect(res.code, args.join(" ")).toBe(2);
      expect(res.out, args.join(" ")).toBe("");
      expect(res.err, args.join(" ")).toMatch(/^tally: .+\n\nusage:\n/);
    }
    expect((await runKeys(["list"])).err).toMatch(/^tally: keys list needs --file PATH or TALLY_KEYS_FILE/);
    expect((await runKeys(["revoke", "--id", "ops", "--json", "--file", file])).err).toMatch(/^tally: keys revoke does not take --json/);
    expect(readFileSync(file, "utf8")).toBe(before);
  });
});

function ids(file: string): string[] {
  return parseKeysFile(readFileSync(file, "utf8"), "keys").map((k) => k.id);
}
