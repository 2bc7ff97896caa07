// Decimal amounts as people write them ("0.075" USD) to exact nanos and back,
// never through a float (0.1 + 0.2 is not 0.3 in binary floating point).
import { int64Max, nanosPerUnit } from "./money.ts";

const decimalPattern = /^(\d{1,19})(?:\.(\d{1,9}))?$/;

/** Parses a non-negative decimal amount of whole units with at most 9
 * fractional digits into nanos: "0.075" -> 75_000_000n. Returns an error
 * message (for the caller to report with the field's name) when the text is
 * not such an amount or the result leaves int64. */
export function parseDecimalNanos(text: string): bigint | string {
  const match = decimalPattern.exec(text);
  if (!match) return `"${text}" is not a non-negative decimal amount with at most 9 digits after the point (e.g. "0.075")`;
  const whole = BigInt(match[1]!);
  const fraction = BigInt((match[2] ?? "").padEnd(9, "0"));
  const nanos = whole * nanosPerUnit + fraction;
  if (nanos > int64Max) return `"${text}" is more than int64 nanos can hold`;
  return nanos;
}
