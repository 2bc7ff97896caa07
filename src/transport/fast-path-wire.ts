// The wire side of the unary fast path: which protocol a request speaks, its
// deadline header, the shapes of requests and bodies it reads, and the gRPC
// framing (envelopes, gRPC-Web trailers) it writes. No state, no I/O.
import type http from "node:http";
import type http2 from "node:http2";
import type { MethodImplSpec, UnaryRequest, UnaryResponse } from "@connectrpc/connect";

export type Request = http.IncomingMessage | http2.Http2ServerRequest;
/** What the fast path needs of http.ServerResponse and http2.Http2ServerResponse alike. */
export interface CompatResponse {
  readonly headersSent: boolean;
  writeHead(statusCode: number, headers: Record<string, string>): unknown;
  addTrailers(trailers: Record<string, string>): void;
  end(data?: Uint8Array | string): unknown;
  destroy(error?: Error): unknown;
}
/** The request body: a compatibility request or a raw HTTP/2 stream alike. */
export interface Body {
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  once(event: "end", listener: () => void): unknown;
  resume(): unknown;
}
export type UnarySpec = MethodImplSpec & { kind: "unary" };
export type Invoke = (req: UnaryRequest) => Promise<UnaryResponse>;
export interface Entry {
  spec: UnarySpec;
  invoke: Invoke;
}

export const Protocol = { grpc: 1, grpcWeb: 2, connectProto: 3, connectJson: 4 } as const;
export type Protocol = (typeof Protocol)[keyof typeof Protocol];

export const protocolName: Record<Protocol, string> = { 1: "grpc", 2: "grpc-web", 3: "connect", 4: "connect" };
export const responseContentType: Record<Protocol, string> = {
  1: "application/grpc+proto",
  2: "application/grpc-web+proto",
  3: "application/proto",
  4: "application/json",
};

export function protocolOf(contentType: string | undefined): Protocol | undefined {
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
export function parseGrpcTimeoutMs(value: string): number | undefined {
  // Every call with a deadline parses one: no regex match array, no table per call.
  const digits = value.length - 1;
  if (digits < 1 || digits > 8) return undefined;
  let n = 0;
  for (let i = 0; i < digits; i++) {
    const d = value.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return undefined;
    n = n * 10 + d;
  }
  switch (value[digits]) {
    case "H":
      return n * 3_600_000;
    case "M":
      return n * 60_000;
    case "S":
      return n * 1_000;
    case "m":
      return n;
    case "u":
      return n / 1_000;
    case "n":
      return n / 1_000_000;
    default:
      return undefined;
  }
}

/** Connect timeout: 1..10 digits of milliseconds. */
export function parseConnectTimeoutMs(value: string): number | undefined {
  return /^\d{1,10}$/.test(value) ? Number(value) : undefined;
}

/** The call's timeout in ms (undefined: none), or null when the fast path
 * declines the call: compressed, an unknown protocol version, a malformed
 * timeout. Decided from the headers alone, before any body byte is read. */
export function acceptedTimeoutMs(h: http.IncomingHttpHeaders, protocol: Protocol): number | undefined | null {
  let timeout: string | string[] | undefined;
  if (protocol === Protocol.grpc || protocol === Protocol.grpcWeb) {
    const encoding = h["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return null;
    timeout = h["grpc-timeout"];
    if (timeout === undefined) return undefined;
    return parseGrpcTimeoutMs(timeout as string) ?? null;
  }
  const encoding = h["content-encoding"];
  if (encoding !== undefined && encoding !== "identity") return null;
  const version = h["connect-protocol-version"];
  if (version !== undefined && version !== "1") return null;
  timeout = h["connect-timeout-ms"];
  if (timeout === undefined) return undefined;
  return parseConnectTimeoutMs(timeout as string) ?? null;
}

export function ignore(): void {}

export function headersToObject(target: Record<string, string>, headers: Headers | undefined, prefix = ""): Record<string, string> {
  headers?.forEach((value, name) => {
    target[prefix + name] = value;
  });
  return target;
}

export function envelope(flags: number, data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + data.byteLength);
  frame[0] = flags;
  frame.writeUInt32BE(data.byteLength, 1);
  frame.set(data, 5);
  return frame;
}

/** A gRPC-Web trailer frame: flag 0x80, then "name: value\r\n" lines. */
export function grpcWebTrailer(fields: Record<string, string>): Buffer {
  let text = "";
  for (const name in fields) text += `${name}: ${fields[name]}\r\n`;
  return envelope(0x80, Buffer.from(text, "utf8"));
}
