// The field encodings of an error on the wire, for ./error-answers.ts (the one
// writer) and ./node-adapter.ts: gRPC and gRPC-Web status fields (grpc-status,
// grpc-message, grpc-status-details-bin) written from gRPC over HTTP/2
// ("Responses"), and Connect's JSON error body from connect's own helper
// (@connectrpc/connect/protocol-connect), so both paths answer alike.
import { toBinary, type JsonValue } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { type ConnectError, encodeBinaryHeader } from "@connectrpc/connect";
import { errorToJsonBytes } from "@connectrpc/connect/protocol-connect";

interface WireDetail {
  type: string;
  value: Uint8Array;
  debug?: JsonValue;
}

/** Error details as type name + serialized bytes, whichever way they were attached. */
function wireDetails(error: ConnectError): WireDetail[] {
  return error.details.map((detail) =>
    "desc" in detail
      ? { type: detail.desc.typeName, value: toBinary(detail.desc, detail.value as never) }
      : { type: detail.type, value: detail.value, debug: detail.debug },
  );
}

/** grpc-message is percent-encoded: every byte outside 0x20..0x7E, and "%",
 * as %XX of its UTF-8 encoding (gRPC over HTTP/2, "Responses"). Unlike
 * encodeURIComponent this leaves ":" "/" "=" "," readable, which also keeps
 * clients that decode with decodeURI (grpc-js) from showing escapes. */
export function percentEncodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** google.rpc.Status { int32 code = 1; string message = 2; repeated Any details = 3; } */
function encodeRpcStatus(error: ConnectError, details: WireDetail[]): Uint8Array {
  const writer = new BinaryWriter();
  writer.tag(1, 0).int32(error.code);
  if (error.rawMessage !== "") writer.tag(2, 2).string(error.rawMessage);
  for (const detail of details) {
    // google.protobuf.Any { string type_url = 1; bytes value = 2; }
    writer.tag(3, 2).fork().tag(1, 2).string(`type.googleapis.com/${detail.type}`).tag(2, 2).bytes(detail.value).join();
  }
  return writer.finish();
}

/** The gRPC status fields for a response: grpc-status 0, or the error's code,
 * message and details. */
export function grpcStatus(error: ConnectError | undefined): Record<string, string> {
  if (error === undefined) return { "grpc-status": "0" };
  const fields: Record<string, string> = { "grpc-status": String(error.code) };
  if (error.rawMessage !== "") fields["grpc-message"] = percentEncodeGrpcMessage(error.rawMessage);
  const details = wireDetails(error);
  if (details.length > 0) fields["grpc-status-details-bin"] = encodeBinaryHeader(encodeRpcStatus(error, details));
  return fields;
}

/** Connect's unary error body, as Connect's router writes it. */
export function connectErrorBody(error: ConnectError): Buffer {
  const bytes = errorToJsonBytes(error, undefined);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
