// Configuration from the environment, validated once at start. A bad value
// stops the process with a message naming the variable and what it accepts.
import type { ConnectionTimeouts } from "./transport/connections.ts";
import { fileURLToPath } from "node:url";
import {
  batchSizeMax,
  ledgerRetentionMsMin,
  metricsTopProjectsDefault,
  metricsTopProjectsMax,
  postgresConnectRetryMsDefault,
  postgresConnectTimeoutMsDefault,
  postgresPoolSizeDefault,
  postgresStatementTimeoutMsDefault,
  queueDepthMax,
  shutdownDrainMsMax,
} from "./limits.ts";

export interface TallyConfig {
  host: string;
  port: number;
  databaseUrl: string;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  sqliteSynchronous: "FULL" | "NORMAL";
  /** 0 keeps cost records (and their idempotency keys) forever. */
  ledgerRetentionMs: number;
  batchSizeMax: number;
  queueDepthMax: number;
  shutdownDrainMs: number;
  /** /metrics: projects with their own label in the spend gauges (the rest is "(other)"). */
  metricsTopProjects: number;
  /** The built dashboard served at / (`npm run build` writes dist/dashboard). */
  dashboardDir: string;
  /** TALLY_KEYS_FILE: JSON keys file (src/auth/keys.ts); reloaded on change and SIGHUP. */
  keysFile: string | null;
  /** TALLY_ADMIN_KEYS: comma-separated plain admin keys (hashed at start, never logged). */
  adminKeys: string | null;
  /** TALLY_TLS_CERT_FILE / TALLY_TLS_KEY_FILE: PEM files; both or neither. */
  tlsCertFile: string | null;
  tlsKeyFile: string | null;
  /** PostgreSQL only: connections per replica. */
  databasePoolSize: number;
  /** PostgreSQL only: statement_timeout of every connection. */
  databaseStatementTimeoutMs: number;
  /** PostgreSQL only: one connection attempt's timeout. */
  databaseConnectTimeoutMs: number;
  /** PostgreSQL only: how long start-up keeps retrying to reach the database. */
  databaseConnectRetryMs: number;
  /** Connection limit and idle timeouts (default: src/limits.ts); not read
   * from the environment: tests shorten them. */
  connections?: Partial<ConnectionTimeouts> & { max?: number };
}

export const defaultConfig: TallyConfig = {
  host: "127.0.0.1",
  port: 8080,
  databaseUrl: "sqlite:./data/tally.db",
  logLevel: "info",
  sqliteSynchronous: "FULL",
  ledgerRetentionMs: 0,
  batchSizeMax,
  queueDepthMax,
  shutdownDrainMs: shutdownDrainMsMax,
  metricsTopProjects: metricsTopProjectsDefault,
  dashboardDir: fileURLToPath(new URL("../dist/dashboard/", import.meta.url)),
  keysFile: null,
  adminKeys: null,
  tlsCertFile: null,
  tlsKeyFile: null,
  databasePoolSize: postgresPoolSizeDefault,
  databaseStatementTimeoutMs: postgresStatementTimeoutMsDefault,
  databaseConnectTimeoutMs: postgresConnectTimeoutMsDefault,
  databaseConnectRetryMs: postgresConnectRetryMsDefault,
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name}=${JSON.stringify(raw)} is not a whole number`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name}=${raw} is outside ${min}..${max}`);
  return value;
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, fallback: T, allowed: readonly T[]): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!(allowed as readonly string[]).includes(raw))
    throw new ConfigError(`${name}=${JSON.stringify(raw)} must be one of ${allowed.join(", ")}`);
  return raw as T;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): TallyConfig {
  const ledgerRetentionMs = integer(env, "TALLY_LEDGER_RETENTION_MS", 0, 0, Number.MAX_SAFE_INTEGER);
  if (ledgerRetentionMs !== 0 && ledgerRetentionMs < ledgerRetentionMsMin) {
    throw new ConfigError(
      `TALLY_LEDGER_RETENTION_MS=${ledgerRetentionMs} is below the minimum ${ledgerRetentionMsMin} (24 h: idempotency keys must outlive client retries); use 0 to keep records forever`,
    );
  }
  const batch = integer(env, "TALLY_BATCH_SIZE_MAX", batchSizeMax, 1, 10_000);
  const queue = integer(env, "TALLY_QUEUE_DEPTH_MAX", queueDepthMax, 1, 1_000_000);
  if (queue < batch) throw new ConfigError(`TALLY_QUEUE_DEPTH_MAX=${queue} must be at least TALLY_BATCH_SIZE_MAX=${batch}`);
  const tlsCertFile = env.TALLY_TLS_CERT_FILE || null;
  const tlsKeyFile = env.TALLY_TLS_KEY_FILE || null;
  if ((tlsCertFile === null) !== (tlsKeyFile === null)) {
    throw new ConfigError("TLS needs both TALLY_TLS_CERT_FILE and TALLY_TLS_KEY_FILE (PEM files), or neither");
  }
  return {
    host: env.HOST || defaultConfig.host,
    port: integer(env, "PORT", defaultConfig.port, 0, 65_535),
    databaseUrl: env.TALLY_DATABASE_URL || defaultConfig.databaseUrl,
    logLevel: oneOf(env, "TALLY_LOG_LEVEL", defaultConfig.logLevel, ["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    sqliteSynchronous: oneOf(env, "TALLY_SQLITE_SYNCHRONOUS", defaultConfig.sqliteSynchronous, ["FULL", "NORMAL"]),
    ledgerRetentionMs,
    batchSizeMax: batch,
    queueDepthMax: queue,
    shutdownDrainMs: integer(env, "TALLY_SHUTDOWN_DRAIN_MS", defaultConfig.shutdownDrainMs, 0, 600_000),
    dashboardDir: env.TALLY_DASHBOARD_DIR || defaultConfig.dashboardDir,
    metricsTopProjects: integer(env, "TALLY_METRICS_TOP_PROJECTS", defaultConfig.metricsTopProjects, 0, metricsTopProjectsMax),
    keysFile: env.TALLY_KEYS_FILE || null,
    adminKeys: env.TALLY_ADMIN_KEYS || null,
    tlsCertFile,
    tlsKeyFile,
    // Two connections at least: one commits batches while another serves reads.
    databasePoolSize: integer(env, "TALLY_DATABASE_POOL_SIZE", defaultConfig.databasePoolSize, 2, 1_000),
    databaseStatementTimeoutMs: integer(env, "TALLY_DATABASE_STATEMENT_TIMEOUT_MS", defaultConfig.databaseStatementTimeoutMs, 100, 600_000),
    databaseConnectTimeoutMs: integer(env, "TALLY_DATABASE_CONNECT_TIMEOUT_MS", defaultConfig.databaseConnectTimeoutMs, 100, 600_000),
    databaseConnectRetryMs: integer(env, "TALLY_DATABASE_CONNECT_RETRY_MS", defaultConfig.databaseConnectRetryMs, 0, 3_600_000),
  };
}

/** The PostgreSQL settings of a config, as initORM takes them. */
export function postgresOptionsOf(config: TallyConfig): {
  poolSize: number;
  statementTimeoutMs: number;
  connectTimeoutMs: number;
  connectRetryMs: number;
} {
  return {
    poolSize: config.databasePoolSize,
    statementTimeoutMs: config.databaseStatementTimeoutMs,
    connectTimeoutMs: config.databaseConnectTimeoutMs,
    connectRetryMs: config.databaseConnectRetryMs,
  };
}
