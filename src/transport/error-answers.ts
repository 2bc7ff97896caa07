// The one writer of error answers on the wire: a ConnectError (with the
// response metadata a handler set) becomes a status, headers, body and
// trailers in the protocol the request speaks. Used by every answer the
// server gives outside Connect's router: the request guard (header limits,
// a stalled body), the connection-level refusals of a raw HTTP/2 stream, and
// the unary fast path, so every path answers alike (the field encodings are
// ./wire-errors.ts's, connect's own helpers where connect has them).
import type { ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, endStreamToJson } from "@connectrpc/connect/protocol-connect";
import { Protocol, envelope, grpcWebTrailer, headersToObject, responseContentType } from "./fast-path-wire.ts";
import type { Sink } from "./fast-path-sinks.ts";
import { connectErrorBody, grpcStatus } from "./wire-errors.ts";

/** The error shapes: gRPC and gRPC-Web (status fields), Connect unary (HTTP
 * status and a JSON body), Connect streaming (an end-of-stream envelope). */
export type ErrorWire = "grpc" | "grpc-web" | "connect" | "connect-stream-json" | "connect-stream-proto";

/** A request's error shape, by its content-type. */
export function errorWireOf(contentType: string): ErrorWire {
  const type = contentType.toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type.startsWith("application/grpc")) return "grpc";
  if (type.startsWith("application/connect+json")) return "connect-stream-json";
  if (type.startsWith("application/connect+")) return "connect-stream-proto";
  return "connect";
}

/** The fast path's (unary) protocols' error shapes. */
export const errorWireOfProtocol: Record<Protocol, ErrorWire> = {
  [Protocol.grpc]: "grpc",
  [Protocol.grpcWeb]: "grpc-web",
  [Protocol.connectProto]: "connect",
  [Protocol.connectJson]: "connect",
};

export interface ErrorMeta {
  /** Response headers and trailers the handler set before failing. */
  header?: Headers | undefined;
  trailer?: Headers | undefined;
  /** gRPC and gRPC-Web: the status in the one HEADERS frame (trailers-only),
   * for answers given before or instead of a call (nothing else is sent);
   * else HTTP/2 trailers (gRPC) or a trailer frame (gRPC-Web). */
  trailersOnly?: boolean;
}

/** Writes `error` to `sink` in `wire`'s shape. Returns false, writing
 * nothing, once the response has started (the caller decides whether to
 * reset it). */
export function writeErrorAnswer(sink: Sink, wire: ErrorWire, error: ConnectError, meta: ErrorMeta = {}): boolean {
  if (sink.headersSent) return false;
  const header = headersToObject({}, meta.header);
  switch (wire) {
    case "connect":
      header["content-type"] = "application/json";
      headersToObject(header, error.metadata);
      headersToObject(header, meta.trailer, "trailer-");
      sink.send(codeToHttpStatus(error.code), header, connectErrorBody(error), undefined);
      return true;
    case "connect-stream-json":
    case "connect-stream-proto": {
      header["content-type"] = wire === "connect-stream-json" ? "application/connect+json" : "application/connect+proto";
      // An end-of-stream envelope (flag 0x02) carrying the error.
      const json = JSON.stringify(endStreamToJson(meta.trailer ?? new Headers(), error, undefined));
      sink.send(200, header, envelope(0x02, Buffer.from(json)), undefined);
      return true;
    }
    case "grpc":
    case "grpc-web": {
      header["content-type"] = responseContentType[wire === "grpc" ? Protocol.grpc : Protocol.grpcWeb];
      const trailer = headersToObject({}, meta.trailer);
      headersToObject(trailer, error.metadata);
      Object.assign(trailer, grpcStatus(error));
      if (meta.trailersOnly === true) sink.send(200, Object.assign(header, trailer), undefined, undefined);
      else if (wire === "grpc") sink.send(200, header, undefined, trailer);
      else sink.send(200, header, grpcWebTrailer(trailer), undefined);
      return true;
    }
  }
}
