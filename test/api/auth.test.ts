// Who may call what: the decision as a pure function (every procedure x every
// kind of caller), the key file format, and the same rules end to end on a real
// port over every protocol, including reloads and what reaches the log.
import { readFileSync, writeFileSync } from "node:fs";
import { Writable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BudgetService } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { accessOf, authenticate, authorize, procedureAccess, type Principal } from "../../src/auth/auth.ts";
import { generateApiKey, hashApiKey, KeyRing, KeysError, parseAdminKeysEnv, parseKeysFile, type ApiKey } from "../../src/auth/keys.ts";
import { defaultConfig, type TallyConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import { isLoopbackAddress, StartupError } from "../../src/security.ts";
import { startServer, type TallyServer } from "../../src/server.ts";
import { clientsFor, codeOf, type BudgetClient, within, writeKeysFile } from "../helpers.ts";

const adminKey = generateApiKey();
const teamKey = generateApiKey(); // projects "billing" and prefix "team-a/"
const otherKey = generateApiKey(); // project "other"

function apiKey(id: string, role: "admin" | "project", key: string, projects: string[] = [], projectPrefixes: string[] = []): ApiKey {
  return {
    id,
    role,
    sha256: Buffer.from(hashApiKey(key), "hex"),
    projects: new Set(projects),
    projectPrefixes,
    expiresAtMs: null,
    rateLimitPerSecond: null,
  };
}
const ring = new KeyRing([
  apiKey("ops", "admin", adminKey),
  apiKey("team-a", "project", teamKey, ["billing"], ["team-a/"]),
  apiKey("other", "project", otherKey, ["other"]),
]);

function decide(authorization: string | null, method: string, projectId: string, keys: KeyRing | null = ring): Principal | Code {
  try {
    return authorize(keys, authorization, `tally.budget.v1.BudgetService/${method}`, [projectId]);
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

describe("authorize (the decision, transport-free)", () => {
  const projectRpcs = ["RecordCost", "CheckBudget", "GetProjectCost", "GetProjectBudget"];

  it("lists every BudgetService method in the access table", () => {
    for (const method of BudgetService.methods)
      expect(procedureAccess, method.name).toHaveProperty(`${BudgetService.typeName}/${method.name}`);
    expect(accessOf("tally.budget.v1.BudgetService/SetProjectBudget")).toBe("admin");
    // Anything unlisted needs an admin key.
    expect(accessOf("tally.budget.v1.BudgetService/SomethingNew")).toBe("admin");
    expect(accessOf("grpc.health.v1.Health/Check")).toBe("public");
  });

  it.each(projectRpcs)("%s: admin anywhere, project keys on covered projects only", (method) => {
    expect(decide(`Bearer ${adminKey}`, method, "anything")).toMatchObject({ role: "admin", keyId: "ops" });
    expect(decide(`Bearer ${teamKey}`, method, "billing")).toMatchObject({ role: "project", keyId: "team-a" });
    expect(decide(`Bearer ${teamKey}`, method, "team-a/chat")).toMatchObject({ role: "project" });
    expect(decide(`Bearer ${teamKey}`, method, "team-a/deep/path")).toMatchObject({ role: "project" });
    expect(decide(`Bearer ${teamKey}`, method, "team-b/chat")).toBe(Code.PermissionDenied);
    expect(decide(`Bearer ${teamKey}`, method, "billing2")).toBe(Code.PermissionDenied); // exact ids are exact
    expect(decide(`Bearer ${teamKey}`, method, "team-a")).toBe(Code.PermissionDenied); // the prefix is "team-a/"
    expect(decide(`Bearer ${otherKey}`, method, "billing")).toBe(Code.PermissionDenied);
    // An id that is not an id at all is bad input, whoever asks.
    expect(decide(`Bearer ${teamKey}`, method, "")).toBe(Code.InvalidArgument);
    expect(decide(`Bearer ${teamKey}`, method, "team-a/has space")).toBe(Code.InvalidArgument);
  });

  it("SetProjectBudget needs an admin key", () => {
    expect(decide(`Bearer ${adminKey}`, "SetProjectBudget", "billing")).toMatchObject({ role: "admin" });
    expect(decide(`Bearer ${teamKey}`, "SetProjectBudget", "billing")).toBe(Code.PermissionDenied);
    expect(decide(`Bearer ${otherKey}`, "SetProjectBudget", "other")).toBe(Code.PermissionDenied);
  });

  it.each([
    ["no header", null],
    ["empty header", ""],
    ["no scheme", adminKey],
    ["Basic scheme", `Basic ${Buffer.from(`user:${adminKey}`).toString("base64")}`],
    ["Bearer without a key", "Bearer "],
    ["unknown key", `Bearer ${generateApiKey()}`],
    ["key with a character changed", `Bearer ${adminKey.slice(0, -1)}${adminKey.endsWith("A") ? "B" : "A"}`],
    ["key with a suffix", `Bearer ${adminKey}x`],
    ["key prefix", `Bearer ${adminKey.slice(0, 20)}`],
    ["two keys", `Bearer ${adminKey} ${teamKey}`],
    ["the stored hash instead of the key", `Bearer ${hashApiKey(adminKey)}`],
    ["an enormous header", `Bearer ${"k".repeat(100_000)}`],
  ])("%s -> UNAUTHENTICATED on every RPC", (_label, header) => {
    for (const method of [...projectRpcs, "SetProjectBudget"]) expect(decide(header, method, "billing")).toBe(Code.Unauthenticated);
  });

  it("accepts the scheme in any case and surrounding spaces", () => {
    expect(decide(`bearer ${adminKey}`, "SetProjectBudget", "x")).toMatchObject({ role: "admin" });
    expect(decide(`Bearer   ${adminKey} `, "SetProjectBudget", "x")).toMatchObject({ role: "admin" });
  });

  it("with no keys configured allows everything (open mode)", () => {
    expect(decide(null, "SetProjectBudget", "x", null)).toMatchObject({ role: "open", keyId: null });
  });

  it("lets public procedures through without a key, and covers no project with that", () => {
    const principal = authorize(ring, null, "grpc.health.v1.Health/Check", []);
    expect(principal.role).toBe("anonymous");
    expect(principal.covers("billing")).toBe(false);
  });
});

describe("keys", () => {
  it("generates 256-bit keys that never repeat", () => {
    const keys = new Set(Array.from({ length: 100 }, generateApiKey));
    expect(keys.size).toBe(100);
    for (const key of keys) expect(key).toMatch(/^tally_[A-Za-z0-9_-]{43}$/);
  });

  it("finds a key by its secret only", () => {
    expect(ring.find(adminKey)?.id).toBe("ops");
    expect(ring.find(teamKey)?.id).toBe("team-a");
    expect(ring.find("")).toBeUndefined();
    expect(ring.find(hashApiKey(adminKey))).toBeUndefined();
  });

  it("parses an optional expiry, an RFC 3339 instant with a zone, and refuses anything vaguer", () => {
    const entry = (expiresAt: unknown) => JSON.stringify({ keys: [{ id: "k", role: "admin", sha256: hashApiKey(adminKey), expiresAt }] });
    expect(parseKeysFile(entry("2027-01-31T00:00:00Z"), "t")[0]?.expiresAtMs).toBe(Date.UTC(2027, 0, 31));
    expect(parseKeysFile(entry("2027-01-31T01:30:00.5+01:30"), "t")[0]?.expiresAtMs).toBe(Date.UTC(2027, 0, 31, 0, 0, 0, 500));
    expect(
      parseKeysFile(JSON.stringify({ keys: [{ id: "k", role: "admin", sha256: hashApiKey(adminKey) }] }), "t")[0]?.expiresAtMs,
    ).toBeNull();
    for (const bad of ["2027-01-31", "2027-01-31T00:00:00", "tomorrow", 1798675200000, "2027-13-01T00:00:00Z", ""]) {
      expect(() => parseKeysFile(entry(bad), "t"), String(bad)).toThrow(/"expiresAt" must be an RFC 3339 instant with a zone/);
    }
  });

  it("refuses an expired key as UNAUTHENTICATED, saying when it expired", () => {
    const expiring = new KeyRing([{ ...apiKey("temp", "project", teamKey, ["billing"]), expiresAtMs: 5_000 }]);
    const procedure = "tally.budget.v1.BudgetService/GetProjectCost";
    expect(authenticate(expiring, `Bearer ${teamKey}`, procedure, 4_999).keyId).toBe("temp");
    const error = ConnectError.from(
      (() => {
        try {
          authenticate(expiring, `Bearer ${teamKey}`, procedure, 5_000);
        } catch (e) {
          return e;
        }
      })(),
    );
    expect([error.code, error.rawMessage]).toEqual([Code.Unauthenticated, 'API key "temp" expired at 1970-01-01T00:00:05.000Z']);
  });

  it("parses the documented file format", () => {
    const keys = parseKeysFile(
      JSON.stringify({
        keys: [
          { id: "ops", role: "admin", sha256: hashApiKey(adminKey) },
          { id: "team-a", role: "project", sha256: hashApiKey(teamKey).toUpperCase(), projects: ["billing"], projectPrefixes: ["team-a/"] },
        ],
      }),
      "test",
    );
    const parsed = new KeyRing(keys);
    expect(parsed.find(teamKey)).toMatchObject({ id: "team-a", role: "project", projectPrefixes: ["team-a/"] });
    expect(parsed.find(adminKey)?.role).toBe("admin");
  });

  const h = hashApiKey("x".repeat(40));
  it.each([
    ["not JSON", "{keys: []}", /not valid JSON/],
    ["not an object", "[]", /expected an object/],
    ["keys not an array", '{"keys": {}}', /must be an array/],
    ["unknown top-level field", '{"keys": [], "admins": []}', /unknown field "admins"/],
    ["unknown key field", JSON.stringify({ keys: [{ id: "a", role: "admin", sha256: h, project: ["x"] }] }), /unknown field "project"/],
    ["bad role", JSON.stringify({ keys: [{ id: "a", role: "root", sha256: h }] }), /"role"/],
    ["bad id", JSON.stringify({ keys: [{ id: "a b", role: "admin", sha256: h }] }), /"id"/],
    [
      "duplicate id",
      JSON.stringify({
        keys: [
          { id: "a", role: "admin", sha256: h },
          { id: "a", role: "admin", sha256: hashApiKey("y".repeat(40)) },
        ],
      }),
      /duplicate id/,
    ],
    ["short hash", JSON.stringify({ keys: [{ id: "a", role: "admin", sha256: h.slice(1) }] }), /64 hex digits/],
    ["plain key instead of hash", JSON.stringify({ keys: [{ id: "a", role: "admin", key: "x".repeat(40) }] }), /unknown field "key"/],
    [
      "project key without scope",
      JSON.stringify({ keys: [{ id: "a", role: "project", sha256: h }] }),
      /needs "projects" or "projectPrefixes"/,
    ],
    [
      "project key with empty scope",
      JSON.stringify({ keys: [{ id: "a", role: "project", sha256: h, projects: [], projectPrefixes: [] }] }),
      /needs "projects"/,
    ],
    [
      "admin key with projects",
      JSON.stringify({ keys: [{ id: "a", role: "admin", sha256: h, projects: ["x"] }] }),
      /admin key covers every project/,
    ],
    ["empty prefix", JSON.stringify({ keys: [{ id: "a", role: "project", sha256: h, projectPrefixes: [""] }] }), /is not 1..128/],
  ])("rejects a keys file with %s", (_label, text, message) => {
    expect(() => parseKeysFile(text, "test")).toThrow(KeysError);
    expect(() => parseKeysFile(text, "test")).toThrow(message);
  });

  it("rejects two keys with the same secret", () => {
    expect(() => new KeyRing([apiKey("a", "admin", adminKey), apiKey("b", "admin", adminKey)])).toThrow(/same secret/);
  });

  it("takes admin keys from the environment, refusing short ones", () => {
    const keys = new KeyRing(parseAdminKeysEnv(` ${adminKey} , ${teamKey}`));
    expect(keys.find(adminKey)?.id).toBe("env-admin-1");
    expect(keys.find(teamKey)?.id).toBe("env-admin-2");
    expect(() => parseAdminKeysEnv("short-key")).toThrow(/at least|32\.\.256/);
  });
});

describe("loopback detection", () => {
  it.each([
    ["127.0.0.1", true],
    ["127.8.9.10", true],
    ["::1", true],
    ["::ffff:127.0.0.1", true],
    ["0.0.0.0", false],
    ["::", false],
    ["10.1.2.3", false],
    ["192.168.0.1", false],
    ["::ffff:10.0.0.1", false],
    ["fe80::1", false],
  ])("%s -> %s", (address, loopback) => {
    expect(isLoopbackAddress(address)).toBe(loopback);
  });
});

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

async function start(overrides: Partial<TallyConfig>, log = new LogCapture()): Promise<TallyServer> {
  const config: TallyConfig = { ...defaultConfig, port: 0, databaseUrl: "sqlite::memory:", logLevel: "info", ...overrides };
  return startServer(config, createLogger(config.logLevel, log));
}

describe("the server with API keys", () => {
  let server: TallyServer;
  let keysFile: string;
  const log = new LogCapture();
  const standardKeys = [
    { id: "ops", role: "admin" as const, key: adminKey },
    { id: "team-a", role: "project" as const, key: teamKey, projects: ["billing"], projectPrefixes: ["team-a/"] },
    { id: "other", role: "project" as const, key: otherKey, projects: ["other"] },
  ];
  /** Tests that rewrite the keys file put these back for the ones after them. */
  const restoreKeys = () => {
    writeKeysFile(standardKeys, keysFile);
    expect(server.reload()).toBe(true);
  };
  beforeAll(async () => {
    keysFile = writeKeysFile(standardKeys);
    server = await start({ keysFile }, log);
  });
  afterAll(async () => {
    await server.close();
  });

  for (const protocol of ["connect+proto h2c", "connect+json http/1.1", "grpc h2c", "grpc-web http/1.1"]) {
    it(`enforces keys and scopes over ${protocol}, and denied calls change nothing`, async () => {
      const as = (key?: string) => clientsFor(server.url, key)[protocol] as BudgetClient;
      const project = `team-a/${protocol.replace(/[^a-z0-9]/g, "-")}`;
      const admin = as(adminKey);
      const team = as(teamKey);
      await admin.setProjectBudget({ projectId: project, limitNanos: 1_000n });
      expect((await team.recordCost({ projectId: project, costNanos: 10n, requestId: "r1" })).projectCost?.totalCostNanos).toBe(10n);
      expect((await team.checkBudget({ projectId: project, estimatedCostNanos: 5n })).allowed).toBe(true);
      expect((await team.getProjectBudget({ projectId: project })).budget?.limitNanos).toBe(1_000n);

      expect(await codeOf(as().recordCost({ projectId: project, costNanos: 1n, requestId: "anon" }))).toBe(Code.Unauthenticated);
      expect(await codeOf(as().getProjectCost({ projectId: project }))).toBe(Code.Unauthenticated);
      expect(await codeOf(as(generateApiKey()).recordCost({ projectId: project, costNanos: 1n, requestId: "forged" }))).toBe(
        Code.Unauthenticated,
      );
      expect(await codeOf(team.setProjectBudget({ projectId: project, limitNanos: 10n ** 15n }))).toBe(Code.PermissionDenied);
      expect(await codeOf(as(otherKey).recordCost({ projectId: project, costNanos: 1n, requestId: "cross" }))).toBe(Code.PermissionDenied);
      expect(await codeOf(as(otherKey).getProjectCost({ projectId: project }))).toBe(Code.PermissionDenied);
      expect(await codeOf(as(otherKey).checkBudget({ projectId: project }))).toBe(Code.PermissionDenied);
      expect(await codeOf(team.recordCost({ projectId: "team-b/x", costNanos: 1n, requestId: "outside" }))).toBe(Code.PermissionDenied);

      expect((await admin.getProjectCost({ projectId: project })).projectCost).toMatchObject({ totalCostNanos: 10n, recordCount: 1n });
      expect((await admin.getProjectBudget({ projectId: project })).budget?.limitNanos).toBe(1_000n);
      expect((await admin.getProjectCost({ projectId: "team-b/x" })).projectCost?.recordCount).toBe(0n);
    });
  }

  it("tells the caller what is missing, and never echoes a key", async () => {
    const error = await (clientsFor(server.url)["connect+json http/1.1"] as BudgetClient).getProjectCost({ projectId: "billing" }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(error?.rawMessage).toMatch(/Authorization: Bearer <key>/);
    const wrongKey = generateApiKey();
    const wrong = await (clientsFor(server.url, wrongKey)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "billing" }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(wrong?.rawMessage).toBe("the API key is not valid");
    expect(wrong?.rawMessage).not.toContain(wrongKey);
  });

  it("logs the key id of every call, allowed or denied, and never a key or its hash", async () => {
    const team = clientsFor(server.url, teamKey)["grpc h2c"] as BudgetClient;
    await team.recordCost({ projectId: "billing", costNanos: 1n, requestId: "logged" });
    await team.setProjectBudget({ projectId: "billing", limitNanos: 1n }).catch(() => undefined);
    await (clientsFor(server.url, "Bearer-not-a-key-but-long-enough-000000000")["grpc h2c"] as BudgetClient)
      .getProjectCost({ projectId: "billing" })
      .catch(() => undefined);
    const events = log.events();
    expect(events).toContainEqual(expect.objectContaining({ event: "auth.keys_loaded", keyCount: 3 }));
    expect(events).toContainEqual(
      expect.objectContaining({
        event: "rpc.completed",
        procedure: "tally.budget.v1.BudgetService/RecordCost",
        projectId: "billing",
        keyId: "team-a",
      }),
    );
    expect(events).toContainEqual(
      expect.objectContaining({
        event: "rpc.failed",
        procedure: "tally.budget.v1.BudgetService/SetProjectBudget",
        code: "permission_denied",
        keyId: "team-a",
      }),
    );
    expect(events).toContainEqual(expect.objectContaining({ event: "rpc.failed", code: "unauthenticated" }));
    for (const secret of [adminKey, teamKey, otherKey, hashApiKey(adminKey), hashApiKey(teamKey), "Bearer-not-a-key"])
      expect(log.text).not.toContain(secret);
  });

  it("reloads the keys file on reload(): new keys work, removed keys stop, a broken file keeps the old keys", async () => {
    const newKey = generateApiKey();
    const client = (key: string) => clientsFor(server.url, key)["connect+proto h2c"] as BudgetClient;
    expect(await codeOf(client(newKey).getProjectCost({ projectId: "billing" }))).toBe(Code.Unauthenticated);
    writeKeysFile(
      [
        { id: "ops", role: "admin", key: adminKey },
        { id: "new", role: "project", key: newKey, projects: ["billing"] },
      ],
      keysFile,
    );
    expect(server.reload()).toBe(true);
    expect(await codeOf(client(newKey).getProjectCost({ projectId: "billing" }))).toBe("ok");
    expect(await codeOf(client(teamKey).getProjectCost({ projectId: "billing" }))).toBe(Code.Unauthenticated); // revoked

    writeFileSync(keysFile, "{ this is not json");
    expect(server.reload()).toBe(false);
    expect(await codeOf(client(newKey).getProjectCost({ projectId: "billing" }))).toBe("ok");
    expect(log.events()).toContainEqual(expect.objectContaining({ event: "auth.keys_reload_failed", keptKeyCount: 2 }));
    restoreKeys();
  });

  it("ends the open WatchBudget streams of a revoked or narrowed key at the reload, and only those", async () => {
    const [revokedKey, narrowedKey, keptKey] = [generateApiKey(), generateApiKey(), generateApiKey()];
    const before = [
      { id: "ops", role: "admin" as const, key: adminKey },
      { id: "revoked", role: "project" as const, key: revokedKey, projects: ["billing"] },
      { id: "narrowed", role: "project" as const, key: narrowedKey, projects: ["billing", "team-a/x"] },
      { id: "kept", role: "project" as const, key: keptKey, projects: ["billing"] },
    ];
    for (const protocol of Object.keys(clientsFor(server.url))) {
      writeKeysFile(before, keysFile);
      expect(server.reload()).toBe(true);
      const open = async (key: string) => {
        const stream = (clientsFor(server.url, key)[protocol] as BudgetClient)
          .watchBudget({ projectId: "billing" })
          [Symbol.asyncIterator]();
        expect((await stream.next()).done, protocol).toBe(false); // the snapshot
        return stream;
      };
      const [revoked, narrowed, kept] = [await open(revokedKey), await open(narrowedKey), await open(keptKey)];
      writeKeysFile([before[0]!, { ...before[2]!, projects: ["team-a/x"] }, before[3]!], keysFile);
      expect(server.reload()).toBe(true);
      const revokedEnd = ConnectError.from(await within(revoked.next(), "stream did not end").catch((e: unknown) => e));
      expect([protocol, revokedEnd.code, revokedEnd.rawMessage]).toEqual([
        protocol,
        Code.Unauthenticated,
        'API key "revoked" was revoked; this stream ends',
      ]);
      const narrowedEnd = ConnectError.from(await within(narrowed.next(), "stream did not end").catch((e: unknown) => e));
      expect([protocol, narrowedEnd.code, narrowedEnd.rawMessage]).toEqual([
        protocol,
        Code.PermissionDenied,
        'key "narrowed" does not cover project "billing"',
      ]);
      // The kept key's stream goes on and sees the next event.
      await (clientsFor(server.url, adminKey)["grpc h2c"] as BudgetClient).setProjectBudget({
        projectId: "billing",
        limitNanos: 1_000n + BigInt(protocol.length),
      });
      const event = await within(kept.next(), "no watch event");
      expect(event.done, protocol).toBe(false);
      await kept.return?.();
      // The ended streams gave their subscriptions back (bounded wait: the
      // handlers see their calls' signals aborted asynchronously).
      for (let i = 0; i < 100 && server.ledger.events.subscriberCount > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect([protocol, server.ledger.events.subscriberCount]).toEqual([protocol, 0]);
    }
    restoreKeys();
  });

  it("refuses a key from its expiry on, and ends its open streams at that instant without a reload", async () => {
    const soonKey = generateApiKey();
    const pastKey = generateApiKey();
    const expiresAtMs = Date.now() + 1_500;
    const withExpiry = (path: string) => {
      const doc = JSON.parse(readFileSync(path, "utf8")) as { keys: Array<Record<string, unknown>> };
      doc.keys.push({
        id: "soon",
        role: "project",
        sha256: hashApiKey(soonKey),
        projects: ["billing"],
        expiresAt: new Date(expiresAtMs).toISOString(),
      });
      doc.keys.push({ id: "past", role: "project", sha256: hashApiKey(pastKey), projects: ["billing"], expiresAt: "2001-01-01T00:00:00Z" });
      writeFileSync(path, JSON.stringify(doc));
    };
    withExpiry(keysFile);
    expect(server.reload()).toBe(true);
    const client = (key: string) => clientsFor(server.url, key)["grpc h2c"] as BudgetClient;
    // Operators can alert before a key expires.
    const metrics = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${adminKey}` } })).text();
    expect(metrics).toContain(`tally_api_key_expiry_timestamp_seconds{key_id="soon"} ${expiresAtMs / 1000}`);
    expect(metrics).toContain(`tally_api_key_expiry_timestamp_seconds{key_id="past"} 978307200`);
    expect(metrics).not.toContain(`tally_api_key_expiry_timestamp_seconds{key_id="ops"}`);
    const past = ConnectError.from(
      await client(pastKey)
        .getProjectCost({ projectId: "billing" })
        .catch((e: unknown) => e),
    );
    expect([past.code, past.rawMessage]).toEqual([Code.Unauthenticated, 'API key "past" expired at 2001-01-01T00:00:00.000Z']);
    const stream = client(soonKey).watchBudget({ projectId: "billing" })[Symbol.asyncIterator]();
    expect((await stream.next()).done).toBe(false); // the snapshot, before expiry
    // No event is due and nothing reloads: the stream ends at the expiry by itself.
    const ended = ConnectError.from(await within(stream.next(), "stream did not end").catch((e: unknown) => e));
    expect([ended.code, ended.rawMessage]).toEqual([
      Code.Unauthenticated,
      `API key "soon" expired at ${new Date(expiresAtMs).toISOString()}`,
    ]);
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAtMs);
    expect(await codeOf(client(soonKey).getProjectCost({ projectId: "billing" }))).toBe(Code.Unauthenticated);
    restoreKeys();
  });

  it("picks up a changed keys file by itself (file watch)", async () => {
    const watchedKey = generateApiKey();
    writeKeysFile(
      [
        { id: "ops", role: "admin", key: adminKey },
        { id: "watched", role: "project", key: watchedKey, projects: ["billing"] },
      ],
      keysFile,
    );
    const client = clientsFor(server.url, watchedKey)["grpc h2c"] as BudgetClient;
    // Bounded wait: the file is polled every couple of seconds.
    let code: Code | "ok" = Code.Unauthenticated;
    for (let i = 0; i < 100 && code !== "ok"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      code = await codeOf(client.getProjectCost({ projectId: "billing" }));
    }
    expect(code).toBe("ok");
  });
});

describe("safe defaults at start", () => {
  it("runs open on loopback without keys, and says so in its log", async () => {
    const log = new LogCapture();
    const server = await start({}, log);
    try {
      expect(
        await codeOf((clientsFor(server.url)["grpc h2c"] as BudgetClient).setProjectBudget({ projectId: "open", limitNanos: 1n })),
      ).toBe("ok");
      expect(log.events()).toContainEqual(expect.objectContaining({ event: "auth.disabled_loopback", level: 40 }));
      expect(log.events()).toContainEqual(expect.objectContaining({ event: "server.listening", auth: "open" }));
    } finally {
      await server.close();
    }
  });

  it.each(["0.0.0.0", "::", "192.0.2.1"])("refuses to listen on %s without keys, before opening anything", async (host) => {
    const error = await start({ host }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StartupError);
    expect((error as Error).message).toMatch(/refusing to listen on .* without API keys/);
    expect((error as Error).message).toMatch(/TALLY_KEYS_FILE/);
  });

  it("refuses to start with a broken keys file or a short environment key", async () => {
    const broken = writeKeysFile([]);
    writeFileSync(broken, JSON.stringify({ keys: [{ id: "a", role: "project", sha256: hashApiKey(adminKey) }] }));
    await expect(start({ keysFile: broken })).rejects.toThrow(StartupError);
    await expect(start({ keysFile: "/nonexistent/keys.json" })).rejects.toThrow(/TALLY_KEYS_FILE/);
    await expect(start({ adminKeys: "too-short" })).rejects.toThrow(/32\.\.256 characters/);
  });

  it("takes admin keys from the environment value", async () => {
    const server = await start({ adminKeys: adminKey });
    try {
      expect(
        await codeOf((clientsFor(server.url, adminKey)["grpc h2c"] as BudgetClient).setProjectBudget({ projectId: "env", limitNanos: 1n })),
      ).toBe("ok");
      expect(await codeOf((clientsFor(server.url)["grpc h2c"] as BudgetClient).getProjectCost({ projectId: "env" }))).toBe(
        Code.Unauthenticated,
      );
    } finally {
      await server.close();
    }
  });
});
