// The keys file as `tally keys` edits it: read, change, validate as the server
// would, and replace atomically (write beside, fsync, rename).
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
import { KeysError, parseKeysFile, type ApiKey } from "./auth/keys.ts";
import { apiKeysFileBytesMax } from "./limits.ts";

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
export interface KeysFileContents {
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
export function rewriteKeysFile(
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

export const missingFile = (path: string) => new KeysCommandError(`there is no keys file at ${path}; nothing was changed`);

export function readIfExists(target: string, path: string): string | null {
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
