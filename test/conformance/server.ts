// The conformance server the runner starts (connectconformance --mode server):
// reads a ServerCompatRequest (length-prefixed) from stdin, serves the
// ConformanceService through Tally's own transport (src/transport/rpc-server.ts:
// the same one-port listener, unary fast path and Connect router as
// production), and answers with its address.
import { readFileSync } from "node:fs";
import { createRegistry, fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { requestBytesMax } from "../../src/limits.ts";
import { startRpcServer } from "../../src/transport/rpc-server.ts";
import { ServerCompatRequestSchema, ServerCompatResponseSchema } from "./gen/connectrpc/conformance/v1/server_compat_pb.ts";
import {
  BidiStreamRequestSchema,
  ClientStreamRequestSchema,
  ConformancePayload_RequestInfoSchema,
  IdempotentUnaryRequestSchema,
  ServerStreamRequestSchema,
  UnaryRequestSchema,
} from "./gen/connectrpc/conformance/v1/service_pb.ts";
import { conformanceRoutes } from "./service.ts";

const input = readFileSync(0);
const request = fromBinary(ServerCompatRequestSchema, input.subarray(4, 4 + input.readUInt32BE(0)));
if (request.useTls) throw new Error("TLS is not offered by this server");

const registry = createRegistry(
  UnaryRequestSchema,
  ServerStreamRequestSchema,
  ClientStreamRequestSchema,
  BidiStreamRequestSchema,
  IdempotentUnaryRequestSchema,
  ConformancePayload_RequestInfoSchema,
);
const server = await startRpcServer({
  host: "127.0.0.1",
  port: 0,
  routes: conformanceRoutes,
  interceptors: [],
  readMaxBytes: request.messageReceiveLimit > 0 ? request.messageReceiveLimit : requestBytesMax * 1024,
  json: { readOptions: { registry }, writeOptions: { registry } },
  connect: { acceptCompression: [compressionGzip, compressionBrotli] },
});

const response = toBinary(
  ServerCompatResponseSchema,
  create(ServerCompatResponseSchema, { host: server.address.address, port: server.address.port }),
);
const size = Buffer.alloc(4);
size.writeUInt32BE(response.byteLength);
process.stdout.write(Buffer.concat([size, response]));

process.once("SIGTERM", () => {
  server.close(1_000).then(() => process.exit(0));
});
