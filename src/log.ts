// Structured logging (pino): one event-name constant per kind of event, so a
// reader can grep for any event by its name and a dashboard can count them.
import { pino, type Logger, type LevelWithSilent } from "pino";

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
  authKeysReloadFailed: "auth.keys_reload_failed",
  tlsReloaded: "tls.reloaded",
  tlsReloadFailed: "tls.reload_failed",
  /** Spend reached an alert threshold below 100 % of a limit (logged once per crossing). */
  budgetThresholdCrossed: "budget.threshold_crossed",
  /** Spend reached 100 % of a limit (logged once per limit and period). */
  budgetExhausted: "budget.exhausted",
  budgetChanged: "budget.changed",
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

/** Joins the lines logged during one event-loop turn into one write.
 *
 * Why: pino's asynchronous SonicBoom issues an fs.write as soon as none is in
 * flight, and to a file a write finishes almost at once, so under load nearly
 * every RPC's line became its own threadpool write (about 10 µs of main-thread
 * CPU each, more than the whole JSON line). Here the lines of a turn (all the
 * calls answered by one batch of socket reads) are handed to SonicBoom as one
 * string at setImmediate.
 *
 * Why it is safe: a line waits at most until the end of the current loop turn,
 * never for more lines (no size threshold, no timer); the pending setImmediate
 * keeps the loop alive, so a process that exits by draining its loop writes
 * everything first; a process that exits with process.exit() or on an uncaught
 * exception hands the pending lines over and writes them synchronously in
 * 'exit' (as pino itself does for SonicBoom). Order is kept: one buffer, one
 * writer. Lines are only lost where they were lost before: SIGKILL or a crash
 * of the process itself. */
export class TurnCoalescingDestination {
  readonly #target: SonicBoomLike;
  #pending = "";
  #scheduled = false;

  constructor(target: SonicBoomLike) {
    this.#target = target;
    process.once("exit", () => this.flushSync());
  }

  write(line: string): boolean {
    this.#pending += line;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#handOver);
    }
    return true;
  }

  readonly #handOver = (): void => {
    this.#scheduled = false;
    const text = this.#pending;
    if (text === "") return;
    this.#pending = "";
    this.#target.write(text);
  };

  /** pino's logger.flush(): hand over what is pending, then flush the target. */
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

/** What TurnCoalescingDestination needs of pino.destination()'s SonicBoom. */
interface SonicBoomLike {
  write(text: string): boolean;
  flush(cb?: (error?: Error) => void): void;
  flushSync(): void;
}

export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { service: "tally" }, timestamp: isoTimeCached };
  if (destination !== undefined) return pino(options, destination as pino.DestinationStream);
  // Asynchronous stdout: lines written while a write is in flight are joined
  // into the next one, and the lines of one loop turn are joined before that
  // (TurnCoalescingDestination), so under load logging costs a syscall per
  // batch, not per RPC (one line per RPC is the rule). Lines are never held
  // back waiting for more (minLength 0), and pending ones are written before
  // the process exits.
  return pino(options, new TurnCoalescingDestination(pino.destination({ dest: 1, sync: false, minLength: 0 })) as unknown as pino.DestinationStream);
}
