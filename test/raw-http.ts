// Raw HTTP for tests that must control every byte: gRPC, gRPC-Web and Connect
// requests built by hand (node:http2 and node:http), answers reduced to the
// protocol's status: HTTP status, grpc-status / Connect error code, message.
import http from "node:http";
import http2 from "node:http2";

export interface RawRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Send the body but keep the request open (never end it). */
  keepOpen?: boolean;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  trailers: Record<string, string>;
  /** grpc-status from trailers, trailers-only headers or a gRPC-Web trailer frame. */
  grpcStatus?: number;
  grpcMessage?: string;
  /** Connect: the error code from a unary JSON error body or an end-stream frame. */
  connectCode?: string;
  connectMessage?: string;
}

const responseTimeoutMs = 40_000;

function flatten(headers: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers))
    if (v !== undefined && !k.startsWith(":")) out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : String(v);
  return out;
}

/** Reads grpc-status, Connect error bodies and gRPC-Web trailer frames out of an answer. */
function interpret(res: RawResponse): RawResponse {
  const status = res.trailers["grpc-status"] ?? res.headers["grpc-status"];
  const message = res.trailers["grpc-message"] ?? res.headers["grpc-message"];
  if (status !== undefined) {
    res.grpcStatus = Number(status);
    res.grpcMessage = message === undefined ? undefined : decodeURIComponent(message);
  }
  const contentType = res.headers["content-type"] ?? "";
  if (contentType.startsWith("application/grpc-web") && res.grpcStatus === undefined) {
    // Walk the frames; the one with flag 0x80 carries the trailers as text.
    let at = 0;
    while (at + 5 <= res.body.length) {
      const flags = res.body[at]!;
      const length = res.body.readUInt32BE(at + 1);
      const payload = res.body.subarray(at + 5, at + 5 + length);
      if (flags & 0x80) {
        for (const line of payload.toString().split("\r\n")) {
          const i = line.indexOf(":");
          if (i > 0) res.trailers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        res.grpcStatus = Number(res.trailers["grpc-status"]);
        res.grpcMessage = res.trailers["grpc-message"] === undefined ? undefined : decodeURIComponent(res.trailers["grpc-message"]);
      }
      at += 5 + length;
    }
  }
  if (contentType.startsWith("application/json") && res.status !== 200) {
    try {
      const json = JSON.parse(res.body.toString()) as { code?: string; message?: string };
      res.connectCode = json.code;
      res.connectMessage = json.message;
    } catch {
      // not a Connect error body
    }
  }
  if (contentType.startsWith("application/connect+") && res.body.length >= 5) {
    let at = 0;
    while (at + 5 <= res.body.length) {
      const flags = res.body[at]!;
      const length = res.body.readUInt32BE(at + 1);
      if (flags & 0x02) {
        const end = JSON.parse(res.body.subarray(at + 5, at + 5 + length).toString()) as { error?: { code?: string; message?: string } };
        res.connectCode = end.error?.code;
        res.connectMessage = end.error?.message;
      }
      at += 5 + length;
    }
  }
  return res;
}

/** One request over HTTP/2 (prior knowledge) on a fresh session. */
export function h2Request(baseUrl: string, req: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`no answer within ${responseTimeoutMs} ms`));
    }, responseTimeoutMs);
    session.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    const stream = session.request({ ":method": req.method ?? "POST", ":path": req.path, ...req.headers }, { endStream: false });
    const chunks: Buffer[] = [];
    let headers: Record<string, string> = {};
    let status = 0;
    let trailers: Record<string, string> = {};
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      headers = flatten(h);
    });
    stream.on("trailers", (t) => {
      trailers = flatten(t);
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("close", () => {
      clearTimeout(timer);
      session.close();
      if (status === 0) {
        reject(new Error(`stream closed without a response (rst code ${stream.rstCode})`));
        return;
      }
      resolve(interpret({ status, headers, trailers, body: Buffer.concat(chunks) }));
    });
    stream.on("error", () => undefined); // reported through close
    if (req.body !== undefined) stream.write(req.body);
    if (!req.keepOpen) stream.end();
  });
}

/** One request over HTTP/1.1 on a fresh connection. */
export function h1Request(baseUrl: string, req: RawRequest): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const url = new URL(req.path, baseUrl);
    const outgoing = http.request(url, { method: req.method ?? "POST", headers: req.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        clearTimeout(timer);
        resolve(
          interpret({
            status: res.statusCode ?? 0,
            headers: flatten(res.headers),
            trailers: flatten(res.trailers),
            body: Buffer.concat(chunks),
          }),
        );
      });
      res.on("error", reject);
    });
    const timer = setTimeout(() => {
      outgoing.destroy();
      reject(new Error(`no answer within ${responseTimeoutMs} ms`));
    }, responseTimeoutMs);
    outgoing.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    if (req.body !== undefined) outgoing.write(req.body);
    if (!req.keepOpen) outgoing.end();
  });
}

/** A gRPC / gRPC-Web / Connect-streaming envelope: flags, 4-byte big-endian length, payload. */
export function frame(payload: Uint8Array | string, flags = 0, declaredLength?: number): Buffer {
  const bytes = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(declaredLength ?? bytes.length, 1);
  return Buffer.concat([head, bytes]);
}
