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
//
// Two entries: handle() takes an http/1.1 or http2 compatibility request and
// response; handleStream() takes a raw HTTP/2 stream (the server's 'stream'
// event), so an HTTP/2 call never builds the compatibility objects at all.
import { headersOverLimits } from "./http-guard.ts";
import type http from "node:http";
import type http2 from "node:http2";
import { create, isMessage, type DescMessage, type DescService, type JsonReadOptions, type JsonWriteOptions } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createServiceImplSpec,
  type ConnectRouter,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import {
  type Body,
  type CompatResponse,
  type Entry,
  type Invoke,
  Protocol,
  type Request,
  type UnarySpec,
  acceptedTimeoutMs,
  ignore,
  protocolOf,
} from "./fast-path-wire.ts";
import { FastContext, FastContextValues, FastRequest, FastResponse } from "./fast-path-context.ts";
import { decodeRequest, writeFailure, writeSuccess } from "./fast-path-answers.ts";
import { CompatSink, type Sink, StreamSink } from "./fast-path-sinks.ts";

/** A raw stream whose body has not fully arrived yet. */
interface Receiving {
  readonly sinceMs: number;
  readonly stream: http2.ServerHttp2Stream;
  /** Answers DEADLINE_EXCEEDED and closes the stream. */
  expire(): void;
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
  /** The request guards (src/transport/http-guard.ts) for raw HTTP/2 streams, which
   * do not pass through guardRequests: a stream over the header limits is left
   * to the compatibility path (whose guard refuses it), and a body that has
   * not arrived within bodyReceiveMs is answered DEADLINE_EXCEEDED. */
  guard?: { headersCountMax: number; headersBytesMax: number; bodyReceiveMs: number };
}

export class UnaryFastPath {
  readonly #methods = new Map<string, Entry>();
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
          this.#add({
            service: method.parent,
            methods: { [method.localName]: { kind: method.methodKind, method, impl } as MethodImplSpec },
          });
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
        const values = req.contextValues;
        // Interceptors pass the call's context values on (they may add to them).
        if (!(values instanceof FastContextValues))
          throw new ConnectError("an interceptor replaced the call's context values", Code.Internal);
        const ctx = values.ctx;
        const output = await unary.impl(req.message as never, ctx);
        return new FastResponse(
          ctx,
          isMessage(output, method.output) ? output : create(method.output as DescMessage, output as never),
        ) as unknown as UnaryResponse;
      };
      const invoke = this.#options.interceptors.reduceRight<Invoke>((next, interceptor) => interceptor(next as never) as never, innermost);
      this.#methods.set(`/${method.parent.typeName}/${method.name}`, { spec: unary, invoke });
    }
  }

  /** Serves the call and returns true, or returns false (touching nothing) when
   * the call is not one the fast path takes. */
  handle(req: Request, res: http.ServerResponse | http2.Http2ServerResponse): boolean {
    if (req.method !== "POST") return false;
    const path = req.url ?? "";
    const entry = this.#methods.get(path);
    if (entry === undefined) return false;
    const headers = req.headers;
    const protocol = protocolOf(headers["content-type"]);
    // gRPC needs HTTP/2 (its trailers).
    const timeoutMs =
      protocol === undefined || (protocol === Protocol.grpc && req.httpVersionMajor !== 2) ? null : acceptedTimeoutMs(headers, protocol);
    if (protocol === undefined || timeoutMs === null) {
      this.stats.declined++;
      return false;
    }
    this.stats.served++;
    this.#serve(
      req,
      new CompatSink(res as CompatResponse),
      new FastContext(headers, path, entry.spec.method, protocol, timeoutMs),
      entry,
      protocol,
      undefined,
    );
    return true;
  }

  /** The same for a raw HTTP/2 stream (the server's 'stream' event, with its
   * headers and raw header list): serves it and returns true, or returns false,
   * touching nothing, and the stream goes on to the compatibility path. */
  handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, rawHeaders: readonly string[] | undefined): boolean {
    if (headers[":method"] !== "POST") return false;
    const path = headers[":path"] ?? "";
    const entry = this.#methods.get(path);
    if (entry === undefined) return false;
    const guard = this.#options.guard;
    if (guard !== undefined && (rawHeaders === undefined || headersOverLimits(rawHeaders, guard) !== null)) return false;
    const protocol = protocolOf(headers["content-type"]);
    const timeoutMs = protocol === undefined ? null : acceptedTimeoutMs(headers, protocol);
    // Declined: counted once, by handle() on the compatibility path.
    if (protocol === undefined || timeoutMs === null) return false;
    this.stats.served++;
    // A stream reset by the peer emits 'error'; the call it carried just ends.
    stream.on("error", ignore);
    this.#serve(
      stream,
      new StreamSink(stream),
      new FastContext(headers, path, entry.spec.method, protocol, timeoutMs),
      entry,
      protocol,
      stream,
    );
    return true;
  }

  #serve(body: Body, sink: Sink, ctx: FastContext, entry: Entry, protocol: Protocol, stream: http2.ServerHttp2Stream | undefined): void {
    const gate = this.#options.requestGate;
    if (gate === undefined) {
      this.#receive(body, sink, entry, protocol, ctx, stream);
      return;
    }
    let gated: void | Promise<void>;
    try {
      gated = gate(ctx);
    } catch (error) {
      this.#refuse(body, sink, protocol, error, ctx);
      return;
    }
    if (gated instanceof Promise) {
      gated.then(
        () => this.#receive(body, sink, entry, protocol, ctx, stream),
        (error: unknown) => this.#refuse(body, sink, protocol, error, ctx),
      );
    } else {
      this.#receive(body, sink, entry, protocol, ctx, stream);
    }
  }

  /** A call refused before its body was read: answer, and drop the body. */
  #refuse(body: Body, sink: Sink, protocol: Protocol, error: unknown, ctx: FastContext): void {
    writeFailure(
      sink,
      protocol,
      error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error),
      ctx,
    );
    body.resume();
  }

  #receive(body: Body, sink: Sink, entry: Entry, protocol: Protocol, ctx: FastContext, stream: http2.ServerHttp2Stream | undefined): void {
    const enveloped = protocol === Protocol.grpc || protocol === Protocol.grpcWeb;
    // An envelope adds 5 bytes to the message.
    const bodyBytesMax = this.#options.readMaxBytes + (enveloped ? 5 : 0);
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    // A raw stream's stalled body is limited here (guardRequests does it on
    // the compatibility path): the same error, then the stream is closed.
    let receiving: Receiving | undefined;
    const bodyReceiveMs = this.#options.guard?.bodyReceiveMs;
    if (stream !== undefined && bodyReceiveMs !== undefined) {
      receiving = {
        sinceMs: performance.now(),
        stream,
        expire: () => {
          if (refused) return;
          refused = true;
          // gRPC trailers-only (the status in the one HEADERS frame), as
          // guardRequests answers it: nothing is left to send when the stream
          // is destroyed right after.
          writeFailure(
            sink,
            protocol,
            new ConnectError(`the request body did not arrive within ${bodyReceiveMs} ms`, Code.DeadlineExceeded),
            ctx,
            true,
          );
          // Release the stream (and its buffered bytes).
          setImmediate(() => stream.destroy());
        },
      };
      this.#track(receiving, bodyReceiveMs);
    }
    body.on("data", (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > bodyBytesMax) {
        refused = true;
        if (receiving !== undefined) this.#receiving.delete(receiving);
        writeFailure(
          sink,
          protocol,
          new ConnectError(
            `message size ${size - (enveloped ? 5 : 0)} is larger than configured readMaxBytes ${this.#options.readMaxBytes}`,
            Code.ResourceExhausted,
          ),
          ctx,
        );
        return;
      }
      chunks.push(chunk);
    });
    body.once("end", () => {
      if (receiving !== undefined) this.#receiving.delete(receiving);
      if (refused) return;
      const bytes = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
      this.#call(sink, entry, protocol, ctx, bytes).catch((error: unknown) => {
        // Only a failure to write the response ends up here; the peer is gone.
        sink.destroy(error instanceof Error ? error : undefined);
      });
    });
  }

  /** Raw streams whose body is still arriving, checked by one sweep timer
   * rather than a timer and a 'close' listener per call. A stream is answered
   * DEADLINE_EXCEEDED between bodyReceiveMs and bodyReceiveMs + one sweep
   * interval (a tenth of it, at most 1 s) after its headers. */
  readonly #receiving = new Set<Receiving>();
  #sweep: NodeJS.Timeout | undefined;

  #track(receiving: Receiving, bodyReceiveMs: number): void {
    this.#receiving.add(receiving);
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(
      () => {
        const nowMs = performance.now();
        for (const r of this.#receiving) {
          // Reset or closed before its body ended: nothing to answer.
          if (r.stream.destroyed || r.stream.closed) this.#receiving.delete(r);
          else if (nowMs - r.sinceMs >= bodyReceiveMs) {
            this.#receiving.delete(r);
            r.expire();
          }
        }
        if (this.#receiving.size === 0) {
          clearInterval(this.#sweep);
          this.#sweep = undefined;
        }
      },
      Math.max(1, Math.min(1_000, Math.floor(bodyReceiveMs / 10))),
    );
    this.#sweep.unref();
  }

  async #call(sink: Sink, entry: Entry, protocol: Protocol, ctx: FastContext, body: Buffer): Promise<void> {
    const method = entry.spec.method;
    let message;
    try {
      message = decodeRequest(this.#options, method, protocol, body);
    } catch (error) {
      // The caller's bytes, not a server fault (same wording as the router's path).
      writeFailure(
        sink,
        protocol,
        error instanceof ConnectError
          ? error
          : new ConnectError(`cannot decode the request: ${(error as Error).message}`, Code.InvalidArgument, undefined, undefined, error),
        ctx,
      );
      return;
    }
    let response: UnaryResponse;
    try {
      response = await entry.invoke(new FastRequest(ctx, message) as unknown as UnaryRequest);
    } catch (error) {
      const connectError =
        error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error);
      writeFailure(sink, protocol, connectError, ctx);
      return;
    }
    writeSuccess(this.#options, sink, protocol, method, response);
  }
}
