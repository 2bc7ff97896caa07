// Wiring: database -> unit of work -> ledger -> Connect handlers -> one port.
// The port itself (gRPC, gRPC-Web and Connect over h2c/HTTP/1.1 or TLS, the
// unary fast path, request guards, drain) is src/transport/rpc-server.ts.
import type http from "node:http";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { authGate, authInterceptor, procedureAccess } from "./auth/auth.ts";
import { KeyRateLimiter } from "./auth/rate-limit.ts";
import { Health } from "../gen/ts/grpc/health/v1/health_pb.ts";
import { loggingInterceptor } from "./api/interceptors.ts";
import { LifecycleGate } from "./transport/lifecycle-gate.ts";
import { TallyMetrics } from "./operator/metrics.ts";
import { loadDashboard, operatorHttp } from "./operator/operator-http.ts";
import { tallyRoutes } from "./api/routes.ts";
import { toConnectError } from "./api/errors.ts";
import { postgresOptionsOf, type TallyConfig } from "./config.ts";
import { HoldSweeper } from "./ledger/holds.ts";
import { Ledger } from "./ledger/ledger.ts";
import { RetentionSweeper } from "./ledger/retention.ts";
import type { LedgerStore } from "./ledger/store.ts";
import { UnitOfWork } from "./ledger/unit-of-work.ts";
import {
  holdSweepBatchMax,
  holdSweepIntervalMs,
  inFlightCallsMax,
  publicStreamsOpenMax,
  publicStreamsPerConnectionMax,
  requestBytesMax,
  retentionSweepBatchMax,
  retentionSweepIntervalMs,
  streamsOpenMax,
  streamsPerConnectionMax,
  sqliteBusyTimeoutMs,
} from "./limits.ts";
import { LogEvent, type Logger } from "./log.ts";
import { KeyHolder, openModeRequestCheck, readTlsFiles } from "./security.ts";
import { initORM, redactDatabaseUrl } from "./store/orm.ts";
import { startRpcServer, type RpcServer } from "./transport/rpc-server.ts";

export interface TallyServer {
  /** Base URL clients use, e.g. http://127.0.0.1:8080 */
  readonly url: string;
  readonly port: number;
  readonly ledger: Ledger;
  readonly store: LedgerStore;
  /** The transport (fast-path statistics, drain state). */
  readonly rpc: RpcServer;
  /** Graceful stop: refuse new calls, finish in-flight ones, flush, close the database. */
  close(): Promise<void>;
  /** Re-reads the API keys file and the TLS files (SIGHUP). False if something
   * failed to load; the previous keys / certificate then stay in use. */
  reload(): boolean;
}

export interface ServerOptions {
  /** The clock of every decision and write (tests inject one to cross
   * midnight or expire holds without sleeping). Default Date.now. */
  now?: () => number;
}

export async function startServer(config: TallyConfig, logger: Logger, options: ServerOptions = {}): Promise<TallyServer> {
  const now = options.now ?? Date.now;
  // Before anything is opened: no keys on a non-loopback address, unreadable
  // keys or TLS files stop the start (StartupError).
  const keys = await KeyHolder.open(config, logger);
  let tlsFiles = readTlsFiles(config);
  const { store, prices, applied } = await initORM(
    config.databaseUrl,
    { synchronous: config.sqliteSynchronous, busyTimeoutMs: sqliteBusyTimeoutMs },
    {
      ...postgresOptionsOf(config),
      onConnectRetry: ({ attempt, delayMs, error }) =>
        logger.warn({ event: LogEvent.databaseConnectRetry, attempt, delayMs, message: error.message }),
    },
  );
  logger.info({ event: LogEvent.databaseOpened, databaseUrl: redactDatabaseUrl(config.databaseUrl) });
  if (applied.length > 0) logger.info({ event: LogEvent.migrationsApplied, migrations: applied });

  // Assigned right below; the unit of work needs the hook before metrics can
  // read its queue.
  let metrics: TallyMetrics | undefined;
  const uow = new UnitOfWork(store, {
    batchSizeMax: config.batchSizeMax,
    queueDepthMax: config.queueDepthMax,
    now,
    onBatch: (info) => {
      metrics?.onBatch(info);
      if (info.failed) logger.error({ event: LogEvent.batchCommitFailed, size: info.size, commitMs: info.commitMs });
      // At debug level, every group commit (npm run bench reads these).
      else if (logger.isLevelEnabled("debug"))
        logger.debug({ event: LogEvent.batchCommitted, size: info.size, commitMs: info.commitMs, queued: info.queued });
    },
  });
  const ledger = new Ledger(store, uow, { now, logger, prices });
  // Health checks are admitted while draining: they answer NOT_SERVING.
  const gate = new LifecycleGate(inFlightCallsMax, { admitWhileDraining: [Health.typeName] });
  metrics = new TallyMetrics({
    ledger,
    queueDepth: () => uow.queued,
    queueDepthMax: config.queueDepthMax,
    inFlight: () => gate.inFlight,
    topProjects: config.metricsTopProjects,
    logger,
    keyExpiries: () => keys.ring?.expiries() ?? [],
  });
  const dashboard = loadDashboard(config.dashboardDir);
  if (dashboard === null)
    logger.warn({
      event: LogEvent.dashboardNotBuilt,
      dashboardDir: config.dashboardDir,
      message: "the dashboard at / is not built; run `npm run build`",
    });
  const operator = operatorHttp({ metrics, dashboard, keys: () => keys.ring, logger });

  // Order matters: metrics count every call, including those the gate refuses
  // while draining; the gate refuses before anything else runs; logging sees
  // every outcome, including refused credentials.
  // One limiter for the request gate and the interceptor (which only counts a
  // call when no gate authenticated it), so each call spends exactly one token.
  const rateLimiter = new KeyRateLimiter(now);
  const interceptors = [
    metrics.interceptor,
    gate.interceptor,
    loggingInterceptor(logger),
    authInterceptor(
      () => keys.ring,
      (listener) => keys.onReload(listener),
      rateLimiter,
      // A store failure reading the chain answers as a handler's would (UNAVAILABLE).
      (projectId) =>
        ledger.projectChain(projectId).catch((error: unknown) => {
          throw toConnectError(error);
        }),
    ),
  ];
  const rpc = await startRpcServer({
    host: config.host,
    port: config.port,
    routes: tallyRoutes(ledger, gate),
    gate,
    interceptors,
    // Keys are checked from the headers before any body byte is read.
    requestGate: authGate(
      () => keys.ring,
      (procedure, error, principal) =>
        logger.info({
          event: LogEvent.rpcFailed,
          procedure,
          code: codeToString(error.code),
          keyId: principal?.keyId ?? undefined,
          message: error.rawMessage,
        }),
      rateLimiter,
    ),
    readMaxBytes: requestBytesMax,
    tls: tlsFiles,
    connections: config.connections,
    // Open mode only: no DNS rebinding or cross-origin page reaches the API or /metrics.
    requestCheck: (authority, origin) => (keys.ring === null ? openModeRequestCheck(authority, origin) : undefined),
    // Streams that need no key get a smaller pool of their own, so a flood of
    // them neither grows memory far nor takes the slots of keyed streams.
    streams: {
      pools: {
        public: { openMax: publicStreamsOpenMax, perConnectionMax: publicStreamsPerConnectionMax },
        keyed: { openMax: streamsOpenMax, perConnectionMax: streamsPerConnectionMax },
      },
      poolOf: (procedure) => (procedureAccess[procedure] === "public" ? "public" : "keyed"),
    },
    // Not an RPC: /metrics and the dashboard, else a plain 404.
    fallback: (req, res) => {
      if (operator(req, res)) return;
      (res as http.ServerResponse).writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end(
        "not found: Tally serves tally.budget.v1.BudgetService, grpc.health.v1.Health and gRPC server reflection (gRPC, gRPC-Web, Connect), /metrics and the dashboard at /\n",
      );
    },
  });
  const { address, url } = rpc;
  logger.info({
    event: LogEvent.serverListening,
    url,
    host: address.address,
    port: address.port,
    protocols: ["grpc", "grpc-web", "connect"],
    transports: rpc.tls ? ["h2", "http/1.1"] : ["h2c", "http/1.1"],
    tls: rpc.tls,
    auth: keys.ring === null ? "open" : "api-keys",
  });
  const stopWatchingKeys = keys.watch();

  const reload = (): boolean => {
    let ok = keys.reload();
    if (rpc.tls) {
      try {
        tlsFiles = readTlsFiles(config);
        if (tlsFiles !== null) rpc.setSecureContext(tlsFiles);
        logger.info({ event: LogEvent.tlsReloaded, certFile: config.tlsCertFile });
      } catch (error) {
        ok = false;
        logger.error({ event: LogEvent.tlsReloadFailed, certFile: config.tlsCertFile, message: (error as Error).message });
      }
    }
    return ok;
  };

  let sweepTimer: NodeJS.Timeout | undefined;
  if (config.ledgerRetentionMs > 0) {
    const sweeper = new RetentionSweeper(store, config.ledgerRetentionMs, retentionSweepBatchMax);
    sweepTimer = setInterval(() => {
      sweeper.sweep().then(
        (deleted) => deleted > 0 && logger.info({ event: LogEvent.retentionSwept, deleted }),
        (error: unknown) => logger.error({ event: LogEvent.retentionSweepFailed, err: error }),
      );
    }, retentionSweepIntervalMs);
    sweepTimer.unref();
  }

  const holdSweeper = new HoldSweeper(store, holdSweepBatchMax, now);
  const holdSweepTimer = setInterval(() => {
    holdSweeper.sweep().then(
      (deleted) => deleted > 0 && logger.debug({ event: LogEvent.holdsSwept, deleted }),
      (error: unknown) => logger.error({ event: LogEvent.holdSweepFailed, err: error }),
    );
  }, holdSweepIntervalMs);
  holdSweepTimer.unref();

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      logger.info({ event: LogEvent.serverDraining, inFlight: gate.inFlight, queued: uow.queued });
      clearInterval(sweepTimer);
      stopWatchingKeys();
      clearInterval(holdSweepTimer);
      const drained = await rpc.close(config.shutdownDrainMs, async () => {
        await uow.close();
        // Watch streams never finish by themselves: end them (UNAVAILABLE) once
        // the last writes' events were published.
        ledger.events.close();
      });
      await store.close();
      logger.info({ event: LogEvent.serverStopped, drained });
    })());

  return { url, port: address.port, ledger, store, rpc, close, reload };
}
