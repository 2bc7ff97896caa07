// Tally's Node.js request handler: Connect's router (the same thing
// connectNodeAdapter builds) plus one correction. connect-es answers a request
// body it cannot decode (malformed protobuf, bad base64 in a GET) with INTERNAL,
// which says "server bug" and would page someone; it is the caller's bad input.
// Such failures happen before the first interceptor runs, so: an INTERNAL
// answer for a call whose message never reached the interceptors is rewritten to
// INVALID_ARGUMENT, in whichever protocol the call speaks. Errors raised by our
// own code (after decoding) are never touched.
//
// And one addition: connect-es answers a content type it does not serve (none
// at all, text/plain, a streaming type on a unary method) with 415 and an
// empty body, which leaves a newcomer's curl guessing; such an answer gets a
// one-line plain-text reason naming what was sent and what is accepted.
import {
  Code,
  ConnectError,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type ConnectRouter,
  type ConnectRouterOptions,
  type Interceptor,
} from "@connectrpc/connect";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import type http from "node:http";
import type http2 from "node:http2";
import { percentEncodeGrpcMessage } from "./wire-errors.ts";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/** Set once a call's request message was decoded and reached the interceptors. */
const decodedKey = createContextKey(false, { description: "tally request decoded" });

const decodeFailedPrefix = "cannot decode the request: ";

/** A compressed message without a negotiated encoding is INTERNAL by the gRPC
 * specification (and the Connect conformance suite holds servers to it): that
 * one stays as it is. */
const keepInternal = /do not know how to decompress/;

/** Must be the first interceptor: marks unary calls as decoded, and for
 * streaming calls turns decode failures of later messages into INVALID_ARGUMENT. */
export const decodeMarkerInterceptor: Interceptor = (next) => async (req) => {
  req.contextValues.set(decodedKey, true);
  if (!req.stream) return next(req);
  const messages = req.message;
  return next({
    ...req,
    message: (async function* () {
      try {
        yield* messages;
      } catch (error) {
        const e = ConnectError.from(error);
        if (e.code === Code.Internal && !keepInternal.test(e.rawMessage))
          throw new ConnectError(decodeFailedPrefix + e.rawMessage, Code.InvalidArgument, undefined, undefined, error);
        throw error;
      }
    })(),
  });
};

export interface TallyAdapterOptions extends Partial<ConnectRouterOptions> {
  routes: (router: ConnectRouter) => void;
  fallback: (req: Request, res: Response) => void;
}

export function tallyNodeAdapter(options: TallyAdapterOptions): (req: Request, res: Response) => void {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    ...options,
    interceptors: [decodeMarkerInterceptor, ...(options.interceptors ?? [])],
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const uHandler = paths.get(req.url?.split("?", 2)[0] ?? "");
    if (uHandler === undefined) {
      options.fallback(req, res);
      return;
    }
    const contextValues = createContextValues();
    const uReq = universalRequestFromNodeRequest(req, res, undefined, contextValues);
    uHandler(uReq)
      .then((uRes) => correctDecodeErrors(uRes, () => contextValues.get(decodedKey)))
      .then((uRes) => explainUnsupportedMediaType(uRes, req, uHandler))
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        // The response could not be written (client gone); nothing to answer.
        res.destroy?.();
      });
  };
}

/** 415 with no body -> 415 with one line saying why (text/plain). */
function explainUnsupportedMediaType(
  uRes: UniversalServerResponse,
  req: Request,
  handler: { method: { methodKind: string }; requestPath: string },
): UniversalServerResponse {
  if (uRes.status !== 415 || (uRes.header?.get("content-length") ?? "0") !== "0") return uRes;
  const sent = req.headers["content-type"];
  const unary = handler.method.methodKind === "unary";
  const accepted = unary
    ? "application/json or application/proto (Connect), application/grpc (gRPC), application/grpc-web (gRPC-Web)"
    : "application/connect+json or application/connect+proto (Connect streaming), application/grpc (gRPC), application/grpc-web (gRPC-Web)";
  const reason = Buffer.from(
    `${sent === undefined || sent === "" ? "the request has no content-type header" : `content-type ${JSON.stringify(String(sent))} is not served`} for ${handler.requestPath}: send ${accepted}\n`,
  );
  const header = new Headers(uRes.header);
  header.set("content-type", "text/plain; charset=utf-8");
  header.set("content-length", String(reason.length));
  return { ...uRes, header, body: once(reason) };
}

async function correctDecodeErrors(uRes: UniversalServerResponse, decoded: () => boolean): Promise<UniversalServerResponse> {
  const contentType = uRes.header?.get("content-type") ?? "";
  // Connect unary: the answer is complete; an error is an HTTP status + JSON body.
  if (contentType.startsWith("application/json") && uRes.status === codeToHttpStatus(Code.Internal) && !decoded()) {
    const body = await collect(uRes.body);
    let error: { code?: string; message?: string } = {};
    try {
      error = JSON.parse(Buffer.from(body).toString()) as typeof error;
    } catch {
      return { ...uRes, body: once(body) };
    }
    if (error.code !== codeToString(Code.Internal) || keepInternal.test(error.message ?? "")) return { ...uRes, body: once(body) };
    const fixed = Buffer.from(
      JSON.stringify({ code: codeToString(Code.InvalidArgument), message: decodeFailedPrefix + (error.message ?? "") }),
    );
    uRes.header?.set("content-length", String(fixed.length));
    return { ...uRes, status: codeToHttpStatus(Code.InvalidArgument), body: once(fixed) };
  }
  if (uRes.body === undefined) return uRes;
  // gRPC: the status is in the trailers, written after the body.
  if (contentType.startsWith("application/grpc") && !contentType.startsWith("application/grpc-web")) {
    const body = uRes.body;
    return {
      ...uRes,
      body: (async function* () {
        yield* body;
        for (const headers of [uRes.trailer, uRes.header]) {
          if (
            headers?.get("grpc-status") === String(Code.Internal) &&
            !decoded() &&
            !keepInternal.test(decodeURIComponent(headers.get("grpc-message") ?? ""))
          ) {
            headers.set("grpc-status", String(Code.InvalidArgument));
            headers.set(
              "grpc-message",
              percentEncodeGrpcMessage(decodeFailedPrefix + decodeURIComponent(headers.get("grpc-message") ?? "")),
            );
          }
        }
      })(),
    };
  }
  // gRPC-Web: the status is in the last envelope (flag 0x80) of the body.
  if (contentType.startsWith("application/grpc-web")) {
    const body = uRes.body;
    return {
      ...uRes,
      body: (async function* () {
        for await (const chunk of body) yield (chunk[0]! & 0x80) !== 0 && !decoded() ? fixGrpcWebTrailer(chunk) : chunk;
      })(),
    };
  }
  return uRes;
}

function fixGrpcWebTrailer(chunk: Uint8Array): Uint8Array {
  const buf = Buffer.from(chunk);
  if (buf.length < 5 || buf.readUInt32BE(1) !== buf.length - 5) return chunk;
  const lines = buf.subarray(5).toString().split("\r\n");
  const status = lines.find((l) => /^grpc-status:/i.test(l));
  if (status === undefined || status.split(":")[1]!.trim() !== String(Code.Internal)) return chunk;
  if (
    keepInternal.test(
      decodeURIComponent(
        lines
          .find((l) => /^grpc-message:/i.test(l))
          ?.slice(13)
          .trim() ?? "",
      ),
    )
  )
    return chunk;
  const rewritten = lines.map((line) => {
    if (/^grpc-status:/i.test(line)) return `grpc-status: ${Code.InvalidArgument}`;
    if (/^grpc-message:/i.test(line))
      return `grpc-message: ${percentEncodeGrpcMessage(decodeFailedPrefix + decodeURIComponent(line.slice(line.indexOf(":") + 1).trim()))}`;
    return line;
  });
  const payload = Buffer.from(rewritten.join("\r\n"));
  const head = Buffer.alloc(5);
  head.writeUInt8(buf[0]!, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

async function collect(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array> {
  if (body === undefined) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}
