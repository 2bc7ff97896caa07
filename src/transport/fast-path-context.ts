// The handler context, request and response of one fast-path call: Connect's
// HandlerContext, UnaryRequest and UnaryResponse as plain classes, so a call
// allocates a few objects instead of closures and linked AbortControllers.
import type http from "node:http";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { ContextKey, ContextValues, HandlerContext } from "@connectrpc/connect";
import { type Protocol, protocolName } from "./fast-path-wire.ts";

export const neverAborted = new AbortController().signal;

/** Connect's ContextValues as a class: createContextValues() makes an object
 * with three fresh closures per call. Same semantics and storage (a property
 * per key's symbol; a key's default until set), plus the call's context, so
 * the innermost step finds it without a lookup. */
export class FastContextValues implements ContextValues {
  readonly ctx: FastContext;
  constructor(ctx: FastContext) {
    this.ctx = ctx;
  }
  get<T>(key: ContextKey<T>): T {
    const values = this as unknown as Record<symbol, T>;
    return key.id in values ? (values[key.id] as T) : key.defaultValue;
  }
  set<T>(key: ContextKey<T>, value: T): this {
    (this as unknown as Record<symbol, T>)[key.id] = value;
    return this;
  }
  delete(key: ContextKey<unknown>): this {
    delete (this as unknown as Record<symbol, unknown>)[key.id];
    return this;
  }
}

/** The handler context of one fast-path call, as one object (no closure per
 * field). What costs is made only when read: the request and response
 * Headers, the deadline's signal (a timer), the URL string. */
export class FastContext implements HandlerContext {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly protocolName: string;
  readonly requestMethod = "POST";
  readonly values: FastContextValues;
  readonly #raw: http.IncomingHttpHeaders;
  readonly #path: string;
  readonly #deadlineMs: number | undefined;
  #signal: AbortSignal | undefined;
  #requestHeader: Headers | undefined;
  /** Made when first read; the answer carries them only then. */
  responseHeaderIfMade: Headers | undefined;
  responseTrailerIfMade: Headers | undefined;

  constructor(raw: http.IncomingHttpHeaders, path: string, method: DescMethod, protocol: Protocol, timeoutMs: number | undefined) {
    this.service = method.parent;
    this.method = method;
    this.protocolName = protocolName[protocol];
    this.#raw = raw;
    this.#path = path;
    this.#deadlineMs = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    this.values = new FastContextValues(this);
  }

  get url(): string {
    return `http://${this.#raw[":authority"] ?? this.#raw.host ?? "localhost"}${this.#path}`;
  }

  get signal(): AbortSignal {
    // Most reads never look at it. AbortSignal.timeout takes whole ms; gRPC
    // deadlines may be µs.
    const deadlineMs = this.#deadlineMs;
    return (this.#signal ??=
      deadlineMs === undefined ? neverAborted : AbortSignal.timeout(Math.max(0, Math.ceil(deadlineMs - Date.now()))));
  }

  timeoutMs(): number | undefined {
    return this.#deadlineMs === undefined ? undefined : this.#deadlineMs - Date.now();
  }

  get requestHeader(): Headers {
    if (this.#requestHeader === undefined) {
      const raw = this.#raw;
      const headers = new Headers();
      for (const name in raw) {
        if (name.charCodeAt(0) === 58 /* ":" pseudo-header */) continue;
        const value = raw[name];
        if (Array.isArray(value)) for (const v of value) headers.append(name, v);
        else if (value !== undefined) headers.append(name, value);
      }
      this.#requestHeader = headers;
    }
    return this.#requestHeader;
  }

  get responseHeader(): Headers {
    return (this.responseHeaderIfMade ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.responseTrailerIfMade ??= new Headers());
  }
}

/** The request as the interceptors see it, read through the call's context. */
export class FastRequest {
  readonly stream = false;
  readonly requestMethod = "POST";
  readonly service: DescService;
  readonly method: DescMethod;
  readonly contextValues: ContextValues;
  readonly message: unknown;
  readonly #ctx: FastContext;
  constructor(ctx: FastContext, message: unknown) {
    this.service = ctx.service;
    this.method = ctx.method;
    this.contextValues = ctx.values;
    this.message = message;
    this.#ctx = ctx;
  }
  get url(): string {
    return this.#ctx.url;
  }
  get signal(): AbortSignal {
    return this.#ctx.signal;
  }
  get header(): Headers {
    return this.#ctx.requestHeader;
  }
}

/** The innermost step's answer. Its header and trailer are the context's: when
 * nobody made them (set a header, or read them), the answer adds none. */
export class FastResponse {
  readonly stream = false;
  readonly service: DescService;
  readonly method: DescMethod;
  readonly message: unknown;
  readonly contextValues: ContextValues;
  readonly ctx: FastContext;
  constructor(ctx: FastContext, message: unknown) {
    this.service = ctx.service;
    this.method = ctx.method;
    this.message = message;
    this.contextValues = ctx.values;
    this.ctx = ctx;
  }
  get header(): Headers {
    return this.ctx.responseHeader;
  }
  get trailer(): Headers {
    return this.ctx.responseTrailer;
  }
}
