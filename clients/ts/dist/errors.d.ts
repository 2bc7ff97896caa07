import type { CheckBudgetResponse, RecordCostRequest } from "@tally/client/tally/budget/v1/budget_pb";
export declare class TallyError extends Error {
    name: string;
    /** The gRPC status name, e.g. "UNAVAILABLE"; "" when Tally did not answer with one. */
    readonly code: string;
    /** How many times the request was sent (same request id). */
    readonly attempts: number;
    /** Tally could not decide (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
     * with a retry time) rather than refused: what the failure policy applies to. */
    readonly retryable: boolean;
    constructor(message: string, options?: {
        code?: string;
        attempts?: number;
        retryable?: boolean;
        cause?: unknown;
    });
}
/** Tally could not be reached (or kept answering UNAVAILABLE, DEADLINE_EXCEEDED
 * or RESOURCE_EXHAUSTED with a retry time) within the retry bounds. Under
 * fail_closed the LLM call does not run. */
export declare class TallyUnavailable extends TallyError {
    name: string;
}
/** The budget refused the call: the body never ran. `check` is Tally's answer. */
export declare class BudgetRefused extends TallyError {
    name: string;
    readonly check: CheckBudgetResponse;
    constructor(message: string, check: CheckBudgetResponse);
}
/** The guarded body ended without reporting a cost or usage (nor skip()): the
 * hold was released and nothing recorded. For a stream: the final usage never
 * arrived (OpenAI: stream_options include_usage). */
export declare class UsageNotReported extends TallyError {
    name: string;
}
/** Tally is unreachable and the outbox already holds outboxMax records: this
 * record (in `record`) was not queued. Never dropped silently. */
export declare class OutboxFull extends TallyError {
    name: string;
    readonly record: RecordCostRequest;
    constructor(message: string, record: RecordCostRequest);
}
/** close() could not deliver every queued record in time: they are in `records`. */
export declare class OutboxNotEmpty extends TallyError {
    name: string;
    readonly records: RecordCostRequest[];
    constructor(message: string, records: RecordCostRequest[]);
}
