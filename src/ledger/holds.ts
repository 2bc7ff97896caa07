// Expired holds stop counting the moment they expire (every decision and
// settle compares expires_at_ms with now). This sweeper only reclaims their
// rows, in bounded transactions, each also decrementing the reserved totals.
import { reserveKeyKeepMs } from "../limits.ts";
import type { LedgerStore } from "./store.ts";

export class HoldSweeper {
  readonly #store: LedgerStore;
  readonly #batchMax: number;
  readonly #now: () => number;

  constructor(store: LedgerStore, batchMax: number, now: () => number = Date.now) {
    this.#store = store;
    this.#batchMax = batchMax;
    this.#now = now;
  }

  /** Deletes expired holds, and reservation keys reserveKeyKeepMs past their
   * hold's expiry, at most `batchesMax` transactions of each per call so one
   * sweep never runs for long. Returns how many holds were deleted. */
  async sweep(batchesMax = 10): Promise<number> {
    const nowMs = this.#now();
    let deleted = 0;
    for (let batch = 0; batch < batchesMax; batch++) {
      const n = await this.#store.deleteExpiredHolds(nowMs, this.#batchMax);
      deleted += n;
      if (n < this.#batchMax) break;
    }
    for (let batch = 0; batch < batchesMax; batch++) {
      if ((await this.#store.deleteReserveKeysBefore(nowMs - reserveKeyKeepMs, this.#batchMax)) < this.#batchMax) break;
    }
    return deleted;
  }
}
