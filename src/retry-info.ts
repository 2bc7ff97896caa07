// RESOURCE_EXHAUSTED covers both "wait a moment and it will work" (a full write
// queue, too many calls in flight, a key over its rate limit) and "this will
// never work" (a header block or message over a size limit, too many holds).
// Clients cannot tell them apart by the code, so the retryable ones carry a
// google.rpc.RetryInfo detail saying how long to wait (the standard detail
// gRPC's own retry guidance and the Tally client helpers read): a
// RESOURCE_EXHAUSTED without it is not worth retrying.
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

/** The detail's fully-qualified type name (google/rpc/error_details.proto). */
export const retryInfoTypeName = "google.rpc.RetryInfo";

/** RetryInfo { google.protobuf.Duration retry_delay = 1; } with
 * Duration { int64 seconds = 1; int32 nanos = 2; }, encoded by hand: the one
 * message Tally sends from that file does not warrant generating it. */
export function encodeRetryInfo(delayMs: number): Uint8Array {
  const wholeMs = Math.max(0, Math.ceil(delayMs));
  const seconds = Math.floor(wholeMs / 1000);
  const nanos = (wholeMs % 1000) * 1_000_000;
  const duration = new BinaryWriter();
  if (seconds !== 0) duration.tag(1, 0).int64(seconds);
  if (nanos !== 0) duration.tag(2, 0).int32(nanos);
  return new BinaryWriter().tag(1, 2).bytes(duration.finish()).finish();
}

/** A RESOURCE_EXHAUSTED error worth retrying after `delayMs` (same request_id). */
export function retryableExhausted(message: string, delayMs: number, cause?: unknown): ConnectError {
  const error = new ConnectError(message, Code.ResourceExhausted, undefined, undefined, cause);
  // A detail as type name + bytes (no generated schema): every protocol's error
  // writer, Connect's and the fast path's (wire-errors.ts), sends it as an Any.
  error.details.push({ type: retryInfoTypeName, value: encodeRetryInfo(delayMs) });
  return error;
}
