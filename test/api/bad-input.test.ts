// Garbage changes nothing. Each case sends hand-built bytes over one of the
// three protocols (raw node:http / node:http2, so nothing is normalised by a
// client library) and asserts the exact error, that the server still answers
// afterwards, and that the victim project's totals and budget are unchanged.
import { create, toBinary } from "@bufbuild/protobuf";
import { gzipSync } from "node:zlib";
import { Code } from "@connectrpc/connect";
import { codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GetProjectCostRequestSchema,
  RecordCostRequestSchema,
  SetProjectBudgetRequestSchema,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { generateApiKey } from "../../src/auth/keys.ts";
import type { TallyServer } from "../../src/server.ts";
import { clientsFor, startTestServer, writeKeysFile, type BudgetClient } from "../helpers.ts";
import { frame, h1Request, h2Request, type RawRequest, type RawResponse } from "../raw-http.ts";

const adminKey = generateApiKey();
const victimKey = generateApiKey(); // project key for "victim" only
const strangerKey = generateApiKey(); // project key for "stranger" only
const victim = "victim";
const svc = "/tally.budget.v1.BudgetService";

type Protocol = "connect" | "grpc" | "grpc-web";
/** What must come back: a protocol error code, a bare HTTP status (the
 * request never reached an RPC: wrong method, media type, path, or a header
 * block the HTTP layer refuses), or an HTTP/2 stream reset. */
type Expected = { code: Code } | { httpStatus: number } | { rstCode: number };

interface BadCase {
  name: string;
  protocol: Protocol;
  /** HTTP/2 (default for gRPC) or HTTP/1.1 (default for Connect and gRPC-Web). */
  http?: "1.1" | "2";
  request: RawRequest;
  expected: Expected;
}

const auth = { authorization: `Bearer ${adminKey}` };
const json = { ...auth, "content-type": "application/json" };
const proto = { ...auth, "content-type": "application/proto" };
const grpc = { ...auth, "content-type": "application/grpc", te: "trailers" };
const grpcWeb = { ...auth, "content-type": "application/grpc-web+proto", "x-grpc-web": "1" };

const recordBytes = (init: Record<string, unknown>) =>
  toBinary(RecordCostRequestSchema, create(RecordCostRequestSchema, { projectId: victim, costNanos: 5n, requestId: "bad", ...init }));
const valid = recordBytes({});
/** Field 1 (project_id), length 2, bytes that are not UTF-8. */
const badUtf8Project = Buffer.from([0x0a, 0x02, 0xff, 0xfe]);
/** Field 2 (cost_nanos) as the 10-byte varint of 2^64 - 1: decodes to int64 -1. */
const wrapsToMinusOne = Buffer.concat([
  Buffer.from([0x0a, 0x06]),
  Buffer.from(victim),
  Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
]);
/** Field 2 as an 11-byte varint: more than 64 bits. */
const varintTooLong = Buffer.concat([
  Buffer.from([0x0a, 0x06]),
  Buffer.from(victim),
  Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
]);
const randomBytes = Buffer.from("b3f1c9a0d2e47788a1b2c3d4e5f60718293a4b5c6d7e8f90", "hex"); // fixed: reproducible
const manyHeaders = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-extra-${i}`, "v"]));
const deepJson = `{"projectId":"","x":${"[".repeat(30_000)}${"]".repeat(30_000)}}`;

function connectJson(name: string, body: string | Buffer, expected: Expected, extra: Partial<RawRequest> = {}): BadCase {
  return { name, protocol: "connect", request: { path: `${svc}/RecordCost`, headers: json, body, ...extra }, expected };
}
function grpcCase(name: string, body: Buffer, expected: Expected, extra: Partial<RawRequest> = {}): BadCase {
  return { name, protocol: "grpc", request: { path: `${svc}/RecordCost`, headers: grpc, body, ...extra }, expected };
}
function webCase(name: string, body: Buffer, expected: Expected, extra: Partial<RawRequest> = {}): BadCase {
  return { name, protocol: "grpc-web", request: { path: `${svc}/RecordCost`, headers: grpcWeb, body, ...extra }, expected };
}
const IA = { code: Code.InvalidArgument };
const RE = { code: Code.ResourceExhausted };

const cases: BadCase[] = [
  // --- Connect: numbers ---------------------------------------------------
  connectJson("negative cost", '{"projectId":"victim","costNanos":"-1","requestId":"bad"}', IA),
  connectJson("cost one past int64 max", '{"projectId":"victim","costNanos":"9223372036854775808","requestId":"bad"}', IA),
  connectJson("cost below int64 min", '{"projectId":"victim","costNanos":"-9223372036854775809","requestId":"bad"}', IA),
  connectJson("tokens of 2^64", '{"projectId":"victim","inputTokens":"18446744073709551616","requestId":"bad"}', IA),
  connectJson("fractional cost", '{"projectId":"victim","costNanos":1.5,"requestId":"bad"}', IA),
  connectJson("cost 1e30", '{"projectId":"victim","costNanos":1e30,"requestId":"bad"}', IA),
  connectJson("cost as a word", '{"projectId":"victim","costNanos":"ten","requestId":"bad"}', IA),
  connectJson("cost as a boolean", '{"projectId":"victim","costNanos":true,"requestId":"bad"}', IA),
  // --- Connect: identifiers and labels ------------------------------------
  connectJson("empty project id", '{"projectId":"","costNanos":"5","requestId":"bad"}', IA),
  connectJson("129-character project id", JSON.stringify({ projectId: "v".repeat(129), costNanos: "5", requestId: "bad" }), IA),
  connectJson("project id with a space", '{"projectId":"vic tim","costNanos":"5","requestId":"bad"}', IA),
  connectJson("project id with NUL", '{"projectId":"victim\\u0000","costNanos":"5","requestId":"bad"}', IA),
  connectJson("non-ASCII project id", '{"projectId":"vîctim","costNanos":"5","requestId":"bad"}', IA),
  connectJson("project id with a right-to-left override", '{"projectId":"victim\\u202e","costNanos":"5","requestId":"bad"}', IA),
  connectJson("project id as a number", '{"projectId":5,"costNanos":"5","requestId":"bad"}', IA),
  connectJson("129-character request id", JSON.stringify({ projectId: victim, costNanos: "5", requestId: "r".repeat(129) }), IA),
  connectJson(
    "model with a newline (log injection)",
    JSON.stringify({ projectId: victim, costNanos: "5", requestId: "bad", model: 'gpt\n{"event":"fake"}' }),
    IA,
  ),
  // --- Connect: malformed bodies ------------------------------------------
  connectJson(
    "invalid UTF-8 in a string",
    Buffer.concat([Buffer.from('{"projectId":"vic'), Buffer.from([0xff, 0xfe]), Buffer.from('","costNanos":"5","requestId":"bad"}')]),
    IA,
  ),
  connectJson("truncated JSON", '{"projectId":"victim","costNanos":"5"', IA),
  connectJson("a JSON array", "[]", IA),
  connectJson("an empty body", "", IA),
  connectJson("deeply nested JSON", deepJson, IA),
  connectJson("huge JSON (1 MiB)", JSON.stringify({ projectId: victim, costNanos: "5", requestId: "bad", model: "m".repeat(1 << 20) }), RE),
  connectJson(
    "gzip bomb (10 MiB inflated)",
    gzipSync(Buffer.from(JSON.stringify({ projectId: victim, costNanos: "5", requestId: "bad", model: " ".repeat(10 << 20) }))),
    RE,
    { headers: { ...json, "content-encoding": "gzip" } },
  ),
  connectJson("gzip header on plain bytes", '{"projectId":"victim"}', IA, { headers: { ...json, "content-encoding": "gzip" } }),
  connectJson(
    "unsupported content-encoding",
    '{"projectId":"victim"}',
    { code: Code.Unimplemented },
    { headers: { ...json, "content-encoding": "zstd" } },
  ),
  connectJson("malformed timeout header", '{"projectId":"victim","costNanos":"5","requestId":"bad"}', IA, {
    headers: { ...json, "connect-timeout-ms": "soon" },
  }),
  connectJson(
    "wrong content type",
    '{"projectId":"victim","costNanos":"5"}',
    { httpStatus: 415 },
    { headers: { ...auth, "content-type": "text/plain" } },
  ),
  connectJson("no content type", '{"projectId":"victim","costNanos":"5"}', { httpStatus: 415 }, { headers: auth }),
  connectJson(
    "streaming content type on a unary RPC",
    frame('{"projectId":"victim","costNanos":"5"}').toString("latin1"),
    { httpStatus: 415 },
    { headers: { ...auth, "content-type": "application/connect+json" } },
  ),
  connectJson(
    "GET on a write",
    "",
    { httpStatus: 405 },
    {
      method: "GET",
      path: `${svc}/RecordCost?encoding=json&message=${encodeURIComponent('{"projectId":"victim","costNanos":"5"}')}`,
      body: undefined,
    },
  ),
  connectJson("PUT", '{"projectId":"victim","costNanos":"5"}', { httpStatus: 405 }, { method: "PUT" }),
  connectJson("an RPC that does not exist", "{}", { httpStatus: 404 }, { path: `${svc}/NoSuchMethod` }),
  {
    name: "GET with invalid base64",
    protocol: "connect",
    request: { method: "GET", path: `${svc}/GetProjectCost?encoding=proto&base64=1&message=%25%25%25`, headers: auth },
    expected: IA,
  },
  // --- Connect: binary protobuf -------------------------------------------
  connectJson("random bytes as protobuf", randomBytes, IA, { headers: proto }),
  connectJson("invalid UTF-8 in a protobuf string", badUtf8Project, IA, { headers: proto }),
  connectJson("truncated protobuf", Buffer.from(valid.subarray(0, valid.length - 2)), IA, { headers: proto }),
  connectJson("an 11-byte varint", varintTooLong, IA, { headers: proto }),
  connectJson("2^64-1 wrapping to -1", wrapsToMinusOne, IA, { headers: proto }),
  {
    name: "negative cost over HTTP/2",
    protocol: "connect",
    http: "2",
    request: { path: `${svc}/RecordCost`, headers: proto, body: Buffer.from(recordBytes({ costNanos: -1n })) },
    expected: IA,
  },
  // --- Connect: metadata and keys -----------------------------------------
  connectJson("a 12 KiB header", '{"projectId":"victim","costNanos":"5","requestId":"bad"}', RE, {
    headers: { ...json, "x-big": "a".repeat(12 * 1024) },
  }),
  connectJson("80 headers", '{"projectId":"victim","costNanos":"5","requestId":"bad"}', RE, { headers: { ...json, ...manyHeaders(80) } }),
  connectJson(
    "a 20 KiB header (past the HTTP parser)",
    '{"projectId":"victim","costNanos":"5","requestId":"bad"}',
    { httpStatus: 431 },
    { headers: { ...json, "x-big": "a".repeat(20 * 1024) } },
  ),
  connectJson(
    "no API key",
    '{"projectId":"victim","costNanos":"5","requestId":"bad"}',
    { code: Code.Unauthenticated },
    { headers: { "content-type": "application/json" } },
  ),
  connectJson(
    "a forged API key",
    '{"projectId":"victim","costNanos":"5","requestId":"bad"}',
    { code: Code.Unauthenticated },
    { headers: { "content-type": "application/json", authorization: `Bearer ${generateApiKey()}` } },
  ),
  connectJson(
    "another project's key",
    '{"projectId":"victim","costNanos":"5","requestId":"bad"}',
    { code: Code.PermissionDenied },
    { headers: { "content-type": "application/json", authorization: `Bearer ${strangerKey}` } },
  ),
  connectJson(
    "a project key raising its own limit",
    JSON.stringify({ projectId: victim, limitNanos: "9223372036854775807" }),
    { code: Code.PermissionDenied },
    { path: `${svc}/SetProjectBudget`, headers: { "content-type": "application/json", authorization: `Bearer ${victimKey}` } },
  ),

  // --- gRPC (HTTP/2) --------------------------------------------------------
  grpcCase("negative cost", frame(recordBytes({ costNanos: -1n })), IA),
  grpcCase("2^64-1 wrapping to -1", frame(wrapsToMinusOne), IA),
  grpcCase("an 11-byte varint", frame(varintTooLong), IA),
  grpcCase("invalid UTF-8 in a string", frame(badUtf8Project), IA),
  grpcCase("empty project id", frame(recordBytes({ projectId: "" })), IA),
  grpcCase("odd characters in the project id", frame(recordBytes({ projectId: "victim;DROP" })), IA),
  grpcCase("random bytes", randomBytes, RE), // read as a 2.9 GB length prefix
  grpcCase("random bytes in a well-formed frame", frame(randomBytes), IA),
  grpcCase("a truncated frame", frame(valid, 0, valid.length + 50), IA),
  grpcCase("half a frame header", Buffer.from([0, 0, 0]), IA),
  grpcCase("a frame declaring 16 MiB", frame(valid, 0, 16 << 20), RE),
  grpcCase("a 1 MiB message", frame(recordBytes({ model: "m".repeat(1 << 20) })), RE),
  // INTERNAL by the gRPC specification (the Connect conformance suite checks it).
  grpcCase("compressed flag without an encoding", frame(valid, 1), { code: Code.Internal }),
  grpcCase("unknown grpc-encoding", frame(valid, 1), { code: Code.Unimplemented }, { headers: { ...grpc, "grpc-encoding": "snappy" } }),
  grpcCase("two messages on a unary RPC", Buffer.concat([frame(valid), frame(valid)]), { code: Code.Unimplemented }),
  grpcCase("no message at all", Buffer.alloc(0), { code: Code.Unimplemented }),
  grpcCase("malformed grpc-timeout", frame(valid), IA, { headers: { ...grpc, "grpc-timeout": "forever" } }),
  grpcCase("bad JSON in application/grpc+json", frame("{projectId: victim}"), IA, {
    headers: { ...grpc, "content-type": "application/grpc+json" },
  }),
  grpcCase("wrong content type", frame(valid), { httpStatus: 415 }, { headers: { ...grpc, "content-type": "application/xml" } }),
  grpcCase("GET", Buffer.alloc(0), { httpStatus: 405 }, { method: "GET" }),
  grpcCase("an RPC that does not exist", frame(valid), { httpStatus: 404 }, { path: `${svc}/NoSuchMethod` }),
  grpcCase("a 12 KiB metadata entry", frame(valid), RE, { headers: { ...grpc, "x-big": "a".repeat(12 * 1024) } }),
  // Past the transport's own limit the stream is reset with ENHANCE_YOUR_CALM
  // (0xb), which gRPC clients report as RESOURCE_EXHAUSTED.
  grpcCase("200 metadata entries", frame(valid), { rstCode: 0xb }, { headers: { ...grpc, ...manyHeaders(200) } }),
  grpcCase("no API key", frame(valid), { code: Code.Unauthenticated }, { headers: { "content-type": "application/grpc", te: "trailers" } }),
  grpcCase(
    "another project's key",
    frame(valid),
    { code: Code.PermissionDenied },
    { headers: { "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${strangerKey}` } },
  ),
  grpcCase(
    "a project key raising its own limit",
    frame(toBinary(SetProjectBudgetRequestSchema, create(SetProjectBudgetRequestSchema, { projectId: victim, limitNanos: 1n << 62n }))),
    { code: Code.PermissionDenied },
    {
      path: `${svc}/SetProjectBudget`,
      headers: { "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${victimKey}` },
    },
  ),

  // --- gRPC-Web (HTTP/1.1) --------------------------------------------------
  webCase("negative cost", frame(recordBytes({ costNanos: -1n })), IA),
  webCase("2^64-1 wrapping to -1", frame(wrapsToMinusOne), IA),
  webCase("invalid UTF-8 in a string", frame(badUtf8Project), IA),
  webCase("129-character project id", frame(recordBytes({ projectId: "v".repeat(129) })), IA),
  webCase("random bytes", randomBytes, RE),
  webCase("random bytes in a well-formed frame", frame(randomBytes), IA),
  webCase("a truncated frame", frame(valid, 0, valid.length + 50), IA),
  webCase("a frame declaring 16 MiB", frame(valid, 0, 16 << 20), RE),
  webCase("a trailers frame from the client", frame(valid, 0x80), { code: Code.Unimplemented }),
  webCase(
    "grpc-web-text (not served)",
    Buffer.from("AAAAAA=="),
    { httpStatus: 415 },
    { headers: { ...auth, "content-type": "application/grpc-web-text" } },
  ),
  webCase("a 12 KiB header", frame(valid), RE, { headers: { ...grpcWeb, "x-big": "a".repeat(12 * 1024) } }),
  webCase("no API key", frame(valid), { code: Code.Unauthenticated }, { headers: { "content-type": "application/grpc-web+proto" } }),
  webCase(
    "a project key raising its own limit",
    frame(toBinary(SetProjectBudgetRequestSchema, create(SetProjectBudgetRequestSchema, { projectId: victim, limitNanos: 1n << 62n }))),
    { code: Code.PermissionDenied },
    { path: `${svc}/SetProjectBudget`, headers: { "content-type": "application/grpc-web+proto", authorization: `Bearer ${victimKey}` } },
  ),
  webCase(
    "project key reading another project",
    frame(toBinary(GetProjectCostRequestSchema, create(GetProjectCostRequestSchema, { projectId: victim }))),
    { code: Code.PermissionDenied },
    { path: `${svc}/GetProjectCost`, headers: { "content-type": "application/grpc-web+proto", authorization: `Bearer ${strangerKey}` } },
  ),
];

async function send(baseUrl: string, c: BadCase): Promise<RawResponse | { rstCode: number }> {
  const useH2 = c.http === "2" || (c.http === undefined && c.protocol === "grpc");
  try {
    return await (useH2 ? h2Request(baseUrl, c.request) : h1Request(baseUrl, c.request));
  } catch (error) {
    const rst = /rst code (\d+)/.exec(String(error));
    if (rst) return { rstCode: Number(rst[1]) };
    throw error;
  }
}

describe("bad input over Connect, gRPC and gRPC-Web", () => {
  let server: TallyServer;
  let admin: BudgetClient;
  const baseline = { totalCostNanos: 7n, inputTokens: 3n, outputTokens: 4n, recordCount: 1n };

  beforeAll(async () => {
    const keysFile = writeKeysFile([
      { id: "admin", role: "admin", key: adminKey },
      { id: "victim", role: "project", key: victimKey, projects: [victim] },
      { id: "stranger", role: "project", key: strangerKey, projects: ["stranger"] },
    ]);
    server = await startTestServer({ keysFile });
    admin = clientsFor(server.url, adminKey)["grpc h2c"] as BudgetClient;
    await admin.setProjectBudget({ projectId: victim, limitNanos: 1_000n });
    await admin.recordCost({ projectId: victim, costNanos: 7n, inputTokens: 3n, outputTokens: 4n, requestId: "seed" });
  });
  afterAll(async () => {
    await server.close();
  });

  it("has at least 40 cases over all three protocols", () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    for (const protocol of ["connect", "grpc", "grpc-web"])
      expect(cases.filter((c) => c.protocol === protocol).length).toBeGreaterThanOrEqual(10);
    expect(new Set(cases.map((c) => `${c.protocol} ${c.name}`)).size).toBe(cases.length);
  });

  it.each(cases.map((c) => [`${c.protocol}: ${c.name}`, c] as const))("%s", async (_label, c) => {
    const res = await send(server.url, c);
    const expected = c.expected;
    if ("rstCode" in expected) {
      expect(res).toEqual({ rstCode: expected.rstCode });
    } else if ("httpStatus" in expected) {
      expect((res as RawResponse).status).toBe(expected.httpStatus);
    } else {
      const r = res as RawResponse;
      if (c.protocol === "connect") {
        expect({ status: r.status, code: r.connectCode }).toEqual({
          status: codeToHttpStatus(expected.code),
          code: codeToString(expected.code),
        });
        expect(r.connectMessage?.length).toBeGreaterThan(5);
      } else {
        expect(r.status).toBe(200);
        expect({ grpcStatus: r.grpcStatus, message: r.grpcMessage }).toEqual({ grpcStatus: expected.code, message: expect.any(String) });
      }
    }
    // The server still answers, and the garbage changed nothing.
    const after = await admin.getProjectCost({ projectId: victim });
    expect(after.projectCost).toMatchObject(baseline);
    expect((await admin.getProjectBudget({ projectId: victim })).budget?.limitNanos).toBe(1_000n);
    expect((await admin.checkBudget({ projectId: victim, estimatedCostNanos: 1n })).allowed).toBe(true);
  });

  it("still serves every protocol after all of it", async () => {
    for (const [name, client] of Object.entries(clientsFor(server.url, adminKey))) {
      expect((await client.getProjectCost({ projectId: victim })).projectCost?.totalCostNanos, name).toBe(7n);
    }
  });
});
