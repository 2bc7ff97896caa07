// `tally keys create`: makes a new API key and its keys-file entry. Unlike the
// other client commands it does not talk to a running Tally (the API has no key
// management, on purpose: a stolen admin key must not be able to mint more).
// It works on the keys file itself (TALLY_KEYS_FILE, docs/security.md): with
// --file it adds the entry there, and the server reloads the file by itself
// (stat poll every 2 s, or SIGHUP).
//
// The plain key is printed once, to stdout, and never written anywhere: the file
// holds only its SHA-256.
import { closeSync, constants, fsyncSync, openSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { generateApiKey, hashApiKey, KeysError, parseKeysFile, type ApiKey } from "./api/keys.ts";
import { apiKeysFileBytesMax } from "./limits.ts";

export const keysUsage = `  keys create --id ID --role admin     make a new API key (printed once) and its keys-file entry
  keys create --id ID --role project   a key for some projects only: repeat --project ID
    [--project ID]... [--prefix P]...  and/or --prefix P ("team-a/" covers "team-a/chat")
    [--file PATH] [--json]             --file adds the entry to that keys file (created if
                                       missing); a running Tally reloads it by itself.
                                       keys works on the file, not through the API: run it
                                       where the keys file is (TALLY_KEYS_FILE).`;

/** An entry as the keys file stores it (src/api/keys.ts). */
export interface KeysFileEntry {
  id: string;
  role: "admin" | "project";
  sha256: string;
  projects?: string[];
  projectPrefixes?: string[];
}

export class KeysCommandError extends Error {
  override name = "KeysCommandError";
}

interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: Io = {
  out: (line) => process.stdout.write(line + "\n"),
  err: (line) => process.stderr.write(line + "\n"),
};

/** Runs `tally keys ...` (argv without "keys"); resolves with the exit code:
 * 0 ok, 1 the file could not be updated, 2 bad usage. */
export async function runKeysCommand(argv: readonly string[], io: Io = defaultIo): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        id: { type: "string" },
        role: { type: "string" },
        project: { type: "string", multiple: true, default: [] },
        prefix: { type: "string", multiple: true, default: [] },
        file: { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    return usage(io, (error as Error).message);
  }
  if (args.values.help) {
    io.out(`usage:\n${keysUsage}`);
    return 0;
  }
  const { id, role, project: projects, prefix: projectPrefixes, file, json } = args.values;
  if (args.positionals.length !== 1 || args.positionals[0] !== "create") return usage(io, `keys takes "create", not ${JSON.stringify(args.positionals.join(" "))}`);
  if (id === undefined) return usage(io, "keys create needs --id (a name for the key, logged with every call it makes)");
  if (role !== "admin" && role !== "project") return usage(io, `--role must be "admin" or "project"${role === undefined ? "" : `, not ${JSON.stringify(role)}`}`);
  if (role === "admin" && projects.length + projectPrefixes.length > 0) return usage(io, "an admin key covers every project: drop --project/--prefix, or use --role project");
  if (role === "project" && projects.length + projectPrefixes.length === 0) return usage(io, "a project key needs at least one --project ID or --prefix P");
  // TALLY_ADMIN_KEYS keys are named env-admin-1, -2...: a file id like that would clash.
  if (id.startsWith("env-admin-")) return usage(io, `ids starting with "env-admin-" are reserved for TALLY_ADMIN_KEYS`);

  const key = generateApiKey();
  const entry: KeysFileEntry = { id, role, sha256: hashApiKey(key) };
  if (projects.length > 0) entry.projects = projects;
  if (projectPrefixes.length > 0) entry.projectPrefixes = projectPrefixes;
  try {
    // The same rules the server applies (id alphabet, scopes, limits).
    parseKeysFile(JSON.stringify({ keys: [entry] }), "the new key");
  } catch (error) {
    if (error instanceof KeysError) return usage(io, error.message);
    throw error;
  }

  let written: string | undefined;
  if (file !== undefined) {
    try {
      written = addToKeysFile(file, entry);
    } catch (error) {
      if (error instanceof KeysCommandError || error instanceof KeysError) {
        io.err(`tally: ${error.message}`);
        return 1;
      }
      throw error;
    }
  }

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
  io.err(`tally: the key above is shown only this once and is not stored anywhere: give it to its user now (as TALLY_API_KEY or "Authorization: Bearer <key>").`);
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
    if (current.keys.some((k) => k.id === entry.id)) throw new KeysCommandError(`${path} already has a key with id "${entry.id}"; choose another --id (to replace a key, remove its entry first)`);
    current.doc.keys.push(entry);
    return current.doc;
  });
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
function rewriteKeysFile(path: string, options: { create: boolean; outcome: string }, change: (current: KeysFileContents | null) => { keys: unknown[] }): string {
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
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw new KeysCommandError(`cannot read the keys file ${path}: ${(error as Error).message}`);
    // Said here rather than after the lock: in a missing directory the lock
    // could not be created, and that message would hide the real problem.
    if (!options.create) throw missingFile(path);
  }

  const lock = `${target}.lock`;
  try {
    closeSync(openSync(lock, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new KeysCommandError(`${lock} exists: another \`tally keys create\` or \`tally keys revoke\` is writing ${path}. If none is running, remove the lock file and retry.`);
    }
    throw new KeysCommandError(`cannot create ${lock}: ${(error as Error).message}`);
  }
  const temp = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
  let tempCreated = false;
  try {
    const existing = readIfExists(target, path);
    if (existing === null && !options.create) throw missingFile(path);
    const current = existing === null ? null : { keys: parseKeysFile(existing, `keys file ${path} (fix it first; nothing was changed)`), doc: JSON.parse(existing) as { keys: unknown[] } };
    const text = JSON.stringify(change(current), null, 2) + "\n";
    // The result must still be a file the server accepts (key count, size).
    if (Buffer.byteLength(text) > apiKeysFileBytesMax) throw new KeysCommandError(`${path} would grow past ${apiKeysFileBytesMax} bytes; nothing was changed`);
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
    if (size > apiKeysFileBytesMax) throw new KeysCommandError(`${path} is ${size} bytes; a keys file holds at most ${apiKeysFileBytesMax}`);
    return readFileSync(target, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    if (error instanceof KeysCommandError) throw error;
    throw new KeysCommandError(`cannot read the keys file ${path}: ${(error as Error).message}`);
  }
}
