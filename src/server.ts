// Wiring: database -> unit of work -> ledger -> Connect handlers -> one port.
//
// One cleartext port serves gRPC, gRPC-Web and Connect over HTTP/2 (prior
// knowledge, h2c) and HTTP/1.1 (so plain curl works). Node's http2 cannot offer
// HTTP/1.1 on a cleartext socket itself (allowHTTP1 needs TLS), so each new
// connection's first bytes are inspected: the HTTP/2 client preface
// "PRI * HTTP/2.0" goes to the http2 server, anything else to the http/1 one.
// With TLS files configured the port speaks HTTPS instead, and ALPN picks h2 or
// http/1.1 (http2.createSecureServer with allowHTTP1).
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { authGate, authInterceptor } from "./api/auth.ts";
import { guardRequests } from "./api/http-guard.ts";
import { Health } from "../gen/ts/grpc/health/v1/health_pb.ts";
import { LifecycleGate, loggingInterceptor } from "./api/interceptors.ts";
import { TallyMetrics } from "./api/metrics.ts";
import { loadDashboard, operatorHttp } from "./api/operator-http.ts";
import { tallyNodeAdapter } from "./api/node-adapter.ts";
import { tallyRoutes } from "./api/routes.ts";
import { postgresOptionsOf, type TallyConfig } from "./config.ts";
import { HoldSweeper } from "./ledger/holds.ts";
import { Ledger } from "./ledger/ledger.ts";
import { RetentionSweeper } from "./ledger/retention.ts";
import type { LedgerStore } from "./ledger/store.ts";
import { UnitOfWork } from "./ledger/unit-of-work.ts";
import {
  connectionPrefaceTimeoutMs,
  connectionsMax,
  holdSweepBatchMax,
  holdSweepIntervalMs,
  http1HeadersTimeoutMs,
  http2StreamsPerConnectionMax,
  inFlightCallsMax,
  requestBodyReceiveMsMax,
  requestBytesMax,
  retentionSweepBatchMax,
  retentionSweepIntervalMs,
  transportHeadersBytesMax,
  transportHeadersCountMax,
} from "./limits.ts";
import { LogEvent, type Logger } from "./log.ts";
import { KeyHolder, readTlsFiles } from "./security.ts";
import { initORM, redactDatabaseUrl } from "./store/orm.ts";

const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface TallyServer {
  /** Base URL clients use, e.g. http://127.0.0.1:8080 */
  readonly url: string;
  readonly port: number;
  readonly ledger: Ledger;
  readonly store: LedgerStore;
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
  const { store, applied } = await initORM(
    config.databaseUrl,
    { synchronous: config.sqliteSynchronous, busyTimeoutMs: 5_000 },
    { ...postgresOptionsOf(config), onConnectRetry: ({ attempt, delayMs, error }) => logger.warn({ event: LogEvent.databaseConnectRetry, attempt, delayMs, message: error.message }) },
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
      else if (logger.isLevelEnabled("debug")) logger.debug({ event: LogEvent.batchCommitted, size: info.size, commitMs: info.commitMs, queued: info.queued });
    },
  });
  const ledger = new Ledger(store, uow, { now, logger });
  // Health checks are admitted while draining: they answer NOT_SERVING.
  const gate = new LifecycleGate(inFlightCallsMax, { admitWhileDraining: [Health.typeName] });
  metrics = new TallyMetrics({ ledger, queueDepth: () => uow.queued, queueDepthMax: config.queueDepthMax, inFlight: () => gate.inFlight, topProjects: config.metricsTopProjects, logger });
  const dashboard = loadDashboard(config.dashboardDir);
  if (dashboard === null) logger.warn({ event: LogEvent.dashboardNotBuilt, dashboardDir: config.dashboardDir, message: "the dashboard at / is not built; run `npm run build`" });
  const operator = operatorHttp({ metrics, dashboard, keys: () => keys.ring, logger });

  // Order matters: metrics count every call, including those the gate refuses
  // while draining; the gate refuses before anything else runs; logging sees
  // every outcome, including refused credentials.
  const interceptors = [metrics.interceptor, gate.interceptor, loggingInterceptor(logger), authInterceptor(() => keys.ring)];
  const connectAdapter = tallyNodeAdapter({
    routes: tallyRoutes(ledger, gate),
    interceptors,
    // Keys are checked from the headers before any body byte is read.
    requestGate: authGate(
      () => keys.ring,
      (procedure, error, principal) =>
        logger.info({ event: LogEvent.rpcFailed, procedure, code: codeToString(error.code), keyId: principal?.keyId ?? undefined, message: error.rawMessage }),
    ),
    readMaxBytes: requestBytesMax,
    // Without a matching route Connect answers 404; say so plainly.
    fallback: (req, res) => {
      if (operator(req, res)) return;
      (res as http.ServerResponse).writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found: Tally serves tally.budget.v1.BudgetService, grpc.health.v1.Health and gRPC server reflection (gRPC, gRPC-Web, Connect), /metrics and the dashboard at /\n");
    },
  });
  const adapter = guardRequests(connectAdapter);

  const http2Options = {
    settings: { maxConcurrentStreams: http2StreamsPerConnectionMax, maxHeaderListSize: transportHeadersBytesMax },
    maxHeaderListPairs: transportHeadersCountMax,
  };
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const trackSession = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  };
  const trackSocket = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  let h1: http.Server | undefined;
  let secure: http2.Http2SecureServer | undefined;
  let listener: net.Server;
  if (tlsFiles === null) {
    const h2 = http2.createServer(http2Options, adapter);
    h2.on("session", trackSession);
    h1 = http.createServer(
      { keepAliveTimeout: 5_000, maxHeaderSize: transportHeadersBytesMax, headersTimeout: http1HeadersTimeoutMs, requestTimeout: http1HeadersTimeoutMs + requestBodyReceiveMsMax },
      adapter,
    );
    h1.maxHeadersCount = transportHeadersCountMax;
    const cleartextH1 = h1;
    listener = net.createServer((socket) => {
      trackSocket(socket);
      routeByPreface(socket, cleartextH1, h2);
    });
  } else {
    // ALPN offers h2 and http/1.1; a client that offers neither is refused.
    secure = http2.createSecureServer({ ...http2Options, cert: tlsFiles.cert, key: tlsFiles.key, allowHTTP1: true, handshakeTimeout: connectionPrefaceTimeoutMs }, adapter);
    secure.on("session", trackSession);
    secure.on("connection", trackSocket);
    listener = secure;
  }
  // Past this many open connections new ones are closed at once.
  listener.maxConnections = connectionsMax;
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(config.port, config.host, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const address = listener.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `${secure ? "https" : "http"}://${host}:${address.port}`;
  logger.info({ event: LogEvent.serverListening, url, host: address.address, port: address.port, protocols: ["grpc", "grpc-web", "connect"], transports: secure ? ["h2", "http/1.1"] : ["h2c", "http/1.1"], tls: secure !== undefined, auth: keys.ring === null ? "open" : "api-keys" });
  const stopWatchingKeys = keys.watch();

  const reload = (): boolean => {
    let ok = keys.reload();
    if (secure !== undefined) {
      try {
        tlsFiles = readTlsFiles(config);
        if (tlsFiles !== null) secure.setSecureContext({ cert: tlsFiles.cert, key: tlsFiles.key });
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
      gate.startDraining();
      const listenerClosed = new Promise<void>((resolve) => listener.close(() => resolve()));
      // Connections stay open while in-flight calls finish, so a call that
      // arrives meanwhile gets a clear UNAVAILABLE from the gate rather than a
      // reset stream; then GOAWAY and close.
      const deadlineMs = Date.now() + config.shutdownDrainMs;
      const drained = await gate.waitIdle(config.shutdownDrainMs);
      await uow.close();
      // Watch streams never finish by themselves: end them (UNAVAILABLE) once
      // the last writes' events were published.
      ledger.events.close();
      // GOAWAY; each session closes once its last responses are written.
      const sessionsClosed = [...sessions].map((session) => new Promise<void>((resolve) => {
        session.once("close", () => resolve());
        session.close();
      }));
      h1?.closeIdleConnections();
      await Promise.race([Promise.all(sessionsClosed), new Promise((resolve) => setTimeout(resolve, Math.max(0, deadlineMs - Date.now())).unref())]);
      for (const socket of sockets) socket.destroy();
      await listenerClosed;
      await store.close();
      logger.info({ event: LogEvent.serverStopped, drained });
    })());

  return { url, port: address.port, ledger, store, close, reload };
}

/** Hands a new connection to the HTTP/2 server if it starts with the client
 * preface, otherwise to the HTTP/1.1 server. */
function routeByPreface(socket: net.Socket, h1: http.Server, h2: http2.Http2Server): void {
  let seen: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, http2Preface.length);
    const prefixMatches = seen.subarray(0, n).equals(http2Preface.subarray(0, n));
    if (prefixMatches && seen.length < http2Preface.length) return; // wait for the rest of the preface
    socket.off("data", onData);
    // From here on the HTTP servers own idleness (keep-alive, session lifetime).
    socket.setTimeout(0);
    socket.pause();
    socket.unshift(seen);
    if (prefixMatches) {
      // http2 reads the socket's handle directly and picks up the unshifted
      // bytes itself (node#41185); resuming here would emit them to nobody.
      h2.emit("connection", socket);
    } else {
      h1.emit("connection", socket);
      socket.resume();
    }
  };
  socket.on("data", onData);
  // A client that connects and sends nothing is dropped.
  socket.setTimeout(connectionPrefaceTimeoutMs, () => socket.destroy());
}
