// API keys: what they look like, how they are stored (hashed), and where they
// come from (a JSON file and/or the environment). Authorization decisions live
// in auth.ts; this module only knows keys.
//
// Why SHA-256 and not bcrypt/scrypt/argon2: those slow hashes exist to protect
// low-entropy secrets (passwords) against offline guessing. Tally's keys are 256
// random bits (generateApiKey), so a single SHA-256 is already infeasible to
// invert, and checking a key costs microseconds on every call instead of tens of
// milliseconds. Keys given in plain text (TALLY_ADMIN_KEYS) must be at least
// apiKeyLengthMin characters for the same reason.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import {
  apiKeyLengthMax,
  apiKeyLengthMin,
  apiKeysFileBytesMax,
  apiKeysMax,
  idLengthMax,
  idPattern,
  keyProjectsMax,
  keyRateLimitPerSecondMax,
} from "../limits.ts";

/** admin: every RPC (including SetProjectBudget) on every project.
 * project: the project-scoped RPCs (record, check, holds, reads) on the
 * projects the key covers. */
export type KeyRole = "admin" | "project";

export interface ApiKey {
  /** A name for the key, safe to log (never the key itself). */
  readonly id: string;
  readonly role: KeyRole;
  /** SHA-256 of the key's UTF-8 bytes. */
  readonly sha256: Buffer;
  /** Exact project ids a project key covers. */
  readonly projects: ReadonlySet<string>;
  /** Project id prefixes a project key covers ("team-a/" covers "team-a/chat"). */
  readonly projectPrefixes: readonly string[];
  /** From this instant (epoch ms) the key is refused; null: no expiry. */
  readonly expiresAtMs: number | null;
  /** Calls per second this key may start (a token bucket holding one
   * second's worth, so bursts up to this many); null: unlimited. */
  readonly rateLimitPerSecond: number | null;
}

export class KeysError extends Error {
  override name = "KeysError";
}

/** A fresh key: "tally_" + 32 random bytes in base64url (43 characters). */
export function generateApiKey(): string {
  return `tally_${randomBytes(32).toString("base64url")}`;
}

/** The hex SHA-256 of a key, as the keys file stores it. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** An immutable set of keys, looked up by the hash of the presented key. */
export class KeyRing {
  readonly #byHash: Map<string, ApiKey>;
  readonly size: number;

  constructor(keys: readonly ApiKey[]) {
    this.#byHash = new Map();
    for (const key of keys) {
      const hex = key.sha256.toString("hex");
      if (this.#byHash.has(hex)) throw new KeysError(`key "${key.id}" has the same secret as key "${this.#byHash.get(hex)!.id}"`);
      this.#byHash.set(hex, key);
    }
    this.size = keys.length;
  }

  /** The key whose secret is `presented`, or undefined.
   *
   * The presented value is hashed before anything is compared, so the map
   * lookup's timing depends only on SHA-256(presented), which an attacker
   * cannot steer toward a stored hash; the final comparison is constant time
   * (timingSafeEqual) all the same. */
  find(presented: string): ApiKey | undefined {
    if (presented.length === 0 || presented.length > apiKeyLengthMax) return undefined;
    const digest = createHash("sha256").update(presented, "utf8").digest();
    const candidate = this.#byHash.get(digest.toString("hex"));
    if (candidate === undefined || !timingSafeEqual(candidate.sha256, digest)) return undefined;
    return candidate;
  }

  /** The key with this stored SHA-256 (hex), or undefined: how an open stream
   * re-checks its caller after a reload without ever keeping the key itself. */
  byDigest(sha256Hex: string): ApiKey | undefined {
    return this.#byHash.get(sha256Hex);
  }

  /** The keys that expire, and when (for metrics: ids and instants, no secrets). */
  expiries(): Array<{ id: string; expiresAtMs: number }> {
    return [...this.#byHash.values()].flatMap((k) => (k.expiresAtMs === null ? [] : [{ id: k.id, expiresAtMs: k.expiresAtMs }]));
  }

  get ids(): string[] {
    return [...this.#byHash.values()].map((k) => k.id);
  }
}

/** The keys file (TALLY_KEYS_FILE), version 1:
 *
 *   {
 *     "keys": [
 *       { "id": "ops", "role": "admin", "sha256": "<64 hex digits>" },
 *       { "id": "team-a-agents", "role": "project", "sha256": "<64 hex digits>",
 *         "projects": ["billing-bot"], "projectPrefixes": ["team-a/"],
 *         "expiresAt": "2027-01-31T00:00:00Z" }
 *     ]
 *   }
 *
 * "sha256" is hashApiKey(key): the file never holds a usable secret. A project
 * key needs at least one of "projects" / "projectPrefixes"; an admin key has
 * neither. "expiresAt" (optional, RFC 3339 with a zone) ends the key at that
 * instant without a reload: calls are refused and its open streams end.
 * "rateLimitPerSecond" (optional) caps the calls the key may start per second
 * (RESOURCE_EXHAUSTED beyond). Unknown fields are an error (a typo must not widen or narrow a key
 * silently). */
/** The characters a project prefix must end with: the id alphabet's
 * punctuation, which is how ids are namespaced ("team-a/chat", "acme:bot"). */
export const projectPrefixSeparators = ["/", ":", ".", "-", "_"];

export function parseKeysFile(text: string, source: string): ApiKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw new KeysError(`${source}: not valid JSON (${(error as Error).message})`);
  }
  if (!isObject(doc)) throw new KeysError(`${source}: expected an object {"keys": [...]}`);
  unknownFields(doc, ["keys"], source);
  if (!Array.isArray(doc.keys)) throw new KeysError(`${source}: "keys" must be an array`);
  if (doc.keys.length > apiKeysMax) throw new KeysError(`${source}: ${doc.keys.length} keys; at most ${apiKeysMax}`);
  const seenIds = new Set<string>();
  return doc.keys.map((entry: unknown, index: number) => {
    const where = `${source}: keys[${index}]`;
    if (!isObject(entry)) throw new KeysError(`${where}: expected an object`);
    unknownFields(entry, ["id", "role", "sha256", "projects", "projectPrefixes", "expiresAt", "rateLimitPerSecond"], where);
    const id = entry.id;
    if (typeof id !== "string" || id.length === 0 || id.length > idLengthMax || !idPattern.test(id)) {
      throw new KeysError(`${where}: "id" must be 1..${idLengthMax} characters of [A-Za-z0-9._:/-]`);
    }
    if (seenIds.has(id)) throw new KeysError(`${where}: duplicate id "${id}"`);
    seenIds.add(id);
    const role = entry.role;
    if (role !== "admin" && role !== "project") throw new KeysError(`${where} ("${id}"): "role" must be "admin" or "project"`);
    if (typeof entry.sha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(entry.sha256)) {
      throw new KeysError(`${where} ("${id}"): "sha256" must be the 64 hex digits of SHA-256(key)`);
    }
    const projects = stringList(entry.projects, `${where} ("${id}"): "projects"`);
    const projectPrefixes = stringList(entry.projectPrefixes, `${where} ("${id}"): "projectPrefixes"`);
    for (const prefix of projectPrefixes) {
      // "team" would also cover "team-b/chat" and "teamster": a prefix is a
      // namespace only up to a separator.
      if (!projectPrefixSeparators.includes(prefix.at(-1) as string)) {
        throw new KeysError(
          `${where} ("${id}"): prefix "${prefix}" does not end with a separator (${projectPrefixSeparators.join(" ")}), so it also covers ids such as "${prefix}x"; write "${prefix}/" (or list exact ids in "projects")`,
        );
      }
    }
    if (role === "admin" && projects.length + projectPrefixes.length > 0) {
      throw new KeysError(
        `${where} ("${id}"): an admin key covers every project; remove "projects"/"projectPrefixes" or use role "project"`,
      );
    }
    if (role === "project" && projects.length + projectPrefixes.length === 0) {
      throw new KeysError(`${where} ("${id}"): a project key needs "projects" or "projectPrefixes"`);
    }
    const expiresAtMs = entry.expiresAt === undefined ? null : parseInstant(entry.expiresAt, `${where} ("${id}"): "expiresAt"`);
    const rate = entry.rateLimitPerSecond;
    if (rate !== undefined && !(Number.isInteger(rate) && (rate as number) >= 1 && (rate as number) <= keyRateLimitPerSecondMax)) {
      throw new KeysError(`${where} ("${id}"): "rateLimitPerSecond" must be a whole number from 1 to ${keyRateLimitPerSecondMax}`);
    }
    const rateLimitPerSecond = rate === undefined ? null : (rate as number);
    return {
      id,
      role,
      sha256: Buffer.from(entry.sha256, "hex"),
      projects: new Set(projects),
      projectPrefixes,
      expiresAtMs,
      rateLimitPerSecond,
    };
  });
}

/** An RFC 3339 instant with an explicit offset ("2027-01-31T00:00:00Z"), as
 * epoch ms. A date without a time or zone is refused: it would mean a
 * different instant on every server. */
export function parseInstant(value: unknown, where: string): number {
  const rfc3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
  const ms = typeof value === "string" && rfc3339.test(value) ? Date.parse(value) : Number.NaN;
  if (!Number.isFinite(ms)) throw new KeysError(`${where} must be an RFC 3339 instant with a zone, e.g. "2027-01-31T00:00:00Z"`);
  return ms;
}

/** Admin keys from TALLY_ADMIN_KEYS: plain keys separated by commas (for
 * deployments that inject one secret). Hashed at once; the plain text is not kept. */
export function parseAdminKeysEnv(value: string): ApiKey[] {
  const keys = value
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
  return keys.map((key, index) => {
    if (key.length < apiKeyLengthMin || key.length > apiKeyLengthMax) {
      throw new KeysError(
        `TALLY_ADMIN_KEYS: key #${index + 1} is ${key.length} characters; keys must be ${apiKeyLengthMin}..${apiKeyLengthMax} characters (32 random bytes, e.g. tally_ + base64url: see docs/security.md)`,
      );
    }
    if (!/^[\x21-\x7e]+$/.test(key)) throw new KeysError(`TALLY_ADMIN_KEYS: key #${index + 1} must be printable ASCII without spaces`);
    return {
      id: `env-admin-${index + 1}`,
      role: "admin" as const,
      sha256: Buffer.from(hashApiKey(key), "hex"),
      projects: new Set<string>(),
      projectPrefixes: [],
      expiresAtMs: null,
      rateLimitPerSecond: null,
    };
  });
}

/** Why the keys file's permissions are too open, or undefined. It holds
 * only hashes of 256-bit keys, which cannot be turned back into keys, but it
 * is the list of who may do what and belongs to the service alone: readable
 * by every user of the machine is warned about. Group-readable (0640) is
 * not: that is how a file owned by root is given to the service's group.
 * (`tally keys create` makes new files 0600; Windows has no mode bits.) */
export function keysFileExposure(path: string): string | undefined {
  if (process.platform === "win32") return undefined;
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return undefined; // reading it reports the problem
  }
  if ((mode & 0o004) === 0) return undefined;
  return `the keys file ${path} is readable by every user (mode 0${mode.toString(8)}); it lists every key's hash and scope: chmod o-r ${path} (0600, or 0640 for the service's group)`;
}

/** A keys file read and checked exactly as the server does at start and on
 * reload (size, format, duplicate ids and secrets). */
export function checkKeysFile(path: string, source = `TALLY_KEYS_FILE ${path}`): ApiKey[] {
  const keys = readKeysFile(path, source);
  new KeyRing(keys);
  return keys;
}

export function readKeysFile(path: string, source = `TALLY_KEYS_FILE ${path}`): ApiKey[] {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (error) {
    throw new KeysError(`${source}: ${(error as Error).message}`);
  }
  if (size > apiKeysFileBytesMax) throw new KeysError(`${source}: ${size} bytes; at most ${apiKeysFileBytesMax}`);
  return parseKeysFile(readFileSync(path, "utf8"), source);
}

/** Where keys come from. `enabled` is false only when neither a file nor
 * environment keys are configured: then the server runs open (loopback only). */
export interface KeySources {
  keysFile: string | null;
  adminKeysEnv: string | null;
}

export function keysEnabled(sources: KeySources): boolean {
  return sources.keysFile !== null || (sources.adminKeysEnv !== null && sources.adminKeysEnv.trim() !== "");
}

/** Loads every configured source into one ring; throws KeysError on any problem. */
export function loadKeyRing(sources: KeySources): KeyRing {
  const keys = [
    ...(sources.adminKeysEnv ? parseAdminKeysEnv(sources.adminKeysEnv) : []),
    ...(sources.keysFile !== null ? readKeysFile(sources.keysFile) : []),
  ];
  const ids = new Set<string>();
  for (const key of keys) {
    if (ids.has(key.id)) throw new KeysError(`key id "${key.id}" is used twice (file ids must not start with "env-admin-")`);
    ids.add(key.id);
  }
  return new KeyRing(keys);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function unknownFields(obj: Record<string, unknown>, allowed: string[], where: string): void {
  for (const name of Object.keys(obj))
    if (!allowed.includes(name)) throw new KeysError(`${where}: unknown field "${name}" (allowed: ${allowed.join(", ")})`);
}

function stringList(value: unknown, where: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new KeysError(`${where} must be an array of strings`);
  if (value.length > keyProjectsMax) throw new KeysError(`${where} has ${value.length} entries; at most ${keyProjectsMax}`);
  for (const item of value) {
    if (typeof item !== "string" || item.length === 0 || item.length > idLengthMax || !idPattern.test(item)) {
      throw new KeysError(`${where}: ${JSON.stringify(item)} is not 1..${idLengthMax} characters of [A-Za-z0-9._:/-]`);
    }
  }
  return value as string[];
}
