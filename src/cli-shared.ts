// What the client commands share: usage errors, output, and how amounts,
// limits and times are printed.
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { ProjectBudget } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { formatNanos, int64Max } from "./ledger/money.ts";

export class UsageError extends Error {
  override name = "UsageError";
}

export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Progress lines go to stderr only when a person is watching. */
  progress: boolean;
}

export function printJson<Desc extends DescMessage>(io: Io, schema: Desc, message: MessageShape<Desc>): void {
  io.out(JSON.stringify(toJson(schema, message, { alwaysEmitImplicit: true }), null, 2));
}

export function table(io: Io, rows: Array<[string, string]>): void {
  const width = Math.max(...rows.map(([key]) => key.length));
  for (const [key, value] of rows) io.out(`${key.padEnd(width)}  ${value}`);
}

export const amount = (nanos: bigint, currency: string) => `${formatNanos(nanos)} ${currency}`;
export const limitText = (b: ProjectBudget | undefined) =>
  b === undefined || b.limitNanos === 0n ? "no limit" : amount(b.limitNanos, b.currency);
export const when = (ts: Parameters<typeof timestampMs>[0] | undefined) =>
  ts === undefined ? "never" : new Date(timestampMs(ts)).toISOString();

/** 8000 basis points -> "80%", 1250 -> "12.5%". */
export const percentText = (bps: number) => `${bps / 100}%`;

/** "12.5" (units of the currency) -> 12_500_000_000n, exactly. `what` names
 * the argument in errors ("amount", "--daily"). */
export function parseAmount(text: string, what = "amount"): bigint {
  const match = /^(\d+)(?:\.(\d{1,9}))?$/.exec(text);
  if (match === null)
    throw new UsageError(`${what} ${JSON.stringify(text)} must be a number of currency units with up to 9 decimals, e.g. 25 or 12.50`);
  const nanos = BigInt(match[1] as string) * 1_000_000_000n + BigInt((match[2] ?? "").padEnd(9, "0"));
  if (nanos > int64Max) throw new UsageError(`${what} ${text} is beyond the largest amount Tally stores (${formatNanos(int64Max)})`);
  return nanos;
}
