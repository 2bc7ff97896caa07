// The runaway guard as a pure function: a burst over the rate is refused with
// the instant it would fit, and at that instant (not a millisecond before) the
// same estimate is allowed; properties against an independent oracle.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decideRate, leavesAtMs, type RateEntry } from "../../src/ledger/rate-guard.ts";
import { rateWindowMs } from "../../src/limits.ts";

const record = (atMs: number, amountNanos: bigint): RateEntry => ({ atMs, amountNanos, reserved: false });
const hold = (atMs: number, amountNanos: bigint, expiresAtMs?: number): RateEntry => ({
  atMs,
  amountNanos,
  reserved: true,
  ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
});

describe("rate guard", () => {
  it("refuses a burst over the rate with the time it fits, and allows it from then on", () => {
    const limit = 10n;
    const entries: RateEntry[] = [];
    // A looping agent reserving 1 nano every 100 ms from t = 0.
    let refusedAt = -1;
    for (let i = 0, t = 0; i < 20; i++, t += 100) {
      const decision = decideRate(limit, entries, 1n, t);
      if (!decision.allowed) {
        refusedAt = t;
        break;
      }
      entries.push(hold(t, 1n));
    }
    expect(refusedAt).toBe(1_000); // ten reservations of 1 fill a limit of 10
    const refused = decideRate(limit, entries, 1n, refusedAt);
    expect(refused).toMatchObject({ allowed: false, reason: "rate_limited", reservedNanos: 10n, spentNanos: 0n, remainingNanos: 0n });
    // The first hold (placed at 0) leaves the window at 60 000 ms.
    expect(refused.retryAtMs).toBe(rateWindowMs);
    expect(decideRate(limit, entries, 1n, rateWindowMs - 1).allowed).toBe(false);
    expect(decideRate(limit, entries, 1n, rateWindowMs)).toMatchObject({ allowed: true, reason: "within_budget", remainingNanos: 1n });
  });

  it("counts records and holds, and a hold only until it expires", () => {
    const entries = [record(0, 4n), hold(10, 4n, 20_000)];
    expect(decideRate(10n, entries, 0n, 15_000)).toMatchObject({ spentNanos: 4n, reservedNanos: 4n, remainingNanos: 2n, allowed: true });
    expect(decideRate(10n, entries, 3n, 15_000)).toMatchObject({ allowed: false, retryAtMs: 20_000 }); // the hold expires first
    expect(decideRate(10n, entries, 3n, 20_000)).toMatchObject({ allowed: true, reservedNanos: 0n });
  });

  it("never fits an estimate above the limit (no retry time)", () => {
    expect(decideRate(10n, [], 11n, 0)).toMatchObject({ allowed: false, retryAtMs: null, remainingNanos: 10n });
  });

  it("refuses a zero estimate once nothing is left, like the budget rule", () => {
    expect(decideRate(10n, [record(0, 10n)], 0n, 1)).toMatchObject({ allowed: false, retryAtMs: rateWindowMs });
  });

  const entry = fc
    .record({
      atMs: fc.integer({ min: 0, max: 200_000 }),
      amountNanos: fc.bigInt({ min: 0n, max: 1_000n }),
      reserved: fc.boolean(),
      expires: fc.option(fc.integer({ min: 0, max: 300_000 }), { nil: undefined }),
    })
    .map(({ expires, ...rest }): RateEntry => (rest.reserved && expires !== undefined ? { ...rest, expiresAtMs: expires } : rest));

  it("allows exactly when the oracle does, and a refusal's retry time is the first instant that fits", () => {
    fc.assert(
      fc.property(
        fc.array(entry, { maxLength: 40 }),
        fc.bigInt({ min: 1n, max: 5_000n }),
        fc.bigInt({ min: 0n, max: 6_000n }),
        fc.integer({ min: 0, max: 250_000 }),
        (entries, limit, estimate, now) => {
          // Oracle: sum what is still counting, by its own reading of the window.
          const used = (t: number) =>
            entries
              .filter((e) => e.atMs + rateWindowMs > t && (e.expiresAtMs === undefined || e.expiresAtMs > t))
              .reduce((s, e) => s + e.amountNanos, 0n);
          const fits = (t: number) => limit - used(t) > 0n && estimate <= limit - used(t);
          const decision = decideRate(limit, entries, estimate, now);
          expect(decision.allowed).toBe(fits(now));
          expect(decision.remainingNanos).toBe(limit - used(now));
          if (decision.allowed) {
            expect(decision.retryAtMs).toBeNull();
            return;
          }
          if (estimate > limit) {
            expect(decision.retryAtMs).toBeNull();
            return;
          }
          const at = decision.retryAtMs!;
          expect(at).toBeGreaterThan(now);
          expect(fits(at)).toBe(true);
          expect(fits(at - 1)).toBe(false);
          // Nothing in between fits either: used only changes where an entry leaves.
          for (const e of entries) {
            const t = leavesAtMs(e);
            if (t > now && t < at) expect(fits(t)).toBe(false);
          }
        },
      ),
      { numRuns: 2_000 },
    );
  });
});
