// The unary fast path: answers the common unary calls without Connect's
// generic streaming pipeline (docs/decisions/0007-unary-fast-path.md).
//
// Handled here: POST of a registered unary method, uncompressed, in
//   gRPC            application/grpc, application/grpc+proto (HTTP/2)
//   gRPC-Web        application/grpc-web, application/grpc-web+proto
//   Connect unary   application/proto, application/json
// with or without a deadline. Everything else (streams, compression, GET,
// text encodings, other content types, odd versions) is declined before the
// body is read and goes to Connect's router unchanged.
//
// The call itself is the same as on the router: the same service
// implementation (createServiceImplSpec), the same interceptors (auth, logging,
// metrics, the lifecycle gate) and the same ConnectError codes. What is left
// out is the work a unary call does not need: no async-iterable pipeline, no
// linked AbortControllers, headers built only if someone reads them, and the
// answer written as headers + message + trailers in one go.
import type http from "node:http";
import type http2 from "node:http2";
import { create, fromBinary, fromJsonString, isMessage, toBinary, toJsonString, type DescMessage, type DescMethod, type DescService, type JsonReadOptions, type JsonWriteOptions } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  createServiceImplSpec,
  type ConnectRouter,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { connectErrorBody, connectHttpStatus, grpcStatus } from "./wire-errors.ts";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
/** What the fast path needs of http.ServerResponse and http2.Http2ServerResponse alike. */
interface Response {
  readonly headersSent: boolean;
  writeHead(statusCode: number, headers: Record<string, string>): unknown;
  addTrailers(trailers: Record<string, string>): void;
  end(data?: Uint8Array | string): unknown;
  destroy(error?: Error): unknown;
}
type UnarySpec = MethodImplSpec & { kind: "unary" };

const Protocol = { grpc: 1, grpcWeb: 2, connectProto: 3, connectJson: 4 } as const;
type Protocol = (typeof Protocol)[keyof typeof Protocol];

const protocolName: Record<Protocol, string> = { 1: "grpc", 2: "grpc-web", 3: "connect", 4: "connect" };
const responseContentType: Record<Protocol, string> = {
  1: "application/grpc+proto",
  2: "application/grpc-web+proto",
  3: "application/proto",
  4: "application/json",
};

function protocolOf(contentType: string | undefined): Protocol | undefined {
  switch (contentType) {
    case "application/grpc":
    case "application/grpc+proto":
      return Protocol.grpc;
    case "application/grpc-web":
    case "application/grpc-web+proto":
      return Protocol.grpcWeb;
    case "application/proto":
      return Protocol.connectProto;
    case "application/json":
    case "application/json; charset=utf-8":
    case "application/json;charset=utf-8":
      return Protocol.connectJson;
    default:
      return undefined;
  }
}

/** gRPC timeout: 1..8 digits and a unit (gRPC over HTTP/2, "Timeout"). */
function parseGrpcTimeoutMs(value: string): number | undefined {
  const match = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (match === null) return undefined;
  const n = Number(match[1]);
  const ms = { H: n * 3_600_000, M: n * 60_000, S: n * 1_000, m: n, u: n / 1_000, n: n / 1_000_000 }[match[2] as "H" | "M" | "S" | "m" | "u" | "n"];
  return ms;
}

/** Connect timeout: 1..10 digits of milliseconds. */
function parseConnectTimeoutMs(value: string): number | undefined {
  return /^\d{1,10}$/.test(value) ? Number(value) : undefined;
}

const neverAborted = new AbortController().signal;
const kContext = createContextKey<HandlerContext | undefined>(undefined, { description: "fast-path handler context" });

/** The request headers as a Headers object, built only when something reads them. */
function lazyHeaders(raw: http.IncomingHttpHeaders): () => Headers {
  let headers: Headers | undefined;
  return () => {
    if (headers === undefined) {
      headers = new Headers();
      for (const name in raw) {
        if (name.charCodeAt(0) === 58 /* ":" pseudo-header */) continue;
        const value = raw[name];
        if (Array.isArray(value)) for (const v of value) headers.append(name, v);
        else if (value !== undefined) headers.append(name, value);
      }
    }
    return headers;
  };
}

function headersToObject(target: Record<string, string>, headers: Headers, prefix = ""): Record<string, string> {
  headers.forEach((value, name) => {
    target[prefix + name] = value;
  });
  return target;
}

export interface UnaryFastPathOptions {
  interceptors: Interceptor[];
  /** Runs with the call's context before any body byte is read (as Connect's
   * requestGate): a throw answers the call with that error. */
  requestGate?: (ctx: HandlerContext) => void | Promise<void>;
  /** Largest message accepted, as Connect's readMaxBytes. */
  readMaxBytes: number;
  jsonReadOptions?: Partial<JsonReadOptions>;
  jsonWriteOptions?: Partial<JsonWriteOptions>;
}

export class UnaryFastPath {
  readonly #methods = new Map<string, { spec: UnarySpec; invoke: (req: UnaryRequest) => Promise<UnaryResponse> }>();
  readonly #options: UnaryFastPathOptions;
  /** Calls answered here, and calls of a registered unary method passed on to
   * the router (compressed, GET, other encodings): for tests and metrics. */
  readonly stats = { served: 0, declined: 0 };

  constructor(options: UnaryFastPathOptions) {
    // Connect's default: unknown JSON fields are ignored (forward compatibility).
    this.#options = { ...options, jsonReadOptions: { ignoreUnknownFields: true, ...options.jsonReadOptions } };
  }

  /** Wraps a routes function so every unary method it registers is also
   * served by the fast path, with the same implementation. */
  routes(register: (router: ConnectRouter) => void): (router: ConnectRouter) => void {
    return (router) => {
      const recording: ConnectRouter = {
        get handlers() {
          return router.handlers;
        },
        service: (service, impl, options) => {
          this.#add(createServiceImplSpec(service, impl));
          return router.service(service, impl, options);
        },
        rpc: (method, impl, options) => {
          this.#add({ service: method.parent, methods: { [method.localName]: { kind: method.methodKind, method, impl } as MethodImplSpec } });
          return router.rpc(method, impl as never, options);
        },
      };
      register(recording);
    };
  }

  #add(serviceSpec: { service: DescService; methods: Record<string, MethodImplSpec> }): void {
    for (const spec of Object.values(serviceSpec.methods)) {
      if (spec.kind !== "unary") continue;
      const unary = spec as UnarySpec;
      const method = unary.method;
      // The innermost step: the implementation itself, then the interceptors
      // around it, composed once per method as Connect does per call.
      const innermost = async (req: UnaryRequest): Promise<UnaryResponse> => {
        const ctx = req.contextValues.get(kContext) as HandlerContext;
        const output = await unary.impl(req.message as never, ctx);
        return {
          stream: false,
          service: method.parent,
          method,
          header: ctx.responseHeader,
          trailer: ctx.responseTrailer,
          message: isMessage(output, method.output) ? output : create(method.output as DescMessage, output as never),
          contextValues: req.contextValues,
        } as UnaryResponse;
      };
      const invoke = this.#options.interceptors.reduceRight<(req: UnaryRequest) => Promise<UnaryResponse>>(
        (next, interceptor) => interceptor(next as never) as never,
        innermost,
      );
      this.#methods.set(`/${method.parent.typeName}/${method.name}`, { spec: unary, invoke });
    }
  }

  /** Serves the call and returns true, or returns false (touching nothing) when
   * the call is not one the fast path takes. */
  handle(req: Request, res: http.ServerResponse | http2.Http2ServerResponse): boolean {
    if (req.method !== "POST") return false;
    const entry = this.#methods.get(req.url ?? "");
    if (entry === undefined) return false;
    const served = this.#accept(req);
    if (served === undefined) {
      this.stats.declined++;
      return false;
    }
    this.stats.served++;
    this.#serve(req, res as Response, entry, served.protocol, served.timeoutMs);
    return true;
  }

  /** Decides from the headers alone, before any body byte is read. */
  #accept(req: Request): { protocol: Protocol; timeoutMs: number | undefined } | undefined {
    const h = req.headers;
    const protocol = protocolOf(h["content-type"]);
    if (protocol === undefined) return undefined;
    let timeoutMs: number | undefined;
    if (protocol === Protocol.grpc || protocol === Protocol.grpcWeb) {
      if (protocol === Protocol.grpc && req.httpVersionMajor !== 2) return undefined;
      const encoding = h["grpc-encoding"];
      if (encoding !== undefined && encoding !== "identity") return undefined;
      const timeout = h["grpc-timeout"];
      if (timeout !== undefined) {
        timeoutMs = parseGrpcTimeoutMs(timeout as string);
        if (timeoutMs === undefined) return undefined;
      }
    } else {
      const encoding = h["content-encoding"];
      if (encoding !== undefined && encoding !== "identity") return undefined;
      const version = h["connect-protocol-version"];
      if (version !== undefined && version !== "1") return undefined;
      const timeout = h["connect-timeout-ms"];
      if (timeout !== undefined) {
        timeoutMs = parseConnectTimeoutMs(timeout as string);
        if (timeoutMs === undefined) return undefined;
      }
    }
    return { protocol, timeoutMs };
  }

  #serve(req: Request, res: Response, entry: { spec: UnarySpec; invoke: (req: UnaryRequest) => Promise<UnaryResponse> }, protocol: Protocol, timeoutMs: number | undefined): void {
    const ctx = this.#context(req, entry.spec.method, protocol, timeoutMs);
    const gate = this.#options.requestGate;
    if (gate === undefined) {
      this.#receive(req, res, entry, protocol, ctx);
      return;
    }
    let gated: void | Promise<void>;
    try {
      gated = gate(ctx);
    } catch (error) {
      this.#refuse(req, res, protocol, error, ctx);
      return;
    }
    if (gated instanceof Promise) {
      gated.then(
        () => this.#receive(req, res, entry, protocol, ctx),
        (error: unknown) => this.#refuse(req, res, protocol, error, ctx),
      );
    } else {
      this.#receive(req, res, entry, protocol, ctx);
    }
  }

  /** A call refused before its body was read: answer, and drop the body. */
  #refuse(req: Request, res: Response, protocol: Protocol, error: unknown, ctx: HandlerContext): void {
    this.#fail(res, protocol, error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error), ctx);
    req.resume();
  }

  #context(req: Request, method: DescMethod, protocol: Protocol, timeoutMs: number | undefined): HandlerContext {
    const headerOf = lazyHeaders(req.headers);
    let responseHeader: Headers | undefined;
    let responseTrailer: Headers | undefined;
    const deadlineMs = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    // The deadline's signal (a timer) is made only if something reads it: most
    // reads never do. AbortSignal.timeout takes whole ms; gRPC deadlines may be µs.
    let signal: AbortSignal | undefined = deadlineMs === undefined ? neverAborted : undefined;
    const signalOf = () => (signal ??= AbortSignal.timeout(Math.max(0, Math.ceil((deadlineMs as number) - Date.now()))));
    const values = createContextValues();
    const ctx: HandlerContext = {
      service: method.parent,
      method,
      protocolName: protocolName[protocol],
      requestMethod: "POST",
      url: `http://${req.headers[":authority"] ?? req.headers.host ?? "localhost"}${req.url}`,
      get signal() {
        return signalOf();
      },
      timeoutMs: () => (deadlineMs === undefined ? undefined : deadlineMs - Date.now()),
      get requestHeader() {
        return headerOf();
      },
      get responseHeader() {
        return (responseHeader ??= new Headers());
      },
      get responseTrailer() {
        return (responseTrailer ??= new Headers());
      },
      values,
    };
    values.set(kContext, ctx);
    return ctx;
  }

  #receive(req: Request, res: Response, entry: { spec: UnarySpec; invoke: (req: UnaryRequest) => Promise<UnaryResponse> }, protocol: Protocol, ctx: HandlerContext): void {
    const enveloped = protocol === Protocol.grpc || protocol === Protocol.grpcWeb;
    // An envelope adds 5 bytes to the message.
    const bodyBytesMax = this.#options.readMaxBytes + (enveloped ? 5 : 0);
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on("data", (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > bodyBytesMax) {
        refused = true;
        this.#fail(res, protocol, new ConnectError(`message size ${size - (enveloped ? 5 : 0)} is larger than configured readMaxBytes ${this.#options.readMaxBytes}`, Code.ResourceExhausted), ctx);
        return;
      }
      chunks.push(chunk);
    });
    req.once("end", () => {
      if (refused) return;
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
      this.#call(res, entry, protocol, ctx, body).catch((error: unknown) => {
        // Only a failure to write the response ends up here; the peer is gone.
        res.destroy(error instanceof Error ? error : undefined);
      });
    });
  }

  async #call(res: Response, entry: { spec: UnarySpec; invoke: (req: UnaryRequest) => Promise<UnaryResponse> }, protocol: Protocol, ctx: HandlerContext, body: Buffer): Promise<void> {
    const method = entry.spec.method;
    let message;
    try {
      message = this.#decode(method, protocol, body);
    } catch (error) {
      // The caller's bytes, not a server fault (same wording as the router's path).
      this.#fail(res, protocol, error instanceof ConnectError ? error : new ConnectError(`cannot decode the request: ${(error as Error).message}`, Code.InvalidArgument, undefined, undefined, error), ctx);
      return;
    }
    let response: UnaryResponse;
    try {
      response = await entry.invoke({
        stream: false,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: ctx.url,
        get signal() {
          return ctx.signal;
        },
        get header() {
          return ctx.requestHeader;
        },
        contextValues: ctx.values,
        message,
      } as UnaryRequest);
    } catch (error) {
      const connectError = error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error);
      this.#fail(res, protocol, connectError, ctx);
      return;
    }
    this.#succeed(res, protocol, method, response);
  }

  #decode(method: DescMethod, protocol: Protocol, body: Buffer) {
    const input = method.input;
    switch (protocol) {
      case Protocol.connectProto:
        return fromBinary(input, body);
      case Protocol.connectJson:
        return fromJsonString(input, body.toString("utf8"), this.#options.jsonReadOptions);
      default: {
        // The same checks, in the same order and with the same codes, as
        // Connect's envelope reader on the router's path.
        if (body.length === 0) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
        if (body.length < 5) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
        const flags = body[0] as number;
        const length = body.readUInt32BE(1);
        if (length > this.#options.readMaxBytes) {
          throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${this.#options.readMaxBytes}`, Code.ResourceExhausted);
        }
        if (5 + length > body.length) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
        // gRPC-Web's end-of-stream (trailers) flag: the client sent no message.
        if (protocol === Protocol.grpcWeb && (flags & 0x80) !== 0) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
        // gRPC: a compressed message without grpc-encoding is INTERNAL (gRPC over HTTP/2).
        if ((flags & 0b1) !== 0) throw new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal);
        if (5 + length < body.length) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
        return fromBinary(input, body.subarray(5, 5 + length));
      }
    }
  }

  #succeed(res: Response, protocol: Protocol, method: DescMethod, response: UnaryResponse): void {
    const head: Record<string, string> = { "content-type": responseContentType[protocol] };
    headersToObject(head, response.header);
    switch (protocol) {
      case Protocol.connectJson: {
        headersToObject(head, response.trailer, "trailer-");
        res.writeHead(200, head);
        res.end(toJsonString(method.output, response.message as never, this.#options.jsonWriteOptions));
        return;
      }
      case Protocol.connectProto: {
        headersToObject(head, response.trailer, "trailer-");
        res.writeHead(200, head);
        res.end(toBinary(method.output, response.message as never));
        return;
      }
      case Protocol.grpc: {
        res.writeHead(200, head);
        res.addTrailers(headersToObject(grpcStatus(undefined), response.trailer));
        res.end(envelope(0, toBinary(method.output, response.message as never)));
        return;
      }
      case Protocol.grpcWeb: {
        res.writeHead(200, head);
        const trailer = grpcWebTrailer(headersToObject(grpcStatus(undefined), response.trailer));
        const payload = envelope(0, toBinary(method.output, response.message as never));
        res.end(Buffer.concat([payload, trailer]));
        return;
      }
    }
  }

  #fail(res: Response, protocol: Protocol, error: ConnectError, ctx: HandlerContext): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const header: Record<string, string> = {};
    headersToObject(header, ctx.responseHeader);
    switch (protocol) {
      case Protocol.connectJson:
      case Protocol.connectProto: {
        header["content-type"] = "application/json";
        headersToObject(header, error.metadata);
        headersToObject(header, ctx.responseTrailer, "trailer-");
        res.writeHead(connectHttpStatus(error.code), header);
        res.end(connectErrorBody(error));
        return;
      }
      case Protocol.grpc: {
        header["content-type"] = responseContentType[protocol];
        const trailer: Record<string, string> = {};
        headersToObject(trailer, ctx.responseTrailer);
        headersToObject(trailer, error.metadata);
        Object.assign(trailer, grpcStatus(error));
        res.writeHead(200, header);
        res.addTrailers(trailer);
        res.end();
        return;
      }
      case Protocol.grpcWeb: {
        header["content-type"] = responseContentType[protocol];
        const trailer: Record<string, string> = {};
        headersToObject(trailer, ctx.responseTrailer);
        headersToObject(trailer, error.metadata);
        Object.assign(trailer, grpcStatus(error));
        res.writeHead(200, header);
        res.end(grpcWebTrailer(trailer));
        return;
      }
    }
  }
}

function envelope(flags: number, data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + data.byteLength);
  frame[0] = flags;
  frame.writeUInt32BE(data.byteLength, 1);
  frame.set(data, 5);
  return frame;
}

/** A gRPC-Web trailer frame: flag 0x80, then "name: value\r\n" lines. */
function grpcWebTrailer(fields: Record<string, string>): Buffer {
  let text = "";
  for (const name in fields) text += `${name}: ${fields[name]}\r\n`;
  return envelope(0x80, Buffer.from(text, "utf8"));
}
