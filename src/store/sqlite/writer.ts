// The SQLite writer thread, seen from the main thread (docs/decisions/0008).
//
// better-sqlite3 is synchronous: a batch's statements and its durable COMMIT
// (an fsync of the WAL, about half a millisecond or more) block whichever
// thread runs them. On the main thread that is time no RPC is served: at
// concurrency 64 the commits took a third or more of it. So a file database
// writes on a worker thread with its own connection, and the main thread's
// connection only reads. WAL mode lets both work at once: a read sees the
// last commit, never half of a batch, and a batch is committed before its
// reply is posted, so an acknowledged write is visible to every later read.
//
// One request is applied at a time, in order of arrival; the unit of work
// sends one batch at a time, so the writer never queues more than one batch
// plus the occasional sweep. If the thread dies, the requests in flight fail
// (UNAVAILABLE to callers: their transaction either committed fully or not at
// all, and request_id makes the retry safe) and the next request starts a new
// thread.
import { Worker } from "node:worker_threads";
import { reviveOpError } from "../../ledger/errors.ts";
import type { OpResult, WriteOp } from "../../ledger/store.ts";
import { sqliteWriterStartMsMax } from "../../limits.ts";
import type { SqliteOptions } from "./connection.ts";
import type { SqliteWrites } from "./store.ts";

/** Requests the main thread posts (`id` pairs each with its reply). */
export type WriterRequest =
  | { kind: "commitBatch"; id: number; ops: readonly WriteOp[]; nowMs: number }
  | { kind: "deleteExpiredHolds"; id: number; nowMs: number; countMax: number }
  | { kind: "deleteReserveKeysBefore"; id: number; beforeMs: number; countMax: number }
  | { kind: "deleteRecordsBefore"; id: number; beforeMs: number; countMax: number }
  | { kind: "close" };

export type WireOpResult = Extract<OpResult, { ok: true }> | { ok: false; error: { name: string; message: string } };

/** Replies the writer thread posts. */
export type WriterReply =
  | { kind: "ready" }
  | { kind: "startFailed"; message: string }
  | { kind: "results"; id: number; results: WireOpResult[] }
  | { kind: "count"; id: number; count: number }
  | { kind: "failed"; id: number; message: string; code: string | undefined };

/** A write the writer thread could not apply: the whole transaction failed. */
export class WriterError extends Error {
  override name = "WriterError";
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

interface InFlight {
  resolve: (reply: WriterReply) => void;
  reject: (error: Error) => void;
}

export class SqliteWriter implements SqliteWrites {
  readonly #path: string;
  readonly #options: SqliteOptions;
  #worker: Promise<Worker> | null = null;
  /** The thread #worker resolved to, once ready: compared synchronously when a thread ends. */
  #current: Worker | null = null;
  readonly #inFlight = new Map<number, InFlight>();
  #nextId = 1;
  #closed = false;

  private constructor(path: string, options: SqliteOptions) {
    this.#path = path;
    this.#options = options;
  }

  /** Starts the thread on an existing, migrated database file. */
  static async start(path: string, options: SqliteOptions): Promise<SqliteWriter> {
    const writer = new SqliteWriter(path, options);
    await writer.#ensureWorker();
    return writer;
  }

  async commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    const reply = await this.#request({ kind: "commitBatch", id: 0, ops, nowMs });
    if (reply.kind !== "results") throw new Error(`invariant: writer answered a batch with ${reply.kind}`);
    return reply.results.map((result) =>
      result.ok ? result : { ok: false, error: reviveOpError(result.error.name, result.error.message) },
    );
  }

  async deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    return this.#count(await this.#request({ kind: "deleteExpiredHolds", id: 0, nowMs, countMax }));
  }

  async deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number> {
    return this.#count(await this.#request({ kind: "deleteReserveKeysBefore", id: 0, beforeMs, countMax }));
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    return this.#count(await this.#request({ kind: "deleteRecordsBefore", id: 0, beforeMs, countMax }));
  }

  /** Waits for the requests in flight, then closes the thread's connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const pending = [...this.#inFlight.values()].map(
      (call) =>
        new Promise<void>((done) => {
          const { resolve, reject } = call;
          call.resolve = (reply) => {
            resolve(reply);
            done();
          };
          call.reject = (error) => {
            reject(error);
            done();
          };
        }),
    );
    await Promise.all(pending);
    const worker = await this.#worker?.catch(() => null);
    if (worker === null || worker === undefined) return;
    const exited = new Promise((resolve) => worker.once("exit", resolve));
    worker.ref(); // until it has closed the database and exited
    worker.postMessage({ kind: "close" } satisfies WriterRequest);
    await exited;
  }

  /** Ends the thread at once, as a crash would (for tests of that path): what
   * it had not answered fails, and the next request starts a new thread. */
  async stopThread(): Promise<void> {
    const worker = await this.#worker?.catch(() => null);
    if (worker !== null && worker !== undefined) await worker.terminate();
  }

  #count(reply: WriterReply): number {
    if (reply.kind !== "count") throw new Error(`invariant: writer answered a count with ${reply.kind}`);
    return reply.count;
  }

  async #request(request: Exclude<WriterRequest, { kind: "close" }>): Promise<WriterReply> {
    if (this.#closed) throw new WriterError("the SQLite writer is closed");
    const worker = await this.#ensureWorker();
    const id = this.#nextId++;
    const reply = await new Promise<WriterReply>((resolve, reject) => {
      this.#inFlight.set(id, { resolve, reject });
      // Referenced only while a request waits: an idle writer never keeps the
      // process alive on its own.
      if (this.#inFlight.size === 1) worker.ref();
      worker.postMessage({ ...request, id });
    });
    if (reply.kind === "failed") throw new WriterError(reply.message, reply.code);
    return reply;
  }

  #settle(id: number, reply: WriterReply): void {
    const call = this.#inFlight.get(id);
    if (call === undefined) throw new Error(`invariant: writer replied to unknown request ${id}`);
    this.#inFlight.delete(id);
    call.resolve(reply);
  }

  #ensureWorker(): Promise<Worker> {
    this.#worker ??= this.#spawn().catch((error: unknown) => {
      this.#worker = null; // the next request tries again
      throw error;
    });
    return this.#worker;
  }

  #spawn(): Promise<Worker> {
    return new Promise<Worker>((resolve, reject) => {
      const worker = new Worker(new URL("./writer-worker.ts", import.meta.url), {
        workerData: { path: this.#path, options: this.#options },
        name: "tally-sqlite-writer",
      });
      let ready = false;
      const timer = setTimeout(() => {
        void worker.terminate();
        reject(new WriterError(`the SQLite writer thread did not open ${this.#path} within ${sqliteWriterStartMsMax} ms`));
      }, sqliteWriterStartMsMax);
      worker.on("message", (reply: WriterReply) => {
        switch (reply.kind) {
          case "ready":
            ready = true;
            this.#current = worker;
            clearTimeout(timer);
            worker.unref();
            resolve(worker);
            return;
          case "startFailed":
            clearTimeout(timer);
            reject(new WriterError(`the SQLite writer thread could not open ${this.#path}: ${reply.message}`));
            return;
          default:
            this.#settle(reply.id, reply);
            if (this.#inFlight.size === 0) worker.unref();
        }
      });
      worker.on("error", (error) => {
        if (!ready) {
          clearTimeout(timer);
          reject(error);
        }
        this.#lost(worker, error.message);
      });
      worker.on("exit", (code) => {
        if (!ready) {
          clearTimeout(timer);
          reject(new WriterError(`the SQLite writer thread exited with code ${code} while starting`));
        }
        this.#lost(worker, `exited with code ${code}`);
      });
    });
  }

  /** The thread is gone: what it had not answered fails, and the next request
   * starts a new one (unless closing). */
  #lost(worker: Worker, why: string): void {
    // Synchronously, so no request made from here on is posted to this thread.
    if (this.#current === worker) {
      this.#current = null;
      this.#worker = null;
    }
    const error = new WriterError(
      `the SQLite writer thread stopped (${why}); the transaction in flight was committed entirely or not at all`,
    );
    for (const [id, call] of this.#inFlight) {
      this.#inFlight.delete(id);
      call.reject(error);
    }
  }
}
