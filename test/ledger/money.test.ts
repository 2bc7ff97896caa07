import { describe, expect, it } from "vitest";
import { addChecked, formatNanos, Int64OverflowError, int64Max, int64Min, isInt64 } from "../../src/ledger/money.ts";

describe("money", () => {
  it("adds exactly, beyond what a float can represent", () => {
    // 2^53 + 1 is not representable as a double; bigint keeps it.
    expect(addChecked("total", 9_007_199_254_740_992n, 1n)).toBe(9_007_199_254_740_993n);
    expect(addChecked("total", int64Max - 5n, 5n)).toBe(int64Max);
  });

  it("refuses a sum past int64 instead of wrapping", () => {
    expect(() => addChecked("total_cost_nanos", int64Max, 1n)).toThrow(Int64OverflowError);
    expect(() => addChecked("total_cost_nanos", int64Max, 1n)).toThrow(/total_cost_nanos/);
  });

  it("knows the int64 range", () => {
    expect(isInt64(int64Max)).toBe(true);
    expect(isInt64(int64Max + 1n)).toBe(false);
    expect(isInt64(int64Min)).toBe(true);
    expect(isInt64(int64Min - 1n)).toBe(false);
  });

  it("formats nanos as decimal units without floats", () => {
    expect(formatNanos(1_500_000_000n)).toBe("1.5");
    expect(formatNanos(1n)).toBe("0.000000001");
    expect(formatNanos(0n)).toBe("0");
    expect(formatNanos(-2_000_000_000n)).toBe("-2");
    expect(formatNanos(int64Max)).toBe("9223372036.854775807");
  });
});
