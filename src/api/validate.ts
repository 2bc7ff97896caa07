// Request validation: every field checked against src/limits.ts before anything
// reaches the ledger. Failures are INVALID_ARGUMENT naming the field and the rule.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import {
  alertThresholdBpsMax,
  alertThresholdsMax,
  currencyPattern,
  holdTtlMsDefault,
  holdTtlMsMax,
  holdTtlMsMin,
  idLengthMax,
  idPattern,
  listCostRecordsPageSizeDefault,
  listCostRecordsPageSizeMax,
  modelLengthMax,
  modelPattern,
} from "../limits.ts";
import { int64Max } from "../ledger/money.ts";
import { canonicalTimeZone } from "../ledger/periods.ts";

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
  if (!currencyPattern.test(value))
    throw invalid(`${field} ${JSON.stringify(value)} is not an ISO 4217 code (three capital letters, e.g. USD)`);
  return value;
}

/** An optional non-negative amount: undefined (not given: null) or as nonNegative. */
export function optionalNonNegative(field: string, value: bigint | undefined): bigint | null {
  return value === undefined ? null : nonNegative(field, value);
}

/** An optional IANA time zone name, returned in canonical form ("utc" -> "UTC"). */
export function optionalTimeZone(field: string, value: string | undefined): string | null {
  if (value === undefined) return null;
  const canonical = canonicalTimeZone(value);
  if (canonical === null)
    throw invalid(`${field} ${JSON.stringify(value)} is not an IANA time zone name (e.g. "UTC", "Europe/Berlin", "America/New_York")`);
  return canonical;
}

/** Alert thresholds in basis points: each 1..10000, at most 10; sorted and deduplicated. */
export function alertThresholds(field: string, values: readonly number[]): number[] {
  for (const bps of values) {
    if (!Number.isInteger(bps) || bps < 1 || bps > alertThresholdBpsMax) {
      throw invalid(`${field} ${bps} is outside 1..${alertThresholdBpsMax} basis points (5000 = 50 %)`);
    }
  }
  const distinct = [...new Set(values)].sort((a, b) => a - b);
  if (distinct.length > alertThresholdsMax)
    throw invalid(`${field} has ${distinct.length} distinct thresholds; the maximum is ${alertThresholdsMax}`);
  return distinct;
}

/** hold_ttl: only with reserve; unset means the default; else 1 s..24 h. Returns milliseconds. */
export function holdTtlMs(field: string, value: Duration | undefined, reserve: boolean): number {
  if (value === undefined) return holdTtlMsDefault;
  if (!reserve) throw invalid(`${field} applies only with reserve = true`);
  const sign = (n: bigint | number) => (n > 0 ? 1 : n < 0 ? -1 : 0);
  if (sign(value.seconds) * sign(value.nanos) < 0 || value.nanos <= -1_000_000_000 || value.nanos >= 1_000_000_000) {
    throw invalid(`${field} is not a valid Duration (seconds and nanos must have the same sign, |nanos| < 1e9)`);
  }
  const ms = Number(value.seconds) * 1000 + Math.trunc(value.nanos / 1_000_000);
  if (!(ms >= holdTtlMsMin && ms <= holdTtlMsMax))
    throw invalid(
      `${field} must be between ${holdTtlMsMin / 1000}s and ${holdTtlMsMax / 3_600_000}h, got ${value.seconds}s ${value.nanos}ns`,
    );
  return ms;
}

/** An optional Timestamp as epoch milliseconds (null when unset). */
export function optionalTimestampMs(field: string, value: Timestamp | undefined): number | null {
  if (value === undefined) return null;
  // Timestamp's range is years 1..9999; anything else is malformed.
  if (value.seconds < -62_135_596_800n || value.seconds > 253_402_300_799n || value.nanos < 0 || value.nanos > 999_999_999) {
    throw invalid(`${field} is not a valid Timestamp (years 1..9999, 0 <= nanos < 1e9)`);
  }
  return Number(value.seconds) * 1000 + Math.floor(value.nanos / 1_000_000);
}

/** ListCostRecords page_size (AIP-158): 0 means the default, larger than the maximum is coerced down. */
export function costRecordsPageSize(field: string, value: number): number {
  if (value < 0) throw invalid(`${field} must be >= 0, got ${value}`);
  if (value === 0) return listCostRecordsPageSizeDefault;
  return Math.min(value, listCostRecordsPageSizeMax);
}
