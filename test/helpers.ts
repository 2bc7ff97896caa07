// Shared test wiring: a real Tally on an ephemeral port, and clients for it.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConnectError, createClient, type Client, type Code, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BudgetService } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { defaultConfig, type TallyConfig } from "../src/config.ts";
import { createLogger, type Logger } from "../src/log.ts";
import { startServer, type ServerOptions, type TallyServer } from "../src/server.ts";

export type BudgetClient = Client<typeof BudgetService>;

export function tempDatabaseUrl(): string {
  return `sqlite:${join(mkdtempSync(join(tmpdir(), "tally-test-")), "tally.db")}`;
}

export async function startTestServer(
  overrides: Partial<TallyConfig> = {},
  options: ServerOptions & { logger?: Logger } = {},
): Promise<TallyServer> {
  const config: TallyConfig = { ...defaultConfig, port: 0, databaseUrl: "sqlite::memory:", logLevel: "silent", ...overrides };
  return startServer(config, options.logger ?? createLogger(config.logLevel), options);
}

/** A clock tests move by hand: windows roll over and holds expire without sleeping. */
export class TestClock {
  ms: number;
  constructor(iso: string) {
    this.ms = Date.parse(iso);
  }
  set(iso: string): void {
    this.ms = Date.parse(iso);
  }
  advance(ms: number): void {
    this.ms += ms;
  }
  readonly now = (): number => this.ms;
}

/** Sends `Authorization: Bearer <key>` on every call. */
export function bearer(key: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
}

/** One client per protocol and HTTP version Tally serves; with `key`, every
 * call carries it as a bearer token. */
export function clientsFor(baseUrl: string, key?: string): Record<string, BudgetClient> {
  const interceptors = key === undefined ? [] : [bearer(key)];
  return {
    "connect+proto h2c": createClient(BudgetService, createConnectTransport({ baseUrl, httpVersion: "2", interceptors })),
    "connect+json http/1.1": createClient(
      BudgetService,
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors }),
    ),
    "grpc h2c": createClient(BudgetService, createGrpcTransport({ baseUrl, interceptors })),
    "grpc-web http/1.1": createClient(BudgetService, createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors })),
  };
}

/** Writes a keys file (src/auth/keys.ts format) and returns its path. */
export function writeKeysFile(
  keys: Array<{ id: string; role: "admin" | "project"; key: string; projects?: string[]; projectPrefixes?: string[] }>,
  path?: string,
): string {
  const file = path ?? join(mkdtempSync(join(tmpdir(), "tally-keys-")), "keys.json");
  const doc = { keys: keys.map(({ key, ...rest }) => ({ ...rest, sha256: createHash("sha256").update(key).digest("hex") })) };
  writeFileSync(file, JSON.stringify(doc, null, 2));
  return file;
}

export const usd = (dollars: number): bigint => BigInt(Math.round(dollars * 1_000_000)) * 1_000n;

/** The Connect code a call failed with, or "ok": for tables of expected outcomes. */
export async function codeOf(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

/** `promise`, or a rejection "<what> within 10 s" if it takes longer: a test
 * waiting on a stream fails with a reason instead of hanging. */
export function within<T>(promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms / 1000} s`)), ms).unref()),
  ]);
}

/** A throwaway self-signed certificate for 127.0.0.1 (EC P-256, one day), as
 * `<name>.crt` and `<name>.key` in `dir`, for servers and clients under test. */
export function selfSignedCert(dir: string, name = "tally", commonName = name): { certFile: string; keyFile: string; cert: Buffer } {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "1",
      "-subj",
      `/CN=${commonName}`,
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  return { certFile, keyFile, cert: readFileSync(certFile) };
}
