// The SQLite writer thread's entry point (started by src/store/sqlite/writer.ts).
// It opens its own connection to the database file and applies every write of
// the process there, one request at a time, with the same SqliteLedgerStore
// code that runs in-thread on :memory: databases. The main thread's event loop
// keeps serving while a batch runs and its commit waits for the disk (fsync).
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";
import { isOpError } from "../../ledger/errors.ts";
import type { OpResult, WriteOp } from "../../ledger/store.ts";
import { CommitCounter } from "./commit-counter.ts";
import { configureConnection, type SqliteOptions } from "./connection.ts";
import { SqliteLedgerStore } from "./store.ts";
import type { WriterReply, WriterRequest, WireOpResult } from "./writer.ts";

const port = parentPort;
if (port === null) throw new Error("writer-worker.ts runs as a worker thread (src/store/sqlite/writer.ts starts it)");
const { path, options } = workerData as { path: string; options: SqliteOptions };

let store: SqliteLedgerStore;
let db: Database.Database;
// Numbers every write transaction (src/store/sqlite/commit-counter.ts), so a start
// can tell a database that lost acknowledged commits.
let counter: CommitCounter;
try {
  db = new Database(path, { fileMustExist: true });
  configureConnection(db, false, options);
  counter = new CommitCounter(db, path);
  store = new SqliteLedgerStore(db, async () => {
    db.close();
  });
  port.postMessage({ kind: "ready" } satisfies WriterReply);
} catch (error) {
  port.postMessage({ kind: "startFailed", message: (error as Error).message } satisfies WriterReply);
  process.exit(1);
}

port.on("message", (request: WriterRequest) => {
  if (request.kind === "close") {
    counter.close();
    db.close();
    port.close();
    return;
  }
  let reply: WriterReply;
  try {
    switch (request.kind) {
      case "commitBatch":
        reply = {
          kind: "results",
          id: request.id,
          results: counter.run(() => store.commitBatchSync(request.ops as WriteOp[], request.nowMs)).map(toWire),
        };
        break;
      case "deleteExpiredHolds":
        reply = { kind: "count", id: request.id, count: counter.run(() => store.deleteExpiredHoldsSync(request.nowMs, request.countMax)) };
        break;
      case "deleteReserveKeysBefore":
        reply = {
          kind: "count",
          id: request.id,
          count: counter.run(() => store.deleteReserveKeysBeforeSync(request.beforeMs, request.countMax)),
        };
        break;
      case "deleteRecordsBefore":
        reply = {
          kind: "count",
          id: request.id,
          count: counter.run(() => store.deleteRecordsBeforeSync(request.beforeMs, request.countMax)),
        };
        break;
    }
  } catch (error) {
    // The transaction failed as a whole (nothing of it is in the database).
    const { message, code } = error as { message?: unknown; code?: unknown };
    reply = { kind: "failed", id: request.id, message: String(message), code: typeof code === "string" ? code : undefined };
  }
  port.postMessage(reply);
});

/** Values are plain data (structured clone keeps bigint); a domain error
 * travels as its class name and message. */
function toWire(result: OpResult): WireOpResult {
  if (result.ok) return result;
  if (!isOpError(result.error)) throw new Error(`invariant: op failed with a non-domain error ${result.error.name}`);
  return { ok: false, error: { name: result.error.name, message: result.error.message } };
}
