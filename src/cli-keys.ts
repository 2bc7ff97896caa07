import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import {
  checkKeysFile,
  generateApiKey,
  hashApiKey,
  KeysError,
  keysFileExposure,
  parseInstant,
  parseKeysFile,
  type ApiKey,
} from "./auth/keys.ts";
import { keysFileWatchIntervalMs } from "./limits.ts";

import { KeysCommandError, type KeysFileEntry, addToKeysFile, readIfExists, removeFromKeysFile } from "./cli-keys-file.ts";
export { KeysCommandError, type KeysFileEntry, addToKeysFile, removeFromKeysFile } from "./cli-keys-file.ts";

export const keysUsage = `  keys create --id ID --role admin     make a new API key (printed once) and its keys-file entry
  keys create --id ID --role project   a key for some projects only: repeat --project ID
    [--project ID]... [--prefix P]...  and/or --prefix P ("team-a/" covers "team-a/chat")
    [--file PATH] [--json]             --file adds the entry to that keys file (created if
                                       missing); a running Tally reloads it by itself.
    [--expires-in 90d | --expires-at T] the key stops working then (d, h or m; or an RFC 3339
                                       instant): calls are refused, open streams end.
    [--rate-limit N]                   at most N calls per second (bursts up to N), then
                                       RESOURCE_EXHAUSTED; per Tally process.
  keys list [--file PATH] [--json]     the keys in the file: id, role, projects/prefixes
                                       expiry and rate limit (never their hashes)
  keys revoke --id ID [--file PATH]    remove a key's entry from the file: a running Tally
                                       refuses the key once it reloads the file (within
                                       ${keysFileWatchIntervalMs / 1000} s, or at once on SIGHUP). Revoking the last admin
                                       key is allowed, with a warning.
                                       keys works on the file, not through the API: run it
                                       where the keys file is; list and revoke read
                                       $TALLY_KEYS_FILE when --file is not given.`;

interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

const keysOptions = {
  id: { type: "string" },
  role: { type: "string" },
  project: { type: "string", multiple: true, default: [] as string[] },
  prefix: { type: "string", multiple: true, default: [] as string[] },
  file: { type: "string" },
  "expires-in": { type: "string" },
  "expires-at": { type: "string" },
  "rate-limit": { type: "string" },
  json: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} satisfies ParseArgsOptionsConfig;
type KeysOptions = ReturnType<typeof parseArgs<{ options: typeof keysOptions; allowPositionals: true; strict: true }>>["values"];

/** Which options each action reads: any other given is a usage error, not
 * silently ignored (a `revoke --role admin` must not look like a filter). */
const optionsOf = {
  create: ["id", "role", "project", "prefix", "file", "json", "expires-in", "expires-at", "rate-limit"],
  list: ["file", "json"],
  revoke: ["id", "file"],
} as const satisfies Record<string, ReadonlyArray<keyof KeysOptions>>;
type Action = keyof typeof optionsOf;

/** Runs `tally keys ...` (argv without "keys"); resolves with the exit code:
 * 0 ok, 1 the file could not be read or updated (or has no such key), 2 bad usage. */
export async function runKeysCommand(argv: readonly string[], io: Io = defaultIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values: KeysOptions;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: [...argv], allowPositionals: true, strict: true, options: keysOptions }));
  } catch (error) {
    return usage(io, (error as Error).message);
  }
  if (values.help) {
    io.out(`usage:\n${keysUsage}`);
    return 0;
  }
  const action = positionals[0];
  if (positionals.length !== 1 || !Object.hasOwn(optionsOf, action!))
    return usage(io, `keys takes "create", "list" or "revoke", not ${JSON.stringify(positionals.join(" "))}`);
  const allowed: readonly string[] = optionsOf[action as Action];
  const given = Object.entries(values).filter(
    ([name, value]) => name !== "help" && value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0),
  );
  const stray = given.find(([name]) => !allowed.includes(name));
  if (stray !== undefined) return usage(io, `keys ${action} does not take --${stray[0]}`);
  try {
    switch (action as Action) {
      case "create":
        return create(values, io, Date.now());
      case "list":
        return list(keysFileOf(values, env, "list"), values.json, io);
      case "revoke":
        return revoke(keysFileOf(values, env, "revoke"), values.id, io);
    }
  } catch (error) {
    if (error instanceof UsageError) return usage(io, error.message);
    if (error instanceof KeysCommandError || error instanceof KeysError) {
      io.err(`tally: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

class UsageError extends Error {
  override name = "UsageError";
}

/** list and revoke only make sense on a file, so they fall back to the one the
 * server reads; create without --file prints the entry instead (it was like
 * that first, and a key printed for pasting touches no file by surprise). */
function keysFileOf(values: KeysOptions, env: NodeJS.ProcessEnv, action: Action): string {
  // An empty value (TALLY_KEYS_FILE= ) means unset, as for the server (src/config.ts).
  const file = values.file ?? (env.TALLY_KEYS_FILE || undefined);
  if (file === undefined)
    throw new UsageError(`keys ${action} needs --file PATH or TALLY_KEYS_FILE: it works on the keys file, not through the API`);
  if (file === "") throw new UsageError("--file must not be empty");
  return file;
}

/** --expires-in "90d" / "12h" / "30m", or --expires-at an RFC 3339 instant
 * (which must be in the future: a key born expired is a mistake). */
function expiryOf(values: KeysOptions, nowMs: number): string | undefined {
  const inText = values["expires-in"];
  const atText = values["expires-at"];
  if (inText !== undefined && atText !== undefined) throw new UsageError("give --expires-in or --expires-at, not both");
  let atMs: number;
  if (inText !== undefined) {
    const match = /^([1-9]\d{0,5})([dhm])$/.exec(inText);
    if (match === null)
      throw new UsageError(`--expires-in ${JSON.stringify(inText)} must be a whole number of days, hours or minutes, e.g. 90d, 12h, 30m`);
    const unitMs = { d: 86_400_000, h: 3_600_000, m: 60_000 }[match[2] as "d" | "h" | "m"];
    atMs = nowMs + Number(match[1]) * unitMs;
  } else if (atText !== undefined) {
    try {
      atMs = parseInstant(atText, "--expires-at");
    } catch (error) {
      if (error instanceof KeysError) throw new UsageError(error.message);
      throw error;
    }
    if (atMs <= nowMs) throw new UsageError(`--expires-at ${atText} is not in the future`);
  } else {
    return undefined;
  }
  return new Date(atMs).toISOString();
}

function create(values: KeysOptions, io: Io, nowMs: number): number {
  const { id, role, project: projects, prefix: projectPrefixes, file, json } = values;
  if (id === undefined) throw new UsageError("keys create needs --id (a name for the key, logged with every call it makes)");
  if (role !== "admin" && role !== "project")
    throw new UsageError(`--role must be "admin" or "project"${role === undefined ? "" : `, not ${JSON.stringify(role)}`}`);
  if (role === "admin" && projects.length + projectPrefixes.length > 0)
    throw new UsageError("an admin key covers every project: drop --project/--prefix, or use --role project");
  if (role === "project" && projects.length + projectPrefixes.length === 0)
    throw new UsageError("a project key needs at least one --project ID or --prefix P");
  // TALLY_ADMIN_KEYS keys are named env-admin-1, -2...: a file id like that would clash.
  if (id.startsWith("env-admin-")) throw new UsageError(`ids starting with "env-admin-" are reserved for TALLY_ADMIN_KEYS`);

  const expiresAt = expiryOf(values, nowMs);
  const key = generateApiKey();
  const entry: KeysFileEntry = { id, role, sha256: hashApiKey(key) };
  if (projects.length > 0) entry.projects = projects;
  if (projectPrefixes.length > 0) entry.projectPrefixes = projectPrefixes;
  if (expiresAt !== undefined) entry.expiresAt = expiresAt;
  const rateText = values["rate-limit"];
  if (rateText !== undefined) {
    // Range and wholeness are the keys file's rules, checked below with them.
    if (!/^\d{1,9}$/.test(rateText))
      throw new UsageError(`--rate-limit ${JSON.stringify(rateText)} must be a whole number of calls per second`);
    entry.rateLimitPerSecond = Number(rateText);
  }
  try {
    // The same rules the server applies (id alphabet, scopes, limits).
    parseKeysFile(JSON.stringify({ keys: [entry] }), "the new key");
  } catch (error) {
    if (error instanceof KeysError) throw new UsageError(error.message);
    throw error;
  }

  const written = file === undefined ? undefined : addToKeysFile(file, entry);
  if (json) {
    io.out(JSON.stringify({ id, key, entry, ...(written === undefined ? {} : { file: written }) }, null, 2));
    return 0;
  }
  // stdout gets the key alone on its line (easy to capture in a script); the
  // explanations go to stderr.
  io.out(key);
  if (written !== undefined) {
    io.err(`tally: added ${role} key "${id}" to ${written}; a running Tally picks it up within seconds (or send it SIGHUP).`);
  } else {
    io.out(JSON.stringify(entry));
    io.err(`tally: add the entry above to the "keys" array of the keys file (TALLY_KEYS_FILE), or run again with --file PATH.`);
  }
  io.err(
    `tally: the key above is shown only this once and is not stored anywhere: give it to its user now (as TALLY_API_KEY or "Authorization: Bearer <key>").`,
  );
  return 0;
}

/** The scope of a key as people read it; the hash stays out of every output. */
function scopeOf(key: ApiKey): { projects?: string[]; projectPrefixes?: string[] } {
  return {
    ...(key.projects.size > 0 ? { projects: [...key.projects] } : {}),
    ...(key.projectPrefixes.length > 0 ? { projectPrefixes: [...key.projectPrefixes] } : {}),
  };
}

function list(path: string, json: boolean, io: Io, nowMs = Date.now()): number {
  const text = readIfExists(path, path);
  if (text === null) throw new KeysCommandError(`there is no keys file at ${path}`);
  // The server's own check (size, format, duplicate ids and secrets): a file
  // it would reject is reported, not half-listed.
  const keys = checkKeysFile(path, `keys file ${path}`);
  const exposure = keysFileExposure(path);
  if (exposure !== undefined) io.err(`tally: warning: ${exposure}`);
  if (json) {
    io.out(
      JSON.stringify(
        {
          file: path,
          keys: keys.map((k) => ({
            id: k.id,
            role: k.role,
            ...scopeOf(k),
            ...(k.expiresAtMs === null ? {} : { expiresAt: new Date(k.expiresAtMs).toISOString(), expired: k.expiresAtMs <= nowMs }),
            ...(k.rateLimitPerSecond === null ? {} : { rateLimitPerSecond: k.rateLimitPerSecond }),
          })),
        },
        null,
        2,
      ),
    );
    return 0;
  }
  if (keys.length === 0) {
    io.err(
      `tally: ${path} has no keys: a Tally reading it refuses every API call (except with TALLY_ADMIN_KEYS keys). Add one with \`tally keys create\`.`,
    );
    return 0;
  }
  const expiry = (k: ApiKey) =>
    k.expiresAtMs === null ? "never" : `${new Date(k.expiresAtMs).toISOString()}${k.expiresAtMs <= nowMs ? " (expired)" : ""}`;
  const rows = [
    ["ID", "ROLE", "EXPIRES", "LIMIT", "SCOPE"],
    ...keys.map((k) => {
      const { projects, projectPrefixes } = scopeOf(k);
      const scope =
        k.role === "admin"
          ? "all projects"
          : [projects && `projects: ${projects.join(", ")}`, projectPrefixes && `prefixes: ${projectPrefixes.join(", ")}`]
              .filter(Boolean)
              .join("; ");
      return [k.id, k.role, expiry(k), k.rateLimitPerSecond === null ? "-" : `${k.rateLimitPerSecond}/s`, scope];
    }),
  ];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) io.out(row.map((cell, i) => (i < 4 ? cell.padEnd(widths[i]!) : cell)).join("  "));
  return 0;
}

function revoke(path: string, id: string | undefined, io: Io): number {
  if (id === undefined || id === "") throw new UsageError("keys revoke needs --id (the key's id, as `tally keys list` shows it)");
  const { removed, remaining, written } = removeFromKeysFile(path, id);
  io.err(
    `tally: revoked ${removed.role} key "${removed.id}" (removed from ${written}); a running Tally refuses it once it reloads the file, within ${keysFileWatchIntervalMs / 1000} s (or at once on SIGHUP).`,
  );
  // An empty file or one without admin keys does not switch keys off: the
  // server stays in key mode (docs/security.md, "Safe defaults"), so nobody can
  // change budgets or read the fleet until an admin key is added back.
  if (remaining.length === 0) {
    io.err(
      `tally: warning: ${written} now has no keys: once Tally reloads it, every API call is refused (UNAUTHENTICATED) except with TALLY_ADMIN_KEYS keys, if any; Tally does not fall back to running without keys. Add one with \`tally keys create --id ID --role admin --file ${path}\`.`,
    );
  } else if (removed.role === "admin" && !remaining.some((k) => k.role === "admin")) {
    io.err(
      `tally: warning: "${removed.id}" was the last admin key in ${written}: once Tally reloads it, only TALLY_ADMIN_KEYS keys (if any) can set budgets, list projects, read /metrics or use the dashboard; project keys keep working, and Tally does not fall back to running without keys. Add one with \`tally keys create --id ID --role admin --file ${path}\`.`,
    );
  }
  return 0;
}

function usage(io: Io, message: string): number {
  io.err(`tally: ${message}\n\nusage:\n${keysUsage}`);
  return 2;
}
