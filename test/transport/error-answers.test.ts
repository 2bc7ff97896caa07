// The one error-answer writer (src/transport/error-answers.ts): every shape's
// answer, read back with connect's own client-side parsers, is the error that
// was written (code, message, details), framed where each protocol puts it.
import { Code, ConnectError } from "@connectrpc/connect";
import { endStreamFlag, endStreamFromJson, errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { trailerFlag, trailerParse } from "@connectrpc/connect/protocol-grpc-web";
import { describe, expect, it } from "vitest";
import { retryableExhausted, retryInfoTypeName } from "../../src/retry-info.ts";
import { type ErrorWire, errorWireOf, errorWireOfProtocol, writeErrorAnswer } from "../../src/transport/error-answers.ts";
import { Protocol } from "../../src/transport/fast-path-wire.ts";
import type { Sink } from "../../src/transport/fast-path-sinks.ts";

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer | undefined;
  trailers: Record<string, string> | undefined;
}

function record(wire: ErrorWire, error: ConnectError, meta?: Parameters<typeof writeErrorAnswer>[3]): Answer {
  const answers: Answer[] = [];
  const sink: Sink = {
    headersSent: false,
    send: (status, headers, body, trailers) => {
      answers.push({ status, headers: { ...headers }, body: body === undefined ? undefined : Buffer.from(body), trailers });
    },
    destroy: () => {
      throw new Error("writeErrorAnswer never destroys");
    },
  };
  expect(writeErrorAnswer(sink, wire, error, meta)).toBe(true);
  expect(answers).toHaveLength(1);
  return answers[0] as Answer;
}

/** An envelope's flags and payload; the body must be exactly one envelope. */
function unframe(body: Buffer | undefined): { flags: number; payload: Buffer } {
  expect(body).toBeDefined();
  const bytes = body as Buffer;
  expect(bytes.readUInt32BE(1)).toBe(bytes.length - 5);
  return { flags: bytes[0] as number, payload: bytes.subarray(5) };
}

const message = "queue full: retry later, 100% sure / ünïcode";
const sent = () => retryableExhausted(message, 1_500);

function expectSame(read: ConnectError | undefined): void {
  expect(read).toBeInstanceOf(ConnectError);
  const error = read as ConnectError;
  expect({ code: error.code, message: error.rawMessage }).toEqual({ code: Code.ResourceExhausted, message });
  expect(error.details.map((d) => ("type" in d ? d.type : d.desc.typeName))).toEqual([retryInfoTypeName]);
  expect(error.details[0]).toMatchObject({ value: (sent().details[0] as { value: Uint8Array }).value });
}

describe("writeErrorAnswer", () => {
  it("gRPC trailers-only: the status in the headers, no body, no trailers", () => {
    const answer = record("grpc", sent(), { trailersOnly: true });
    expect({ status: answer.status, type: answer.headers["content-type"], body: answer.body, trailers: answer.trailers }).toEqual({
      status: 200,
      type: "application/grpc+proto",
      body: undefined,
      trailers: undefined,
    });
    expectSame(findTrailerError(new Headers(answer.headers)));
  });

  it("gRPC: headers, then the status and the call's trailers as trailers", () => {
    const answer = record("grpc", sent(), { header: new Headers({ "x-h": "1" }), trailer: new Headers({ "x-t": "2" }) });
    expect(answer.headers).toEqual({ "x-h": "1", "content-type": "application/grpc+proto" });
    expect(answer.body).toBeUndefined();
    expect(answer.trailers?.["x-t"]).toBe("2");
    expectSame(findTrailerError(new Headers(answer.trailers)));
  });

  it("gRPC-Web: a trailer frame in the body, or trailers-only in the headers", () => {
    const framed = record("grpc-web", sent(), { trailer: new Headers({ "x-t": "2" }) });
    expect(framed.headers["content-type"]).toBe("application/grpc-web+proto");
    expect(framed.headers["grpc-status"]).toBeUndefined();
    const { flags, payload } = unframe(framed.body);
    expect(flags).toBe(trailerFlag);
    const trailer = trailerParse(payload);
    expect(trailer.get("x-t")).toBe("2");
    expectSame(findTrailerError(trailer));

    const only = record("grpc-web", sent(), { trailersOnly: true });
    expect({ body: only.body, trailers: only.trailers }).toEqual({ body: undefined, trailers: undefined });
    expectSame(findTrailerError(new Headers(only.headers)));
  });

  it("Connect unary: the code's HTTP status and Connect's JSON error body, trailers as trailer- headers", () => {
    const answer = record("connect", sent(), { trailer: new Headers({ "x-t": "2" }) });
    expect({ status: answer.status, type: answer.headers["content-type"], trailer: answer.headers["trailer-x-t"] }).toEqual({
      status: 429,
      type: "application/json",
      trailer: "2",
    });
    expectSame(errorFromJsonBytes(answer.body as Buffer, undefined, new ConnectError("unreadable body", Code.Unknown)));
    expect(record("connect", new ConnectError("slow", Code.DeadlineExceeded)).status).toBe(504);
  });

  it("Connect streaming: an end-of-stream envelope carrying the error, in the request's codec", () => {
    for (const [wire, type] of [
      ["connect-stream-json", "application/connect+json"],
      ["connect-stream-proto", "application/connect+proto"],
    ] as const) {
      const answer = record(wire, sent(), { trailersOnly: true });
      expect({ status: answer.status, type: answer.headers["content-type"] }).toEqual({ status: 200, type });
      const { flags, payload } = unframe(answer.body);
      expect(flags).toBe(endStreamFlag);
      expectSame(endStreamFromJson(payload).error);
    }
  });
});

describe("errorWireOf", () => {
  it("judges the shape by the content-type, Connect unary for anything else", () => {
    const shapes = Object.fromEntries(
      [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web",
        "application/grpc-web-text+proto",
        "application/connect+json; charset=utf-8",
        "Application/Connect+JSON",
        "application/connect+proto",
        "application/json",
        "text/plain",
        "",
      ].map((type) => [type, errorWireOf(type)]),
    );
    expect(shapes).toEqual({
      "application/grpc": "grpc",
      "application/grpc+proto": "grpc",
      "application/grpc-web": "grpc-web",
      "application/grpc-web-text+proto": "grpc-web",
      "application/connect+json; charset=utf-8": "connect-stream-json",
      "Application/Connect+JSON": "connect-stream-json",
      "application/connect+proto": "connect-stream-proto",
      "application/json": "connect",
      "text/plain": "connect",
      "": "connect",
    });
  });
});

describe("writeErrorAnswer on a response already under way", () => {
  it("writes nothing and says so (the caller resets the stream)", () => {
    const sends: unknown[] = [];
    const sink: Sink = { headersSent: true, send: (...args) => sends.push(args), destroy: () => sends.push("destroy") };
    expect(writeErrorAnswer(sink, "grpc", sent())).toBe(false);
    expect(sends).toEqual([]);
  });
});

describe("errorWireOfProtocol", () => {
  it("gives the fast path's protocols their shapes: both Connect unary codecs answer JSON errors", () => {
    expect(errorWireOfProtocol).toEqual({
      [Protocol.grpc]: "grpc",
      [Protocol.grpcWeb]: "grpc-web",
      [Protocol.connectProto]: "connect",
      [Protocol.connectJson]: "connect",
    });
  });
});
