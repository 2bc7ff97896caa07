// The catalog arithmetic (src/ledger/pricing.ts): exact examples, and
// fast-check properties against an independent oracle (rational arithmetic
// on the whole record), the rounding rule (up, once per record), overflow,
// and which entry is in effect.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseDecimalNanos } from "../../src/ledger/decimal-amount.ts";
import { formatNanos, int64Max } from "../../src/ledger/money.ts";
import { CostOverflowError, type PriceEntry, priceInEffect, priceUsage, worstCaseCost } from "../../src/ledger/pricing.ts";

function entry(over: Partial<PriceEntry> = {}): PriceEntry {
  return {
    priceId: "p1",
    model: "gpt-4o-mini",
    projectId: "",
    currency: "USD",
    inputNanosPerMillion: 150_000_000n,
    cachedInputNanosPerMillion: 75_000_000n,
    cacheWriteNanosPerMillion: 150_000_000n,
    outputNanosPerMillion: 600_000_000n,
    effectiveFromMs: 0,
    source: "test",
    createdAtMs: 0,
    ...over,
  };
}
const usage = (inputTokens: bigint, cachedInputTokens = 0n, cacheWriteTokens = 0n, outputTokens = 0n) => ({
  inputTokens,
  cachedInputTokens,
  cacheWriteTokens,
  outputTokens,
});

describe("priceUsage", () => {
  it("prices fractional per-token prices exactly: $0.075 per 1M tokens", () => {
    const price = entry({ inputNanosPerMillion: 75_000_000n });
    // 1 token at 75 nanos per token... per million: 75_000_000 / 1_000_000 = 75 nanos.
    expect(priceUsage(price, usage(1n))).toBe(75n);
    expect(priceUsage(price, usage(1_000_000n))).toBe(75_000_000n);
    // $0.000075 per 1M tokens is 75 nanos per million tokens: 1 token costs 0.000075 nanos, charged 1.
    const tiny = entry({ inputNanosPerMillion: 75n });
    expect(priceUsage(tiny, usage(1n))).toBe(1n);
    expect(priceUsage(tiny, usage(40_000n))).toBe(3n); // exactly 3
    expect(priceUsage(tiny, usage(40_001n))).toBe(4n); // 3.000075 -> 4
  });

  it("sums every kind before rounding up once", () => {
    // Each kind alone is 0.5 nanos; per-kind rounding would charge 4, once-per-record charges 2.
    const price = entry({
      inputNanosPerMillion: 500_000n,
      cachedInputNanosPerMillion: 500_000n,
      cacheWriteNanosPerMillion: 500_000n,
      outputNanosPerMillion: 500_000n,
    });
    expect(priceUsage(price, usage(1n, 1n, 1n, 1n))).toBe(2n);
  });

  it("prices a realistic call with cache reads and writes", () => {
    // claude-sonnet-4-5: $3 in, $0.30 cached, $3.75 cache write, $15 out per 1M.
    const price = entry({
      inputNanosPerMillion: 3_000_000_000n,
      cachedInputNanosPerMillion: 300_000_000n,
      cacheWriteNanosPerMillion: 3_750_000_000n,
      outputNanosPerMillion: 15_000_000_000n,
    });
    // 1200 in = 3.6e6, 50000 cached = 15e6, 2000 write = 7.5e6, 800 out = 12e6 nanos.
    expect(priceUsage(price, usage(1200n, 50_000n, 2000n, 800n))).toBe(38_100_000n);
  });

  it("refuses a cost beyond int64 instead of wrapping", () => {
    const price = entry({ outputNanosPerMillion: int64Max });
    expect(() => priceUsage(price, usage(0n, 0n, 0n, 1_000_001n))).toThrow(CostOverflowError);
    expect(priceUsage(price, usage(0n, 0n, 0n, 1_000_000n))).toBe(int64Max);
  });

  const int64 = fc.bigInt({ min: 0n, max: int64Max });
  const small = fc.bigInt({ min: 0n, max: 10_000_000n });
  const count = fc.oneof(small, int64);
  const priceArb = fc.record({
    inputNanosPerMillion: fc.oneof(small, int64),
    cachedInputNanosPerMillion: fc.oneof(small, int64),
    cacheWriteNanosPerMillion: fc.oneof(small, int64),
    outputNanosPerMillion: fc.oneof(small, int64),
  });
  const usageArb = fc.record({ inputTokens: count, cachedInputTokens: count, cacheWriteTokens: count, outputTokens: count });

  it("property: the cost is the least integer >= the exact rational cost, or refused when over int64", () => {
    fc.assert(
      fc.property(priceArb, usageArb, (prices, u) => {
        const price = entry(prices);
        // Oracle: exact rational numerator over 10^6, compared without division.
        const exact =
          u.inputTokens * prices.inputNanosPerMillion +
          u.cachedInputTokens * prices.cachedInputNanosPerMillion +
          u.cacheWriteTokens * prices.cacheWriteNanosPerMillion +
          u.outputTokens * prices.outputNanosPerMillion;
        let cost: bigint;
        try {
          cost = priceUsage(price, u);
        } catch (error) {
          expect(error).toBeInstanceOf(CostOverflowError);
          // Refused only when even the rounded-down value would not fit... or the rounded-up one does not.
          expect(exact > int64Max * 1_000_000n).toBe(true);
          return;
        }
        expect(cost <= int64Max).toBe(true);
        expect(cost * 1_000_000n >= exact).toBe(true); // never undercharged
        expect((cost - 1n) * 1_000_000n < exact || cost === 0n).toBe(true); // overcharged by less than one nano
      }),
      { numRuns: 2000 },
    );
  });

  it("property: splitting a call into two records never costs less than one record (rounding up once per record)", () => {
    fc.assert(
      fc.property(priceArb.map(entry), usageArb, usageArb, (price, a, b) => {
        const sum = {
          inputTokens: a.inputTokens + b.inputTokens,
          cachedInputTokens: a.cachedInputTokens + b.cachedInputTokens,
          cacheWriteTokens: a.cacheWriteTokens + b.cacheWriteTokens,
          outputTokens: a.outputTokens + b.outputTokens,
        };
        let whole: bigint, parts: bigint;
        try {
          whole = priceUsage(price, sum);
          parts = priceUsage(price, a) + priceUsage(price, b);
        } catch {
          return; // overflow is covered above
        }
        expect(parts >= whole).toBe(true);
        expect(parts - whole <= 1n).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("property: the worst case is never below the cost of any split of those input tokens", () => {
    fc.assert(
      fc.property(priceArb.map(entry), small, small, small, small, (price, fresh, cached, written, output) => {
        let worst: bigint;
        try {
          worst = worstCaseCost(price, fresh + cached + written, output);
        } catch (error) {
          expect(error).toBeInstanceOf(CostOverflowError); // refused: no hold at all, never a short one
          return;
        }
        expect(worst >= priceUsage(price, usage(fresh, cached, written, output))).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});

describe("priceInEffect", () => {
  const old = entry({ priceId: "old", effectiveFromMs: 1_000 });
  const next = entry({ priceId: "new", effectiveFromMs: 2_000 });
  const override = entry({ priceId: "deal", projectId: "acme", effectiveFromMs: 1_500 });

  it("a call at T-1ms uses the old entry, at T the new one", () => {
    expect(priceInEffect([old, next], "gpt-4o-mini", "p", 1_999)?.priceId).toBe("old");
    expect(priceInEffect([old, next], "gpt-4o-mini", "p", 2_000)?.priceId).toBe("new");
    expect(priceInEffect([next, old], "gpt-4o-mini", "p", 2_000)?.priceId).toBe("new");
  });

  it("nothing in effect before the first entry, nor for another model", () => {
    expect(priceInEffect([old, next], "gpt-4o-mini", "p", 999)).toBeNull();
    expect(priceInEffect([old, next], "gpt-4o", "p", 5_000)).toBeNull();
    expect(priceInEffect([old], "openai/gpt-4o-mini", "p", 5_000)).toBeNull();
  });

  it("a project's override takes precedence over global entries once in effect, and only for that project", () => {
    expect(priceInEffect([old, next, override], "gpt-4o-mini", "acme", 1_499)?.priceId).toBe("old");
    expect(priceInEffect([old, next, override], "gpt-4o-mini", "acme", 1_500)?.priceId).toBe("deal");
    expect(priceInEffect([old, next, override], "gpt-4o-mini", "acme", 9_000)?.priceId).toBe("deal");
    expect(priceInEffect([old, next, override], "gpt-4o-mini", "other", 9_000)?.priceId).toBe("new");
  });
});

describe("parseDecimalNanos", () => {
  it("parses exactly and round-trips through formatNanos", () => {
    expect(parseDecimalNanos("0.075")).toBe(75_000_000n);
    expect(parseDecimalNanos("3.75")).toBe(3_750_000_000n);
    expect(parseDecimalNanos("0.000000001")).toBe(1n);
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: int64Max }), (nanos) => {
        expect(parseDecimalNanos(formatNanos(nanos))).toBe(nanos);
      }),
    );
  });

  it("refuses what is not an exact non-negative amount", () => {
    for (const bad of ["", "-1", "1e3", "0.0000000001", ".5", "5.", "1,5", "9223372037"]) {
      expect(typeof parseDecimalNanos(bad)).toBe("string");
    }
  });
});
