// Expired holds stop counting the moment they expire (every decision and
// settle compares expires_at_ms with now). This sweeper only reclaims their
// rows, in bounded transactions, each also decrementing the reserved totals.
import { reserveKeyKeepMs } from "../limits.ts";
import { deleteInChunks } from "./chunks.ts";
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
    const deleted = await deleteInChunks((countMax) => this.#store.deleteExpiredHolds(nowMs, countMax), this.#batchMax, batchesMax);
    await deleteInChunks((countMax) => this.#store.deleteReserveKeysBefore(nowMs - reserveKeyKeepMs, countMax), this.#batchMax, batchesMax);
    return deleted;
  }
}
