// Security wiring for the server: the key ring (loaded at start, reloaded on
// change or SIGHUP), the safe default for a server without keys, and TLS files.
import { lookup } from "node:dns/promises";
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import net from "node:net";
import { keysEnabled, keysFileExposure, KeysError, loadKeyRing, type KeyRing, type KeySources } from "./auth/keys.ts";
import type { TallyConfig } from "./config.ts";
import { keysFileWatchIntervalMs } from "./limits.ts";
import { LogEvent, type Logger } from "./log.ts";

/** Refusing to start: the message says what to change. */
export class StartupError extends Error {
  override name = "StartupError";
}

const loopback = new net.BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");

/** 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z). */
export function isLoopbackAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 0) return false;
  return loopback.check(address, family === 6 ? "ipv6" : "ipv4");
}

/** The host of a Host header or URL authority ("localhost:8080", "[::1]",
 * "127.0.0.1"), lower-case, without port or brackets; undefined if malformed. */
function hostOf(authority: string): string | undefined {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::\d{1,5})?$/.exec(authority);
  if (match === null) return undefined;
  const host = (match[1] as string).toLowerCase();
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

function isLoopbackName(host: string | undefined): boolean {
  return host !== undefined && (host === "localhost" || isLoopbackAddress(host));
}

/** Open mode (no keys, loopback only) trusts whoever can reach the port, which
 * a web page could do through DNS rebinding (a name of the attacker's that
 * resolves to 127.0.0.1) or a cross-origin request. So requests must name a
 * loopback Host (localhost, 127.x.y.z, [::1], any port), and a browser's
 * Origin, if sent, must be loopback too. A request without Host (HTTP/1.0
 * tools) is no browser's. Returns why a request is refused, or undefined. */
export function openModeRequestCheck(authority: string | undefined, origin: string | undefined): string | undefined {
  if (authority !== undefined && !isLoopbackName(hostOf(authority))) {
    return `this server runs without API keys and answers only requests addressed to localhost, 127.0.0.1 or [::1]; the request was addressed to "${authority.slice(0, 100)}". Configure keys (TALLY_KEYS_FILE) to serve other names`;
  }
  if (origin !== undefined) {
    let originHost: string | undefined;
    try {
      const url = new URL(origin);
      originHost = url.protocol === "http:" || url.protocol === "https:" ? hostOf(url.host) : undefined;
    } catch {
      originHost = undefined;
    }
    if (!isLoopbackName(originHost)) {
      return `this server runs without API keys and answers browser requests only from loopback pages (http://localhost, http://127.0.0.1, http://[::1]); the request came from "${origin.slice(0, 100)}". Configure keys (TALLY_KEYS_FILE) to serve other origins`;
    }
  }
  return undefined;
}

/** Whether every address `host` names is loopback (a name is resolved). */
export async function isLoopbackHost(host: string): Promise<boolean> {
  if (net.isIP(host)) return isLoopbackAddress(host);
  try {
    const addresses = await lookup(host, { all: true });
    return addresses.length > 0 && addresses.every((a) => isLoopbackAddress(a.address));
  } catch {
    return false;
  }
}

/** The current key ring (null = no keys configured: open), replaced atomically
 * on reload. A reload that fails keeps the previous keys and logs why. */
export class KeyHolder {
  readonly #sources: KeySources;
  readonly #logger: Logger;
  #ring: KeyRing | null;
  readonly #listeners = new Set<() => void>();

  private constructor(sources: KeySources, ring: KeyRing | null, logger: Logger) {
    this.#sources = sources;
    this.#ring = ring;
    this.#logger = logger;
  }

  /** Loads the configured keys and applies the safe default: with no keys the
   * server may only listen on loopback. Throws StartupError otherwise. */
  static async open(config: TallyConfig, logger: Logger): Promise<KeyHolder> {
    const sources: KeySources = { keysFile: config.keysFile, adminKeysEnv: config.adminKeys };
    if (!keysEnabled(sources)) {
      if (!(await isLoopbackHost(config.host))) {
        throw new StartupError(
          `refusing to listen on ${config.host} without API keys: anyone who can reach it could spend or read any project. ` +
            `Set TALLY_KEYS_FILE (or TALLY_ADMIN_KEYS), or listen on loopback (HOST=127.0.0.1). See docs/security.md.`,
        );
      }
      logger.warn({
        event: LogEvent.authDisabled,
        host: config.host,
        message: "no API keys configured: every call is allowed, listening on loopback only",
      });
      return new KeyHolder(sources, null, logger);
    }
    let ring: KeyRing;
    try {
      ring = loadKeyRing(sources);
    } catch (error) {
      if (error instanceof KeysError) throw new StartupError(error.message);
      throw error;
    }
    logger.info({
      event: LogEvent.authKeysLoaded,
      keyCount: ring.size,
      keysFile: sources.keysFile,
      adminKeysFromEnv: sources.adminKeysEnv !== null,
    });
    warnIfExposed(sources.keysFile, logger);
    return new KeyHolder(sources, ring, logger);
  }

  get ring(): KeyRing | null {
    return this.#ring;
  }

  /** Re-reads the sources. Returns false (keeping the old keys) on a bad file. */
  reload(): boolean {
    if (this.#ring === null) return true; // open mode stays open: keys need a restart to turn on
    try {
      const ring = loadKeyRing(this.#sources);
      this.#ring = ring;
      this.#logger.info({ event: LogEvent.authKeysLoaded, keyCount: ring.size, keysFile: this.#sources.keysFile, reload: true });
      warnIfExposed(this.#sources.keysFile, this.#logger);
      for (const listener of this.#listeners) listener();
      return true;
    } catch (error) {
      this.#logger.error({
        event: LogEvent.authKeysReloadFailed,
        keysFile: this.#sources.keysFile,
        message: (error as Error).message,
        keptKeyCount: this.#ring.size,
      });
      return false;
    }
  }

  /** Calls `listener` after every successful reload (open streams re-check
   * their caller then); returns the unsubscribe. */
  onReload(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Reloads whenever the keys file changes (stat polling); returns a stop function. */
  watch(): () => void {
    const file = this.#sources.keysFile;
    if (file === null || this.#ring === null) return () => {};
    const onChange = (
      current: { mtimeMs: number; size: number; ino: number },
      previous: { mtimeMs: number; size: number; ino: number },
    ) => {
      if (current.mtimeMs !== previous.mtimeMs || current.size !== previous.size || current.ino !== previous.ino) this.reload();
    };
    watchFile(file, { interval: keysFileWatchIntervalMs, persistent: false }, onChange);
    return () => unwatchFile(file, onChange);
  }
}

function warnIfExposed(keysFile: string | null, logger: Logger): void {
  const exposure = keysFile === null ? undefined : keysFileExposure(keysFile);
  if (exposure !== undefined) logger.warn({ event: LogEvent.authKeysFileExposed, keysFile, message: exposure });
}

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

export function readTlsFiles(config: TallyConfig): TlsFiles | null {
  if (config.tlsCertFile === null || config.tlsKeyFile === null) return null;
  try {
    return { cert: readFileSync(config.tlsCertFile), key: readFileSync(config.tlsKeyFile) };
  } catch (error) {
    throw new StartupError(
      `cannot read the TLS files (TALLY_TLS_CERT_FILE=${config.tlsCertFile}, TALLY_TLS_KEY_FILE=${config.tlsKeyFile}): ${(error as Error).message}`,
    );
  }
}
