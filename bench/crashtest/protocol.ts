// What the crash test's load processes and orchestrator exchange. Amounts are
// decimal strings (exact; bigint does not cross IPC).
import { Code } from "@connectrpc/connect";

export interface CrashRequest {
  projectId: string;
  requestId: string;
  costNanos: string;
  inputTokens: string;
  outputTokens: string;
  /** The hold the RecordCost settles ("" for none): part of the payload. */
  holdId?: string;
}

export interface Sums {
  count: number;
  costNanos: string;
  inputTokens: string;
  outputTokens: string;
}

export interface LoadReport {
  loader: string;
  /** Per project: the sums of every acknowledged request. */
  acknowledged: Record<string, Sums>;
  /** Requests in flight when the load stopped: committed or not, unknown. */
  unacknowledged: CrashRequest[];
  /** Some acknowledged requests, re-sent at the end: each must be a duplicate. */
  sample: CrashRequest[];
  attempts: number;
  retriesByCode: Record<string, number>;
  /** Acknowledged as duplicate = true: an earlier attempt had committed but its
   * answer was lost with the killed server. */
  duplicatesAnswered: number;
  /** Requests refused with a non-retryable code (never expected). */
  rejected: Array<{ request: CrashRequest; code: string; message: string }>;
  /** Holds placed by CheckBudget reserve = true (1 s TTL). */
  holdsPlaced: number;
  /** ...settled by an acknowledged RecordCost with hold_id. */
  holdsSettled: number;
  /** ...left to expire on purpose. */
  holdsAbandoned: number;
  /** ...expired before their RecordCost could be recorded (kills); recorded without. */
  holdsExpiredBeforeSettle: number;
  /** Reservations answered only after a retry with the same request_id. */
  reserveRetries: number;
}

/** Codes a client retries with the same request_id: the server is down or
 * restarting (UNAVAILABLE, or a connection torn mid-call, which surfaces as
 * UNKNOWN/INTERNAL/CANCELED), busy (RESOURCE_EXHAUSTED) or slow
 * (DEADLINE_EXCEEDED). Retrying is safe because the request_id makes the write
 * idempotent. Bad input, conflicts and overflows are not retried. */
export function retryable(code: Code): boolean {
  return (
    code === Code.Unavailable ||
    code === Code.Unknown ||
    code === Code.Internal ||
    code === Code.Canceled ||
    code === Code.Aborted ||
    code === Code.ResourceExhausted ||
    code === Code.DeadlineExceeded
  );
}
