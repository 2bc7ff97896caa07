export class TallyError extends Error {
    name = "TallyError";
    /** The gRPC status name, e.g. "UNAVAILABLE"; "" when Tally did not answer with one. */
    code;
    /** How many times the request was sent (same request id). */
    attempts;
    /** Tally could not decide (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
     * with a retry time) rather than refused: what the failure policy applies to. */
    retryable;
    constructor(message, options = {}) {
        super(message, options.cause === undefined ? undefined : { cause: options.cause });
        this.code = options.code ?? "";
        this.attempts = options.attempts ?? 0;
        this.retryable = options.retryable ?? false;
    }
}
/** Tally could not be reached (or kept answering UNAVAILABLE, DEADLINE_EXCEEDED
 * or RESOURCE_EXHAUSTED with a retry time) within the retry bounds. Under
 * fail_closed the LLM call does not run. */
export class TallyUnavailable extends TallyError {
    name = "TallyUnavailable";
}
/** The budget refused the call: the body never ran. `check` is Tally's answer. */
export class BudgetRefused extends TallyError {
    name = "BudgetRefused";
    check;
    constructor(message, check) {
        super(message);
        this.check = check;
    }
}
/** The guarded body ended without reporting a cost or usage (nor skip()): the
 * hold was released and nothing recorded. For a stream: the final usage never
 * arrived (OpenAI: stream_options include_usage). */
export class UsageNotReported extends TallyError {
    name = "UsageNotReported";
}
/** Tally is unreachable and the outbox already holds outboxMax records: this
 * record (in `record`) was not queued. Never dropped silently. */
export class OutboxFull extends TallyError {
    name = "OutboxFull";
    record;
    constructor(message, record) {
        super(message);
        this.record = record;
    }
}
/** close() could not deliver every queued record in time: they are in `records`. */
export class OutboxNotEmpty extends TallyError {
    name = "OutboxNotEmpty";
    records;
    constructor(message, records) {
        super(message);
        this.records = records;
    }
}
