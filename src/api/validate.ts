// Request validation: every field checked against src/limits.ts before anything
// reaches the ledger. Failures are INVALID_ARGUMENT naming the field and the rule.
import { Code, ConnectError } from "@connectrpc/connect";
import { currencyPattern, idLengthMax, idPattern, modelLengthMax, modelPattern } from "../limits.ts";
import { int64Max } from "../ledger/money.ts";

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** INVALID_ARGUMENT with `message`, for checks that live next to their handler. */
export const invalidArgument = invalid;

/** A required identifier: 1..128 characters of [A-Za-z0-9._:/-]. */
export function requireId(field: string, value: string): string {
  if (value.length === 0) throw invalid(`${field} is required (1..${idLengthMax} characters of [A-Za-z0-9._:/-])`);
  return optionalId(field, value);
}

/** An optional identifier: empty, or as requireId. */
export function optionalId(field: string, value: string): string {
  if (value.length > idLengthMax) throw invalid(`${field} is ${value.length} characters long; the maximum is ${idLengthMax}`);
  if (value.length > 0 && !idPattern.test(value)) {
    throw invalid(`${field} ${JSON.stringify(value)} has characters outside [A-Za-z0-9._:/-]`);
  }
  return value;
}

/** An optional model label: empty, or up to 128 printable ASCII characters without spaces. */
export function optionalModel(field: string, value: string): string {
  if (value.length > modelLengthMax) throw invalid(`${field} is ${value.length} characters long; the maximum is ${modelLengthMax}`);
  if (value.length > 0 && !modelPattern.test(value)) {
    throw invalid(`${field} ${JSON.stringify(value)} must be printable ASCII without spaces`);
  }
  return value;
}

/** An amount or counter: an int64 that must not be negative. */
export function nonNegative(field: string, value: bigint): bigint {
  if (value < 0n) throw invalid(`${field} must be >= 0, got ${value}`);
  // Decoding already bounds int64; this guards callers that build requests in-process.
  if (value > int64Max) throw invalid(`${field} exceeds the int64 maximum ${int64Max}`);
  return value;
}

/** An optional ISO 4217 code: empty (null: keep current), or three capital letters. */
export function optionalCurrency(field: string, value: string): string | null {
  if (value === "") return null;
  if (!currencyPattern.test(value)) throw invalid(`${field} ${JSON.stringify(value)} is not an ISO 4217 code (three capital letters, e.g. USD)`);
  return value;
}
