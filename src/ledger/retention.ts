// Retention of the cost ledger. Totals are lifetime and never touched; only
// cost records older than the retention window are deleted, in bounded chunks.
// Idempotency keys live in those records, so the window is also how long a
// retry is recognised (never less than 24 h, see limits.ts).
import { deleteInChunks } from "./chunks.ts";
import type { LedgerStore } from "./store.ts";

export class RetentionSweeper {
  readonly #store: LedgerStore;
  readonly #retentionMs: number;
  readonly #chunkMax: number;
  readonly #now: () => number;

  constructor(store: LedgerStore, retentionMs: number, chunkMax: number, now: () => number = Date.now) {
    this.#store = store;
    this.#retentionMs = retentionMs;
    this.#chunkMax = chunkMax;
    this.#now = now;
  }

  /** Deletes expired records, at most `chunksMax` chunks per call so one sweep
   * never runs for long. Returns how many records were deleted. */
  async sweep(chunksMax = 10): Promise<number> {
    const beforeMs = this.#now() - this.#retentionMs;
    return deleteInChunks((countMax) => this.#store.deleteRecordsBefore(beforeMs, countMax), this.#chunkMax, chunksMax);
  }
}
