// Limits enforced before a request reaches Connect's router: header (metadata)
// size and count, and a request body that stalls. Past a limit the caller gets
// a proper error in its own protocol (gRPC, gRPC-Web or Connect), never a hang
// or a bare connection reset.
import type http from "node:http";
import type http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { requestBodyReceiveMsMax, requestHeadersBytesMax, requestHeadersCountMax } from "../limits.ts";
import { errorWireOf, writeErrorAnswer } from "./error-answers.ts";
import { CompatSink } from "./fast-path-sinks.ts";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;
type Handler = (req: Request, res: Response) => void;

/** Writes a complete error response in the protocol the request speaks, judged
 * by its content-type. Does nothing if a response has already started. */
export function writeProtocolError(req: Request, res: Response, code: Code, message: string): void {
  if (res.writableEnded) return;
  // Trailers-only: the answer is all the call gets (./error-answers.ts).
  writeErrorAnswer(new CompatSink(res), errorWireOf(String(req.headers["content-type"] ?? "")), new ConnectError(message, code), {
    trailersOnly: true,
  });
}

/** The guards' limits from src/limits.ts, for both paths: guardRequests and
 * the fast path's raw HTTP/2 streams (which do not pass through it). */
export const requestGuardLimits: Readonly<{ headersCountMax: number; headersBytesMax: number; bodyReceiveMs: number }> = {
  headersCountMax: requestHeadersCountMax,
  headersBytesMax: requestHeadersBytesMax,
  bodyReceiveMs: requestBodyReceiveMsMax,
};

/** The one header-limit check (this guard's, and the unary fast path's, which
 * leaves a request over the limits to this guard to answer): why the raw
 * header list (name, value, name, value...) is over the limits, or null. */
export function headersOverLimits(raw: readonly string[], limits: { headersCountMax: number; headersBytesMax: number }): string | null {
  const count = raw.length / 2;
  if (count > limits.headersCountMax) return `request has ${count} header fields (metadata entries); at most ${limits.headersCountMax}`;
  let bytes = 0;
  for (const field of raw) bytes += field.length;
  if (bytes > limits.headersBytesMax) return `request headers (metadata) are ${bytes} bytes; at most ${limits.headersBytesMax}`;
  return null;
}

/** Wraps the Connect adapter with the checks that need the raw request:
 *  - headers: at most requestHeadersCountMax entries and requestHeadersBytesMax
 *    bytes (names + values) -> RESOURCE_EXHAUSTED;
 *  - body: a request whose body stops arriving for requestBodyReceiveMsMax is
 *    answered DEADLINE_EXCEEDED and its stream closed, so a slow or stuck
 *    client cannot hold a handler (and its memory) forever. */
export function guardRequests(handler: Handler, limits = requestGuardLimits): Handler {
  return (req, res) => {
    const over = headersOverLimits(req.rawHeaders, limits);
    if (over !== null) {
      writeProtocolError(req, res, Code.ResourceExhausted, over);
      return;
    }
    // A timer, not a 'data' listener: listening for data would switch the
    // stream to flowing mode and race Connect's own reader.
    const timer = setTimeout(() => {
      writeProtocolError(req, res, Code.DeadlineExceeded, `the request body did not arrive within ${limits.bodyReceiveMs} ms`);
      // Release the stream (and its buffered bytes); the handler sees an abort.
      setImmediate(() => req.destroy());
    }, limits.bodyReceiveMs);
    timer.unref();
    const stop = () => clearTimeout(timer);
    req.once("end", stop);
    req.once("close", stop);
    res.once("finish", stop);
    res.once("close", stop);
    handler(req, res);
  };
}
