// Exact money formatting for the page: nanos (bigint) to a decimal string, never
// through a float. Shared with the browser test, which checks the page shows
// exactly what GetProjectCost returns.

const nanosPerUnit = 1_000_000_000n;

/** 1_500_000_000n -> "1.50"; 12_345_678_901n -> "12.345678901"; at least two
 * decimals, more only when the amount has them. */
export function formatAmount(nanos: bigint): string {
  const negative = nanos < 0n;
  const abs = negative ? -nanos : nanos;
  const whole = abs / nanosPerUnit;
  let fraction = (abs % nanosPerUnit).toString().padStart(9, "0").replace(/0+$/, "");
  if (fraction.length < 2) fraction = fraction.padEnd(2, "0");
  return `${negative ? "-" : ""}${whole}.${fraction}`;
}

/** Basis points to a percentage with two decimals: 2500n -> "25.00 %". */
export function formatBasisPoints(bp: bigint): string {
  return `${bp / 100n}.${(bp % 100n).toString().padStart(2, "0")} %`;
}

/** A short, fixed-format UTC time: "2026-11-27 12:34:56Z". */
export function formatTime(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
}

/** Rounded for reading: two decimals, half away from zero, never through a
 * float (12_345_678_901n -> "12.35"). The exact amount goes in a tooltip. */
export function formatAmountRounded(nanos: bigint): string {
  const cent = 10_000_000n;
  const negative = nanos < 0n;
  const abs = negative ? -nanos : nanos;
  const cents = (abs + cent / 2n) / cent;
  return `${negative && cents > 0n ? "-" : ""}${cents / 100n}.${(cents % 100n).toString().padStart(2, "0")}`;
}
