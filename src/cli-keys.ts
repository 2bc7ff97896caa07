// `tally keys create|list|revoke`: API keys and the keys file. Unlike the other
// client commands these do not talk to a running Tally (the API has no key
// management, on purpose: a stolen admin key must not be able to mint more, list
// the others or revoke the operators'). They work on the keys file itself
// (TALLY_KEYS_FILE, docs/security.md), and the server reloads the file by
// itself (stat poll every 2 s, or SIGHUP).
//
// The plain key is printed once, by create, to stdout, and never written
// anywhere: the file holds only its SHA-256, which list never shows either.
import {
  closeSync,
  constants,
  fsyncSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
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
import { apiKeysFileBytesMax, keysFileWatchIntervalMs } from "./limits.ts";

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

/** An entry as the keys file stores it (src/auth/keys.ts). */
export interface KeysFileEntry {
  id: string;
  role: "admin" | "project";
  sha256: string;
  projects?: string[];
  projectPrefixes?: string[];
  expiresAt?: string;
  rateLimitPerSecond?: number;
}

export class KeysCommandError extends Error {
  override name = "KeysCommandError";
}

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

/** Adds `entry` to the keys file at `path` (created if missing). The existing
 * file must be valid and must not have the id already. Returns the path written. */
export function addToKeysFile(path: string, entry: KeysFileEntry): string {
  return rewriteKeysFile(path, { create: true, outcome: "with the new key" }, (current) => {
    if (current === null) return { keys: [entry] };
    if (current.keys.some((k) => k.id === entry.id))
      throw new KeysCommandError(
        `${path} already has a key with id "${entry.id}"; choose another --id (to replace a key, remove its entry first)`,
      );
    current.doc.keys.push(entry);
    return current.doc;
  });
}

/** Removes the entry with `id` from the keys file at `path` and returns it,
 * with the keys that remain (parsed with the server's rules, never their
 * secrets) and the path written. */
export function removeFromKeysFile(path: string, id: string): { removed: ApiKey; remaining: ApiKey[]; written: string } {
  let removed: ApiKey | undefined;
  let remaining: ApiKey[] = [];
  const written = rewriteKeysFile(path, { create: false, outcome: `without key "${id}"` }, (current) => {
    const { doc, keys } = current!; // never null without `create`
    const index = keys.findIndex((k) => k.id === id);
    if (index < 0) {
      // TALLY_ADMIN_KEYS keys get these ids in the server; they never come from a file.
      const hint = id.startsWith("env-admin-")
        ? `; "${id}" looks like a TALLY_ADMIN_KEYS key: remove it from that variable and restart Tally`
        : `; \`tally keys list --file ${path}\` shows the ids`;
      throw new KeysCommandError(`${path} has no key with id ${JSON.stringify(id)}; nothing was changed${hint}`);
    }
    removed = keys[index];
    remaining = keys.filter((_, i) => i !== index);
    // The same index: parseKeysFile maps doc.keys one to one, in order.
    doc.keys.splice(index, 1);
    return doc;
  });
  return { removed: removed!, remaining, written };
}

/** The keys file as read under its lock: the document as written (so a
 * rewrite changes only the entry in question) and its keys as the server
 * parses them. */
interface KeysFileContents {
  doc: { keys: unknown[] };
  keys: ApiKey[];
}

/** Replaces the keys file at `path` with `change(current)` atomically: the new
 * document is written to a temporary file in the same directory, flushed, and
 * renamed over the old one, so the server (and a crash) only ever sees the old
 * file or the new one. Without `create` a missing file is an error; with it
 * `current` is null then. The existing file must be valid (it is parsed with the
 * server's own rules) and so must the result. A lock file next to it keeps
 * two concurrent runs from losing one of their changes. Returns the path
 * written. */
function rewriteKeysFile(
  path: string,
  options: { create: boolean; outcome: string },
  change: (current: KeysFileContents | null) => { keys: unknown[] },
): string {
  // Follow a symlink (e.g. to a mounted secret) and replace the file it points
  // to; keep that file's permissions (a new file is readable by its owner only).
  let target = path;
  let mode = 0o600;
  try {
    target = realpathSync(path);
    const stat = statSync(target);
    if (!stat.isFile()) throw new KeysCommandError(`${path} is not a regular file`);
    mode = stat.mode & 0o777;
  } catch (error) {
    if (error instanceof KeysCommandError) throw error;
    if ((error as NodeJS.ErrnoException).code !== "ENOENT")
      throw new KeysCommandError(`cannot read the keys file ${path}: ${(error as Error).message}`);
    // Said here rather than after the lock: in a missing directory the lock
    // could not be created, and that message would hide the real problem.
    if (!options.create) throw missingFile(path);
  }

  const lock = `${target}.lock`;
  try {
    closeSync(openSync(lock, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new KeysCommandError(
        `${lock} exists: another \`tally keys create\` or \`tally keys revoke\` is writing ${path}. If none is running, remove the lock file and retry.`,
      );
    }
    throw new KeysCommandError(`cannot create ${lock}: ${(error as Error).message}`);
  }
  const temp = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
  let tempCreated = false;
  try {
    const existing = readIfExists(target, path);
    if (existing === null && !options.create) throw missingFile(path);
    const current =
      existing === null
        ? null
        : {
            keys: parseKeysFile(existing, `keys file ${path} (fix it first; nothing was changed)`),
            doc: JSON.parse(existing) as { keys: unknown[] },
          };
    const text = `${JSON.stringify(change(current), null, 2)}\n`;
    // The result must still be a file the server accepts (key count, size).
    if (Buffer.byteLength(text) > apiKeysFileBytesMax)
      throw new KeysCommandError(`${path} would grow past ${apiKeysFileBytesMax} bytes; nothing was changed`);
    parseKeysFile(text, `keys file ${path} ${options.outcome} (nothing was changed)`);
    const fd = openSync(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, mode);
    tempCreated = true;
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, target);
    tempCreated = false;
    // Make the rename itself durable.
    const dirFd = openSync(dirname(target), constants.O_RDONLY);
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
    return target;
  } catch (error) {
    if (tempCreated) unlinkSync(temp);
    if (error instanceof KeysCommandError || error instanceof KeysError) throw error;
    throw new KeysCommandError(`cannot write the keys file ${path}: ${(error as Error).message}`);
  } finally {
    unlinkSync(lock);
  }
}

const missingFile = (path: string) => new KeysCommandError(`there is no keys file at ${path}; nothing was changed`);

function readIfExists(target: string, path: string): string | null {
  try {
    const size = statSync(target).size;
    if (size > apiKeysFileBytesMax)
      throw new KeysCommandError(`${path} is ${size} bytes; a keys file holds at most ${apiKeysFileBytesMax}`);
    return readFileSync(target, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    if (error instanceof KeysCommandError) throw error;
    throw new KeysCommandError(`cannot read the keys file ${path}: ${(error as Error).message}`);
  }
}
