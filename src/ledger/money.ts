// Money and counters are int64 integers of a stated unit (nanos of the
// project's currency, tokens, records). Arithmetic is exact (bigint) and
// leaving the int64 range is an error, never a wrap.

export const int64Max = (1n << 63n) - 1n;
export const int64Min = -(1n << 63n);

/** Nano-units in one whole unit of currency: 1 USD = 1_000_000_000 nanos. */
export const nanosPerUnit = 1_000_000_000n;

export class Int64OverflowError extends Error {
  override name = "Int64OverflowError";
  readonly what: string;
  constructor(what: string, a: bigint, b: bigint) {
    super(`${what}: ${a} + ${b} exceeds the int64 maximum ${int64Max}`);
    this.what = what;
  }
}

export function isInt64(value: bigint): boolean {
  return value >= int64Min && value <= int64Max;
}

/** Adds two non-negative int64 amounts exactly; throws Int64OverflowError when
 * the sum leaves int64. `what` names the quantity for the error message. */
export function addChecked(what: string, a: bigint, b: bigint): bigint {
  const sum = a + b;
  if (!isInt64(sum)) throw new Int64OverflowError(what, a, b);
  return sum;
}

/** Renders nanos as a decimal amount of whole units without ever going through
 * a float: formatNanos(1_500_000_000n) === "1.5". For logs and messages only. */
export function formatNanos(nanos: bigint): string {
  const negative = nanos < 0n;
  const abs = negative ? -nanos : nanos;
  const whole = abs / nanosPerUnit;
  const fraction = (abs % nanosPerUnit).toString().padStart(9, "0").replace(/0+$/, "");
  return `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
}
