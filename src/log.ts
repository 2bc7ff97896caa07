// Structured logging (pino): one event-name constant per kind of event, so a
// reader can grep for any event by its name and a dashboard can count them.
import { fstatSync } from "node:fs";
import { pino, type Logger, type LevelWithSilent } from "pino";
import { idLengthMax, idPattern, logCoalesceCharsMax, logCoalesceMs } from "./limits.ts";

export const LogEvent = {
  serverListening: "server.listening",
  serverDraining: "server.draining",
  serverStopped: "server.stopped",
  serverStartFailed: "server.start_failed",
  databaseOpened: "database.opened",
  migrationsApplied: "database.migrations_applied",
  databaseConnectRetry: "database.connect_retry",
  rpcCompleted: "rpc.completed",
  rpcFailed: "rpc.failed",
  batchCommitFailed: "uow.batch_commit_failed",
  batchCommitted: "uow.batch_committed",
  retentionSwept: "retention.swept",
  retentionSweepFailed: "retention.sweep_failed",
  signalReceived: "process.signal",
  metricsCollectFailed: "metrics.collect_failed",
  metricsDenied: "metrics.denied",
  dashboardNotBuilt: "dashboard.not_built",
  authDisabled: "auth.disabled_loopback",
  authKeysLoaded: "auth.keys_loaded",
  authKeysFileExposed: "auth.keys_file_exposed",
  authKeysReloadFailed: "auth.keys_reload_failed",
  tlsReloaded: "tls.reloaded",
  tlsReloadFailed: "tls.reload_failed",
  /** Spend reached an alert threshold below 100 % of a limit (logged once per crossing). */
  budgetThresholdCrossed: "budget.threshold_crossed",
  /** Spend reached 100 % of a limit (logged once per limit and period). */
  budgetExhausted: "budget.exhausted",
  budgetChanged: "budget.changed",
  /** Operators removing projects (archive, unarchive, delete): who can tell later what happened to one. */
  projectArchived: "project.archived",
  projectUnarchived: "project.unarchived",
  projectDeleted: "project.deleted",
  holdsSwept: "holds.swept",
  holdSweepFailed: "holds.sweep_failed",
} as const;
export type LogEvent = (typeof LogEvent)[keyof typeof LogEvent];

export type { Logger };

/** pino's isoTime, computed once per millisecond: under load many lines share
 * a millisecond, and Date#toISOString is the costly part. The text is the same
 * as pino.stdTimeFunctions.isoTime gives for that millisecond. */
let isoTimeMs = -1;
let isoTimeField = "";
export function isoTimeCached(): string {
  const ms = Date.now();
  if (ms !== isoTimeMs) {
    isoTimeMs = ms;
    isoTimeField = `,"time":"${new Date(ms).toISOString()}"`;
  }
  return isoTimeField;
}

/** Joins log lines into fewer writes: a line waits at most logCoalesceMs (or
 * until logCoalesceCharsMax characters wait), then everything waiting is handed
 * to SonicBoom as one string.
 *
 * Why: pino's asynchronous SonicBoom issues an fs.write as soon as none is in
 * flight, and to a file a write finishes almost at once, so under load nearly
 * every RPC's line became its own threadpool write: about 10 µs of main-thread
 * CPU each (the request to the threadpool and its completion), more than
 * building the line.
 *
 * Why it is safe: a line waits a bounded time, never for more lines; the
 * timer keeps the event loop alive, so a process that exits by draining its
 * loop writes everything first; on process.exit() or an uncaught exception the
 * waiting lines are written synchronously in 'exit' (as pino does for
 * SonicBoom). Order is kept (one buffer, one writer). Lines are lost only where
 * they were before: SIGKILL, or a crash of the process itself. */
export class CoalescingDestination {
  readonly #target: SonicBoomLike;
  readonly #delayMs: number;
  readonly #charsMax: number;
  #pending = "";
  #timer: NodeJS.Timeout | undefined;

  constructor(target: SonicBoomLike, delayMs = logCoalesceMs, charsMax = logCoalesceCharsMax) {
    this.#target = target;
    this.#delayMs = delayMs;
    this.#charsMax = charsMax;
    flushOnExit(this);
  }

  write(line: string): boolean {
    this.#pending += line;
    if (this.#pending.length >= this.#charsMax) this.#handOver();
    else this.#timer ??= setTimeout(this.#handOver, this.#delayMs);
    return true;
  }

  readonly #handOver = (): void => {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const text = this.#pending;
    if (text === "") return;
    this.#pending = "";
    this.#target.write(text);
  };

  /** pino's logger.flush(): hand over what waits, then flush the target. */
  flush(cb?: (error?: Error) => void): void {
    this.#handOver();
    this.#target.flush(cb);
  }

  flushSync(): void {
    this.#handOver();
    try {
      this.#target.flushSync();
    } catch {
      // Already closed (or not yet open): nothing more can be written.
    }
  }
}

/** Destinations to flush when the process exits: one 'exit' listener for
 * all of them (a listener per logger would pile up where many are made, as in
 * tests), holding them weakly so a dropped logger can be collected. */
const exitFlushes = new Set<WeakRef<CoalescingDestination>>();
let exitHooked = false;
function flushOnExit(destination: CoalescingDestination): void {
  if (!exitHooked) {
    exitHooked = true;
    process.once("exit", () => {
      for (const ref of exitFlushes) ref.deref()?.flushSync();
    });
  }
  for (const ref of exitFlushes) if (ref.deref() === undefined) exitFlushes.delete(ref);
  exitFlushes.add(new WeakRef(destination));
}

/** What CoalescingDestination needs of pino.destination()'s SonicBoom. */
interface SonicBoomLike {
  write(text: string): boolean;
  flush(cb?: (error?: Error) => void): void;
  flushSync(): void;
}

export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { service: "tally" }, timestamp: isoTimeCached };
  if (destination !== undefined) return pino(options, destination as pino.DestinationStream);
  // Lines joined for up to logCoalesceMs (CoalescingDestination), so under
  // load logging costs one write per batch of lines, not one per RPC (one line
  // per RPC is the rule). To a regular file the batch is written synchronously:
  // a write into the page cache takes microseconds, while handing it to the
  // threadpool (asynchronous SonicBoom) cost the event loop far more (profile:
  // 5.6 µs per line even when batched). To a pipe, socket or terminal, whose
  // reader may be slow, writes stay asynchronous so they never block the loop.
  // Waiting lines are written before the process exits.
  const toFile = isRegularFile(1);
  return pino(
    options,
    new CoalescingDestination(pino.destination({ dest: 1, sync: toFile, minLength: 0 })) as unknown as pino.DestinationStream,
  );
}

function isRegularFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile();
  } catch {
    return false;
  }
}

/** Characters of an invalid id that a log line keeps. */
const invalidIdLoggedChars = 32;

/** An id as a log line may carry it: a valid id as it is, anything else (too
 * long, odd characters: it is refused with INVALID_ARGUMENT anyway) cut to
 * its first characters and its length, so one call cannot write 60,000
 * characters into the log (the JSON encoding escapes control characters). */
export function loggableId(value: unknown): string | undefined {
  if (typeof value !== "string") return undefined;
  if (value.length <= idLengthMax && (value.length === 0 || idPattern.test(value))) return value;
  return `${value.slice(0, invalidIdLoggedChars)}... (invalid, ${value.length} characters)`;
}
