// The Connect conformance suite's ConformanceService, implemented on Tally's
// transport: each request says which headers, trailers, payload or error to
// answer with, and the answer echoes what the server saw (headers, timeout,
// requests), so the runner can check both directions of every protocol.
import { create, type MessageShape } from "@bufbuild/protobuf";
import { anyPack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  BidiStreamRequestSchema,
  ClientStreamRequestSchema,
  ConformancePayload_RequestInfoSchema,
  ConformancePayloadSchema,
  ConformanceService,
  IdempotentUnaryRequestSchema,
  ServerStreamRequestSchema,
  UnaryRequestSchema,
  HeaderSchema,
  type ConformancePayload,
  type Error as ConformanceError,
  type Header,
  type StreamResponseDefinition,
  type UnaryResponseDefinition,
} from "./gen/connectrpc/conformance/v1/service_pb.ts";

const sleep = (ms: number) => (ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve());

function setHeaders(target: Headers, headers: readonly Header[]): void {
  for (const header of headers) for (const value of header.value) target.append(header.name, value);
}

function requestInfo(ctx: HandlerContext, requests: Any[]): ConformancePayload["requestInfo"] {
  const requestHeaders: Header[] = [];
  ctx.requestHeader.forEach((value, name) => {
    requestHeaders.push(create(HeaderSchema, { name, value: [value] }));
  });
  const timeoutMs = ctx.timeoutMs();
  return create(ConformancePayload_RequestInfoSchema, {
    requestHeaders,
    requests,
    timeoutMs: timeoutMs === undefined ? undefined : BigInt(Math.max(0, Math.round(timeoutMs))),
  });
}

function errorFrom(definition: ConformanceError, info: ConformancePayload["requestInfo"] | undefined): ConnectError {
  const error = new ConnectError(definition.message ?? "", definition.code as number as Code);
  // Details go out as given (type + bytes); the request info is appended so the
  // runner can check what the server received.
  error.details = definition.details.map((any) => ({ type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1), value: any.value }));
  if (info !== undefined) {
    const packed = anyPack(ConformancePayload_RequestInfoSchema, info);
    error.details.push({ type: ConformancePayload_RequestInfoSchema.typeName, value: packed.value });
  }
  return error;
}

async function unaryAnswer(definition: UnaryResponseDefinition | undefined, requests: Any[], ctx: HandlerContext) {
  setHeaders(ctx.responseHeader, definition?.responseHeaders ?? []);
  setHeaders(ctx.responseTrailer, definition?.responseTrailers ?? []);
  const info = requestInfo(ctx, requests);
  await sleep(definition?.responseDelayMs ?? 0);
  if (definition?.response.case === "error") throw errorFrom(definition.response.value, info);
  return {
    payload: create(ConformancePayloadSchema, {
      requestInfo: info,
      data: definition?.response.case === "responseData" ? definition.response.value : new Uint8Array(),
    }),
  };
}

export function conformanceRoutes(router: ConnectRouter): void {
  router.service(ConformanceService, {
    unary: (req, ctx) => unaryAnswer(req.responseDefinition, [anyPack(UnaryRequestSchema, req)], ctx),
    idempotentUnary: (req, ctx) => unaryAnswer(req.responseDefinition, [anyPack(IdempotentUnaryRequestSchema, req)], ctx),
    async clientStream(requests, ctx) {
      let definition: UnaryResponseDefinition | undefined;
      const seen: Any[] = [];
      for await (const req of requests) {
        definition ??= req.responseDefinition;
        seen.push(anyPack(ClientStreamRequestSchema, req));
      }
      return unaryAnswer(definition, seen, ctx);
    },
    async *serverStream(req, ctx) {
      const definition = req.responseDefinition;
      setHeaders(ctx.responseHeader, definition?.responseHeaders ?? []);
      setHeaders(ctx.responseTrailer, definition?.responseTrailers ?? []);
      const info = requestInfo(ctx, [anyPack(ServerStreamRequestSchema, req)]);
      yield* streamAnswers(definition, info, 0);
    },
    async *bidiStream(requests, ctx) {
      let definition: StreamResponseDefinition | undefined;
      let fullDuplex = false;
      let sent = 0;
      let pending: Any[] = [];
      for await (const req of requests) {
        if (definition === undefined) {
          definition = req.responseDefinition;
          fullDuplex = req.fullDuplex;
          setHeaders(ctx.responseHeader, definition?.responseHeaders ?? []);
          setHeaders(ctx.responseTrailer, definition?.responseTrailers ?? []);
        }
        pending.push(anyPack(BidiStreamRequestSchema, req));
        if (!fullDuplex) continue;
        // Full duplex: one answer per request, while answers remain.
        if (definition === undefined || sent >= definition.responseData.length) break;
        await sleep(definition.responseDelayMs);
        yield {
          payload: create(ConformancePayloadSchema, { requestInfo: requestInfo(ctx, pending), data: definition.responseData[sent] }),
        };
        sent++;
        pending = [];
      }
      yield* streamAnswers(definition, requestInfo(ctx, pending), sent);
    },
    unimplemented() {
      throw new ConnectError("connectrpc.conformance.v1.ConformanceService.Unimplemented is not implemented", Code.Unimplemented);
    },
  });
}

/** Sends the remaining answers of a stream definition (request info on the
 * first one only), then its error, if any. */
async function* streamAnswers(
  definition: StreamResponseDefinition | undefined,
  info: ConformancePayload["requestInfo"],
  from: number,
): AsyncGenerator<{ payload: MessageShape<typeof ConformancePayloadSchema> }> {
  const data = definition?.responseData ?? [];
  for (let i = from; i < data.length; i++) {
    await sleep(definition?.responseDelayMs ?? 0);
    yield { payload: create(ConformancePayloadSchema, { requestInfo: i === 0 ? info : undefined, data: data[i] }) };
  }
  if (definition?.error !== undefined) throw errorFrom(definition.error, data.length === 0 ? info : undefined);
}
