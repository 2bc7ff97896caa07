// Pricing a call from the catalog: pure, exact integer arithmetic. Prices are
// int64 nanos per million tokens; a call's cost is the sum over token kinds of
// tokens x price, divided by one million and rounded up once for the whole
// record (never per kind: rounding each kind up would overcharge by up to one
// nano per kind; rounding down would undercharge). A cost beyond int64 is
// refused, never wrapped or clamped.
import { int64Max } from "./money.ts";

/** Prices are quoted per this many tokens (the providers' "per 1M tokens"). */
export const tokensPerPriceUnit = 1_000_000n;

/** One catalog entry (see ModelPrice in the proto). */
export interface PriceEntry {
  priceId: string;
  model: string;
  /** "" for a global entry, else the project it overrides prices for. */
  projectId: string;
  currency: string;
  inputNanosPerMillion: bigint;
  cachedInputNanosPerMillion: bigint;
  cacheWriteNanosPerMillion: bigint;
  outputNanosPerMillion: bigint;
  effectiveFromMs: number;
  source: string;
  createdAtMs: number;
}

/** The token counts of one call, each kind billed at its own price. The
 * kinds are disjoint: inputTokens excludes cached and cache-write tokens. */
export interface TokenUsage {
  inputTokens: bigint;
  cachedInputTokens: bigint;
  cacheWriteTokens: bigint;
  outputTokens: bigint;
}

/** A priced cost would not fit in int64 nanos. */
export class CostOverflowError extends Error {
  override name = "CostOverflowError";
  constructor(model: string, costNanos: bigint) {
    super(
      `model "${model}": the catalog cost of these tokens is ${costNanos} nanos, beyond the int64 maximum ${int64Max}; nothing was written`,
    );
  }
}

/** Ceiling division of a non-negative numerator by a positive divisor. */
function divideRoundingUp(numerator: bigint, divisor: bigint): bigint {
  return (numerator + divisor - 1n) / divisor;
}

/** The exact cost in nanos of `usage` at `price`, rounded up once.
 * Throws CostOverflowError when it leaves int64. */
export function priceUsage(price: PriceEntry, usage: TokenUsage): bigint {
  const scaled =
    usage.inputTokens * price.inputNanosPerMillion +
    usage.cachedInputTokens * price.cachedInputNanosPerMillion +
    usage.cacheWriteTokens * price.cacheWriteNanosPerMillion +
    usage.outputTokens * price.outputNanosPerMillion;
  const cost = divideRoundingUp(scaled, tokensPerPriceUnit);
  if (cost > int64Max) throw new CostOverflowError(price.model, cost);
  return cost;
}

/** The worst-case cost of a call about to be made: every input token at the
 * dearest input-side price (whether it will hit the cache, write it, or
 * neither is not known before the call) and max_output_tokens at the output
 * price, rounded up once. A hold of this size can never be short. */
export function worstCaseCost(price: PriceEntry, inputTokens: bigint, maxOutputTokens: bigint): bigint {
  const dearestInput = [price.inputNanosPerMillion, price.cachedInputNanosPerMillion, price.cacheWriteNanosPerMillion].reduce((a, b) =>
    a > b ? a : b,
  );
  return priceUsage(
    { ...price, inputNanosPerMillion: dearestInput },
    { inputTokens, cachedInputTokens: 0n, cacheWriteTokens: 0n, outputTokens: maxOutputTokens },
  );
}

/** The entry that prices `model` for `projectId` at `atMs`: among the
 * project's own entries for the model the one with the latest effectiveFrom
 * at or before atMs; only when the project has none in effect, the global one
 * chosen the same way. Null when neither exists: the caller refuses (an
 * unpriced call is never charged 0). Ties on effectiveFrom cannot occur (the
 * catalog's key is model, project, effectiveFrom). */
export function priceInEffect(entries: readonly PriceEntry[], model: string, projectId: string, atMs: number): PriceEntry | null {
  let override: PriceEntry | null = null;
  let global: PriceEntry | null = null;
  for (const entry of entries) {
    if (entry.model !== model || entry.effectiveFromMs > atMs) continue;
    if (entry.projectId === projectId && projectId !== "") {
      if (override === null || entry.effectiveFromMs > override.effectiveFromMs) override = entry;
    } else if (entry.projectId === "") {
      if (global === null || entry.effectiveFromMs > global.effectiveFromMs) global = entry;
    }
  }
  return override ?? global;
}

/** Whether a repeated SetModelPrice carries the same entry (its key being
 * model, projectId and effectiveFrom): then it is a duplicate, else a
 * conflict, since entries are never edited in place. */
export function samePrice(a: Omit<PriceEntry, "priceId" | "createdAtMs">, b: Omit<PriceEntry, "priceId" | "createdAtMs">): boolean {
  return (
    a.model === b.model &&
    a.projectId === b.projectId &&
    a.currency === b.currency &&
    a.inputNanosPerMillion === b.inputNanosPerMillion &&
    a.cachedInputNanosPerMillion === b.cachedInputNanosPerMillion &&
    a.cacheWriteNanosPerMillion === b.cacheWriteNanosPerMillion &&
    a.outputNanosPerMillion === b.outputNanosPerMillion &&
    a.effectiveFromMs === b.effectiveFromMs &&
    a.source === b.source
  );
}
