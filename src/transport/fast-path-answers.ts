import { fromBinary, fromJsonString, toBinary, toJsonString, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type UnaryResponse } from "@connectrpc/connect";
import { grpcStatus } from "./wire-errors.ts";
import { errorWireOfProtocol, writeErrorAnswer } from "./error-answers.ts";
import { Protocol, envelope, grpcWebTrailer, headersToObject, responseContentType } from "./fast-path-wire.ts";
import { type FastContext, FastResponse } from "./fast-path-context.ts";
import type { Sink } from "./fast-path-sinks.ts";
import type { UnaryFastPathOptions } from "./unary-fast-path.ts";

export function decodeRequest(options: UnaryFastPathOptions, method: DescMethod, protocol: Protocol, body: Buffer) {
  const input = method.input;
  switch (protocol) {
    case Protocol.connectProto:
      return fromBinary(input, body);
    case Protocol.connectJson:
      return fromJsonString(input, body.toString("utf8"), options.jsonReadOptions);
    default: {
      // The same checks, in the same order and with the same codes, as
      // Connect's envelope reader on the router's path.
      if (body.length === 0) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
      if (body.length < 5) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
      const flags = body[0] as number;
      const length = body.readUInt32BE(1);
      if (length > options.readMaxBytes) {
        throw new ConnectError(
          `message size ${length} is larger than configured readMaxBytes ${options.readMaxBytes}`,
          Code.ResourceExhausted,
        );
      }
      if (5 + length > body.length) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
      // gRPC-Web's end-of-stream (trailers) flag: the client sent no message.
      if (protocol === Protocol.grpcWeb && (flags & 0x80) !== 0)
        throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
      // gRPC: a compressed message without grpc-encoding is INTERNAL (gRPC over HTTP/2).
      if ((flags & 0b1) !== 0) throw new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal);
      if (5 + length < body.length)
        throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
      return fromBinary(input, body.subarray(5, 5 + length));
    }
  }
}

export function writeSuccess(
  options: UnaryFastPathOptions,
  sink: Sink,
  protocol: Protocol,
  method: DescMethod,
  response: UnaryResponse,
): void {
  // The context's headers only if someone made them; an answer an
  // interceptor built itself is read as it is.
  const own = response instanceof FastResponse ? response : undefined;
  const header = own === undefined ? response.header : own.ctx.responseHeaderIfMade;
  const trailer = own === undefined ? response.trailer : own.ctx.responseTrailerIfMade;
  const head: Record<string, string> = { "content-type": responseContentType[protocol] };
  headersToObject(head, header);
  switch (protocol) {
    case Protocol.connectJson: {
      headersToObject(head, trailer, "trailer-");
      sink.send(200, head, toJsonString(method.output, response.message as never, options.jsonWriteOptions), undefined);
      return;
    }
    case Protocol.connectProto: {
      headersToObject(head, trailer, "trailer-");
      sink.send(200, head, toBinary(method.output, response.message as never), undefined);
      return;
    }
    case Protocol.grpc: {
      sink.send(
        200,
        head,
        envelope(0, toBinary(method.output, response.message as never)),
        headersToObject(grpcStatus(undefined), trailer),
      );
      return;
    }
    case Protocol.grpcWeb: {
      const trailerFrame = grpcWebTrailer(headersToObject(grpcStatus(undefined), trailer));
      sink.send(200, head, Buffer.concat([envelope(0, toBinary(method.output, response.message as never)), trailerFrame]), undefined);
      return;
    }
  }
}

/** The call failed: its error in its protocol (./error-answers.ts), or the
 * stream reset when the response had already started. */
export function writeFailure(sink: Sink, protocol: Protocol, error: ConnectError, ctx: FastContext, trailersOnly = false): void {
  const meta = { header: ctx.responseHeaderIfMade, trailer: ctx.responseTrailerIfMade, trailersOnly };
  if (!writeErrorAnswer(sink, errorWireOfProtocol[protocol], error, meta)) sink.destroy();
}
