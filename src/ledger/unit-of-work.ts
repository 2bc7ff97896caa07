// The unit of work: every write goes through here. Concurrent RPCs are gathered
// into batches and committed together in one transaction (group commit), so the
// cost of a durable commit (an fsync) is shared by every write in the batch.
// A caller's promise settles only after its batch committed.
//
// Batching: a write that finds the writer idle schedules a flush with
// setImmediate, so everything that arrives in the same turn of the event loop
// (all the requests parsed from the sockets that were readable) joins it. While
// a commit is running, new writes queue up and form the next batch. A batch holds
// at most batchSizeMax writes; the queue holds at most queueDepthMax, beyond which
// writes fail fast with QueueFullError (RESOURCE_EXHAUSTED) instead of waiting.
import { ClosedError, DeadlinePassedError, QueueFullError, StoreUnavailableError } from "./errors.ts";
import type { LedgerStore, WriteOp, WriteValue } from "./store.ts";

interface Pending {
  op: WriteOp;
  signal: AbortSignal | undefined;
  resolve: (value: never) => void;
  reject: (error: Error) => void;
}

export interface UnitOfWorkOptions {
  batchSizeMax: number;
  queueDepthMax: number;
  now?: () => number;
  /** Called after every commit attempt; for logs and metrics. */
  onBatch?: (info: { size: number; commitMs: number; failed: boolean; queued: number }) => void;
}

export class UnitOfWork {
  readonly #store: LedgerStore;
  readonly #batchSizeMax: number;
  readonly #queueDepthMax: number;
  readonly #now: () => number;
  readonly #onBatch: UnitOfWorkOptions["onBatch"];
  #queue: Pending[] = [];
  #scheduled = false;
  #running: Promise<void> | null = null;
  #closed = false;

  constructor(store: LedgerStore, options: UnitOfWorkOptions) {
    if (!(options.batchSizeMax >= 1 && options.queueDepthMax >= options.batchSizeMax)) {
      throw new Error(`unit of work: need 1 <= batchSizeMax (${options.batchSizeMax}) <= queueDepthMax (${options.queueDepthMax})`);
    }
    this.#store = store;
    this.#batchSizeMax = options.batchSizeMax;
    this.#queueDepthMax = options.queueDepthMax;
    this.#now = options.now ?? Date.now;
    this.#onBatch = options.onBatch;
  }

  /** Writes waiting for a commit (not counting the batch being committed). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Queues one write. `signal` (the caller's deadline or cancellation) drops the
   * write if it fires before the write joins a batch; once in a batch, it commits. */
  submit<O extends WriteOp>(op: O, signal?: AbortSignal): Promise<WriteValue<O>> {
    if (this.#closed) return Promise.reject(new ClosedError());
    if (this.#queue.length >= this.#queueDepthMax) return Promise.reject(new QueueFullError(this.#queueDepthMax));
    if (signal?.aborted) return Promise.reject(new DeadlinePassedError());
    return new Promise<WriteValue<O>>((resolve, reject) => {
      this.#queue.push({ op, signal, resolve: resolve as (value: never) => void, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#running !== null) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#running = this.#drain().finally(() => {
        this.#running = null;
        // Writes that arrived during the commit, or did not fit in the batch.
        if (this.#queue.length > 0) this.#schedule();
      });
    });
  }

  /** Commits one batch. The next batch is scheduled as a new macrotask (see
   * #schedule), so between two commits the event loop writes the answers of the
   * last batch and reads new requests, which then join the next batch. */
  async #drain(): Promise<void> {
    const batch: Pending[] = [];
    while (batch.length < this.#batchSizeMax && this.#queue.length > 0) {
      const pending = this.#queue.shift() as Pending;
      if (pending.signal?.aborted) {
        pending.reject(new DeadlinePassedError());
        continue;
      }
      batch.push(pending);
    }
    if (batch.length === 0) return;
    const startedMs = performance.now();
    let failed = false;
    try {
      const results = await this.#store.commitBatch(
        batch.map((p) => p.op),
        this.#now(),
      );
      if (results.length !== batch.length) {
        throw new Error(`invariant: store returned ${results.length} results for a batch of ${batch.length}`);
      }
      results.forEach((result, i) => {
        const pending = batch[i] as Pending;
        if (result.ok) pending.resolve(result.value as never);
        else pending.reject(result.error);
      });
    } catch (cause) {
      failed = true;
      // The transaction failed as a whole: nothing in it was written.
      const error = new StoreUnavailableError(cause);
      for (const pending of batch) pending.reject(error);
    }
    this.#onBatch?.({ size: batch.length, commitMs: performance.now() - startedMs, failed, queued: this.#queue.length });
  }

  /** Stops accepting writes and waits until everything queued is committed. */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#queue.length > 0 || this.#running !== null || this.#scheduled) {
      if (this.#running !== null) await this.#running;
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }
}
