import type http2 from "node:http2";
import type { CompatResponse } from "./fast-path-wire.ts";

/** Where the answer goes: a whole response (status, headers, body, trailers)
 * written in one go. */
export interface Sink {
  readonly headersSent: boolean;
  send(
    status: number,
    headers: Record<string, string>,
    body: Uint8Array | string | undefined,
    trailers: Record<string, string> | undefined,
  ): void;
  destroy(error?: Error): void;
}

/** An http/1.1 or http2 compatibility response. */
export class CompatSink implements Sink {
  readonly #res: CompatResponse;
  constructor(res: CompatResponse) {
    this.#res = res;
  }
  get headersSent(): boolean {
    return this.#res.headersSent;
  }
  send(
    status: number,
    headers: Record<string, string>,
    body: Uint8Array | string | undefined,
    trailers: Record<string, string> | undefined,
  ): void {
    this.#res.writeHead(status, headers);
    if (trailers !== undefined) this.#res.addTrailers(trailers);
    this.#res.end(body);
  }
  destroy(error?: Error): void {
    this.#res.destroy(error);
  }
}

/** A raw HTTP/2 stream, written as @grpc/grpc-js writes one: HEADERS, DATA,
 * and for gRPC a trailing HEADERS frame once the data is out. */
export class StreamSink implements Sink {
  readonly #stream: http2.ServerHttp2Stream;
  constructor(stream: http2.ServerHttp2Stream) {
    this.#stream = stream;
  }
  get headersSent(): boolean {
    return this.#stream.headersSent;
  }
  send(
    status: number,
    headers: Record<string, string>,
    body: Uint8Array | string | undefined,
    trailers: Record<string, string> | undefined,
  ): void {
    const stream = this.#stream;
    // The peer is gone (reset, session closed): nobody to answer.
    if (stream.destroyed || stream.closed) return;
    (headers as Record<string, string | number>)[":status"] = status;
    if (trailers !== undefined) {
      stream.respond(headers, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(trailers));
      stream.end(body);
    } else if (body === undefined) {
      stream.respond(headers, { endStream: true });
    } else {
      stream.respond(headers);
      stream.end(body);
    }
  }
  destroy(error?: Error): void {
    this.#stream.destroy(error);
  }
}
