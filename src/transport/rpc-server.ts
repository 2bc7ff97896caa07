// One port that serves gRPC, gRPC-Web and Connect, with the unary fast path in
// front of Connect's router, the request guards, optional TLS and a graceful
// drain. Used by the Tally server (src/server.ts) and by the Connect
// conformance server (test/conformance/server.ts): the conformance suite tests
// this code.
//
// Cleartext: HTTP/2 with prior knowledge (h2c) and HTTP/1.1 on the same port.
// Node's http2 cannot offer HTTP/1.1 on a cleartext socket itself (allowHTTP1
// needs TLS), so each new connection's first bytes are inspected: the HTTP/2
// client preface "PRI * HTTP/2.0" goes to the http2 server, anything else to
// the http/1 one. With TLS the port speaks HTTPS and ALPN picks h2 or http/1.1.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { AddressInfo } from "node:net";
import type { JsonReadOptions, JsonWriteOptions } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import { guardRequests, requestGuardLimits, writeProtocolError } from "./http-guard.ts";
import { LifecycleGate } from "./lifecycle-gate.ts";
import { tallyNodeAdapter } from "./node-adapter.ts";
import {
  connectionSniffTimeoutMs,
  connectionsMax,
  http1HeadersTimeoutMs,
  http1KeepAliveTimeoutMs,
  http2GoawayCloseMs,
  http2SessionIdleMs,
  http2StreamsPerConnectionMax,
  streamsOpenMax,
  streamsPerConnectionMax,
  transportHeadersBytesMax,
  tlsHandshakeTimeoutMs,
  transportHeadersCountMax,
} from "../limits.ts";
import { errorWireOf, writeErrorAnswer } from "./error-answers.ts";
import { StreamSink } from "./fast-path-sinks.ts";
import { StreamLimits, type StreamPoolLimits } from "./stream-limits.ts";
import { attachConnection, connectionOf, ConnectionTracker, type ConnectionTimeouts } from "./connections.ts";
import { UnaryFastPath } from "./unary-fast-path.ts";

const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

export interface RpcServerOptions {
  host: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  /** Applied to every call on both paths. The lifecycle gate's interceptor is
   * put first unless the list already places it. */
  interceptors: Interceptor[];
  /** The lifecycle gate (refuses calls while draining); created if not given. */
  gate?: LifecycleGate;
  /** Runs before any body byte is read, on both paths (e.g. authentication). */
  requestGate?: (ctx: HandlerContext) => void | Promise<void>;
  /** Largest request message accepted (bytes). */
  readMaxBytes: number;
  /** Answers HTTP requests that are not RPCs (default: 404). */
  fallback?: (req: Request, res: Response) => void;
  /** JSON options for both paths (e.g. a registry for google.protobuf.Any). */
  json?: { readOptions?: Partial<JsonReadOptions>; writeOptions?: Partial<JsonWriteOptions> };
  /** Extra options for Connect's router (e.g. compression). */
  connect?: Partial<ConnectRouterOptions>;
  /** PEM certificate and key: serve HTTPS (ALPN h2 + http/1.1) instead of cleartext. */
  tls?: { cert: Buffer; key: Buffer } | null;
  /** Open connections and their idle timeouts (default: src/limits.ts). */
  connections?: Partial<ConnectionTimeouts> & { max?: number };
  /** Checks every request's Host (:authority) and Origin before anything
   * else, RPC or not; a returned message refuses it with PERMISSION_DENIED. */
  requestCheck?: (authority: string | undefined, origin: string | undefined) => string | undefined;
  /** Bounds on open streaming calls by pool (default: one pool, "streams",
   * at streamsOpenMax / streamsPerConnectionMax). */
  streams?: { pools: Readonly<Record<string, StreamPoolLimits>>; poolOf: (procedure: string) => string };
}

/** The defaults of RpcServerOptions.connections. */
export const connectionDefaults: Readonly<ConnectionTimeouts & { max: number }> = {
  max: connectionsMax,
  sniffMs: connectionSniffTimeoutMs,
  tlsHandshakeMs: tlsHandshakeTimeoutMs,
  http1HeadMs: http1HeadersTimeoutMs,
  http2IdleMs: http2SessionIdleMs,
};

export interface RpcServer {
  readonly url: string;
  readonly address: AddressInfo;
  readonly tls: boolean;
  readonly gate: LifecycleGate;
  readonly fastPath: UnaryFastPath;
  /** Open connections, their idle deadlines and the connection limit. */
  readonly connections: ConnectionTracker;
  /** Open streaming calls by pool. */
  readonly streams: StreamLimits;
  /** Swaps the TLS certificate (no-op without TLS). */
  setSecureContext(files: { cert: Buffer; key: Buffer }): void;
  /** Refuses new calls (UNAVAILABLE), waits up to drainMs for in-flight ones,
   * runs afterDrain (e.g. flush writes), then closes every connection. Resolves
   * to whether everything in flight finished in time. */
  close(drainMs: number, afterDrain?: () => Promise<void> | void): Promise<boolean>;
}

function notFound(_req: Request, res: Response): void {
  (res as http.ServerResponse).writeHead(404, { "content-type": "text/plain; charset=utf-8" });
  res.end("not found\n");
}

export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const gate = options.gate ?? new LifecycleGate();
  // The gate refuses calls while draining before anything but the caller's
  // chosen outer interceptors (e.g. metrics) runs.
  const interceptors = options.interceptors.includes(gate.interceptor) ? options.interceptors : [gate.interceptor, ...options.interceptors];
  const fastPath = new UnaryFastPath({
    interceptors,
    requestGate: options.requestGate,
    readMaxBytes: options.readMaxBytes,
    jsonReadOptions: options.json?.readOptions,
    jsonWriteOptions: options.json?.writeOptions,
    // Raw HTTP/2 streams skip guardRequests: the same limits, kept by the fast path.
    guard: requestGuardLimits,
  });
  const streams = new StreamLimits({
    ...(options.streams ?? {
      pools: { streams: { openMax: streamsOpenMax, perConnectionMax: streamsPerConnectionMax } },
      poolOf: () => "streams",
    }),
    acquire: () => gate.openStream(),
    release: () => gate.closeStream(),
  });
  const connectHandler = tallyNodeAdapter({
    ...options.connect,
    jsonOptions: { ...options.json?.readOptions, ...options.json?.writeOptions },
    routes: streams.routes(fastPath.routes(options.routes)),
    interceptors,
    requestGate: options.requestGate,
    readMaxBytes: options.readMaxBytes,
    fallback: options.fallback ?? notFound,
  });
  // Header limits and the stalled-body timer apply to both paths.
  // Streams are admitted (or refused) from the path alone, before the key is
  // checked or the body read: HTTP/2 streams in serveStreamsFirst, before any
  // request object is built; HTTP/1.1 requests here.
  const requestCheck = options.requestCheck;
  const handler = guardRequests((req, res) => {
    if (req.httpVersionMajor < 2) {
      const denied = requestCheck?.(req.headers.host, req.headers.origin);
      if (denied !== undefined) {
        writeProtocolError(req, res, Code.PermissionDenied, denied);
        return;
      }
      const refusal = streams.admit(pathOf(req.url), connectionOf(req.socket), (release) => res.once("close", release));
      if (refusal !== undefined) {
        writeProtocolError(req, res, Code.ResourceExhausted, refusal);
        return;
      }
    }
    if (!fastPath.handle(req, res)) connectHandler(req, res);
  });

  const http2Options = {
    settings: { maxConcurrentStreams: http2StreamsPerConnectionMax, maxHeaderListSize: transportHeadersBytesMax },
    maxHeaderListPairs: transportHeadersCountMax,
  };
  const { max: connectionsLimit, ...timeouts } = { ...connectionDefaults, ...options.connections };
  const connections = new ConnectionTracker(connectionsLimit, timeouts);
  const sessions = new Set<http2.ServerHttp2Session>();
  const trackSession = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // session.socket is http2's proxy of the socket: reads pass through.
    const connection = connectionOf(session.socket);
    if (connection === undefined) return;
    attachConnection(session, connection);
    // Idle: GOAWAY, and the socket goes if the peer does not let it close.
    connection.expire = () => {
      session.close();
      setTimeout(() => session.destroy(), http2GoawayCloseMs).unref();
    };
    connection.enter("http2");
  };
  // An HTTP/1.1 request is a call on its connection from its complete head to its answer.
  const trackHttp1Request = (req: Request, res: Response) => {
    if (req.httpVersionMajor >= 2) return; // HTTP/2 streams are counted as streams
    const connection = connectionOf(req.socket);
    if (connection === undefined) return;
    connection.callStarted();
    res.once("close", () => connection.callEnded());
  };
  let h1: http.Server | undefined;
  let secure: http2.Http2SecureServer | undefined;
  let listener: net.Server;
  if (options.tls == null) {
    const h2 = http2.createServer(http2Options, handler);
    serveStreamsFirst(h2, fastPath, streams, requestCheck);
    h2.on("session", trackSession);
    // Never listen()s (routeByPreface hands it sockets), so Node's own
    // headers/request timeout checker never runs: ConnectionTracker keeps the
    // head deadline (http1HeadMs) and guardRequests the body's.
    const cleartextH1 = http.createServer({ keepAliveTimeout: http1KeepAliveTimeoutMs, maxHeaderSize: transportHeadersBytesMax }, handler);
    cleartextH1.maxHeadersCount = transportHeadersCountMax;
    cleartextH1.on("request", trackHttp1Request);
    h1 = cleartextH1;
    listener = net.createServer((socket) => {
      const connection = connections.admit(socket, "sniff");
      if (connection === undefined) return;
      routeByPreface(socket, cleartextH1, h2, () => connection.enter("http1"));
    });
  } else {
    // ALPN offers h2 and http/1.1; a client that offers neither is refused.
    secure = http2.createSecureServer(
      { ...http2Options, cert: options.tls.cert, key: options.tls.key, allowHTTP1: true, handshakeTimeout: timeouts.tlsHandshakeMs },
      handler,
    );
    serveStreamsFirst(secure, fastPath, streams, requestCheck);
    secure.on("connection", (socket: net.Socket) => connections.admit(socket, "tls-handshake"));
    // Before http2's own listener, which starts the HTTP/2 session (trackSession
    // then finds the connection through the TLS socket).
    secure.prependListener("secureConnection", (tlsSocket: net.Socket & { _parent?: net.Socket }) => {
      const connection = connectionOf(tlsSocket._parent);
      if (connection === undefined) return;
      attachConnection(tlsSocket, connection);
      connection.enter("http1");
    });
    secure.on("session", trackSession);
    secure.on("request", trackHttp1Request);
    listener = secure;
  }
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port, options.host, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const address = listener.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;

  let closing: Promise<boolean> | undefined;
  const close = (drainMs: number, afterDrain?: () => Promise<void> | void) =>
    (closing ??= (async () => {
      gate.startDraining();
      const listenerClosed = new Promise<void>((resolve) => listener.close(() => resolve()));
      // Connections stay open while in-flight calls finish, so a call that
      // arrives meanwhile gets a clear UNAVAILABLE from the gate rather than a
      // reset stream; then GOAWAY and close.
      const deadlineMs = Date.now() + drainMs;
      const drained = await gate.waitIdle(drainMs);
      await afterDrain?.();
      // GOAWAY; each session closes once its last responses are written.
      const sessionsClosed = [...sessions].map(
        (session) =>
          new Promise<void>((resolve) => {
            session.once("close", () => resolve());
            session.close();
          }),
      );
      h1?.closeIdleConnections();
      await Promise.race([
        Promise.all(sessionsClosed),
        new Promise((resolve) => setTimeout(resolve, Math.max(0, deadlineMs - Date.now())).unref()),
      ]);
      connections.stop();
      for (const connection of connections.sockets()) connection.socket.destroy();
      await listenerClosed;
      return drained;
    })());

  return {
    url: `${secure ? "https" : "http"}://${host}:${address.port}`,
    address,
    tls: secure !== undefined,
    gate,
    fastPath,
    connections,
    streams,
    setSecureContext: (files) => secure?.setSecureContext({ cert: files.cert, key: files.key }),
    close,
  };
}

/** Offers every new HTTP/2 stream to the fast path before the server's
 * compatibility layer sees it. Node's http2 server turns each 'stream' event
 * into an Http2ServerRequest/Http2ServerResponse pair and a 'request' event;
 * for a unary call that is most of the transport's cost. A stream the fast
 * path takes is answered on the raw stream (as @grpc/grpc-js does) and never
 * reaches that layer; any other stream is emitted unchanged and goes through
 * the request guards to Connect's router. Node emits 'stream' on the server
 * by property lookup (`server.emit('stream', stream, headers, flags,
 * rawHeaders)`), so wrapping this instance's emit is enough. */
function serveStreamsFirst(
  server: http2.Http2Server | http2.Http2SecureServer,
  fastPath: UnaryFastPath,
  streams: StreamLimits,
  requestCheck: RpcServerOptions["requestCheck"],
): void {
  const emit = server.emit;
  server.emit = function (this: typeof server, event: string | symbol, ...args: unknown[]): boolean {
    // args: (stream, headers, flags, rawHeaders) for 'stream'.
    if (event === "stream") {
      // A stream is a call on its connection until it closes.
      const stream = args[0] as http2.ServerHttp2Stream;
      const connection = connectionOf(stream.session);
      if (connection !== undefined) {
        connection.callStarted();
        stream.once("close", () => connection.callEnded());
      }
      const headers = args[1] as http2.IncomingHttpHeaders;
      const denied = requestCheck?.(headers[":authority"] ?? headers.host, headers.origin);
      if (denied !== undefined) {
        refuseStream(stream, headers, Code.PermissionDenied, denied);
        return true;
      }
      const refusal = streams.admit(pathOf(headers[":path"]), connection, (release) => stream.once("close", release));
      if (refusal !== undefined) {
        refuseStream(stream, headers, Code.ResourceExhausted, refusal);
        return true;
      }
    }
    if (
      event === "stream" &&
      fastPath.handleStream(args[0] as http2.ServerHttp2Stream, args[1] as http2.IncomingHttpHeaders, args[3] as string[] | undefined)
    )
      return true;
    return Reflect.apply(emit, this, [event, ...args]) as boolean;
  } as typeof server.emit;
}

/** Answers a raw HTTP/2 stream with an error in its protocol, unread. */
function refuseStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, code: Code, message: string): void {
  stream.on("error", () => {}); // the peer may reset it first
  writeErrorAnswer(new StreamSink(stream), errorWireOf(String(headers["content-type"] ?? "")), new ConnectError(message, code), {
    trailersOnly: true,
  });
  // The request body is not wanted.
  stream.resume();
}

/** The path of a request target, without its query. */
function pathOf(target: string | undefined): string {
  const url = target ?? "";
  const query = url.indexOf("?");
  return query < 0 ? url : url.slice(0, query);
}

/** Hands a new connection to the HTTP/2 server if it starts with the client
 * preface, otherwise to the HTTP/1.1 server. */
function routeByPreface(socket: net.Socket, h1: http.Server, h2: http2.Http2Server, onHttp1: () => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, http2Preface.length);
    const prefixMatches = seen.subarray(0, n).equals(http2Preface.subarray(0, n));
    if (prefixMatches && seen.length < http2Preface.length) return; // wait for the rest of the preface
    socket.off("data", onData);
    socket.pause();
    socket.unshift(seen);
    if (prefixMatches) {
      // http2 reads the socket's handle directly and picks up the unshifted
      // bytes itself (node#41185); resuming here would emit them to nobody.
      h2.emit("connection", socket);
    } else {
      onHttp1();
      h1.emit("connection", socket);
      socket.resume();
    }
  };
  // A client that sends nothing (or only part of the preface) is closed by
  // the ConnectionTracker's sniff deadline.
  socket.on("data", onData);
}
