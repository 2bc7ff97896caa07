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

export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = { level, base: { service: "tally" }, timestamp: pino.stdTimeFunctions.isoTime };
  if (destination !== undefined) return pino(options, destination as pino.DestinationStream);
  // Asynchronous stdout: lines written while a write is in flight are joined
  // into the next one, so under load logging costs a syscall per batch, not
  // per RPC (one line per RPC is the rule). Lines are never held back waiting
  // for more (minLength 0), and pending ones are written before the process
  // exits, which it does by letting the event loop drain.
  return pino(options, pino.destination({ dest: 1, sync: false, minLength: 0 }));
}
