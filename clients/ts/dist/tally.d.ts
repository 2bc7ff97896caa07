import { type Client, type Transport } from "@connectrpc/connect";
import { BudgetService, type BudgetEvent, type RecordCostRequest } from "@tally/client/tally/budget/v1/budget_pb";
import { GuardedCall } from "./call.ts";
import { TallyError } from "./errors.ts";
import { type RetryOptions } from "./retry.ts";
export type FailurePolicy = "fail_closed" | "fail_open";
export interface TallyOptions {
    /** http://host:port (cleartext HTTP/2) or https://host:port (TLS). Default http://127.0.0.1:8080. */
    url?: string;
    /** Sent as "authorization: Bearer <key>" on every call. */
    apiKey?: string;
    /** PEM of the CA that signed Tally's certificate (default: Node's roots). */
    ca?: string | Buffer;
    /** fail_closed (default): when Tally cannot decide, guard() throws
     * TallyUnavailable and the call does not run. fail_open: it runs unchecked
     * and its record waits in the outbox. */
    failurePolicy?: FailurePolicy;
    retry?: Partial<RetryOptions>;
    /** Under fail_open: how long a decision or record may retry before the call
     * proceeds / the record is queued. Default 1000. */
    failOpenAfterMs?: number;
    /** Records kept for Tally while it is unreachable (beyond: OutboxFull). Default 1000. */
    outboxMax?: number;
    /** How often the outbox is flushed while it holds records. Default 500. */
    flushIntervalMs?: number;
    /** Default agent label and hold TTL of guards. */
    agent?: string;
    ttlMs?: number;
    /** A queued record Tally refused for good on flush (kept in outboxFailed too). */
    onOutboxError?: (record: RecordCostRequest, error: TallyError) => void;
    /** Your own transport instead of url/apiKey/ca. */
    transport?: Transport;
}
export interface GuardOptions {
    project: string;
    /** Reserve this much, or give model + inputTokens + maxOutputTokens for the catalog's worst case. */
    estimateNanos?: bigint;
    model?: string;
    inputTokens?: bigint | number;
    maxOutputTokens?: bigint | number;
    agent?: string;
    /** The hold's lifetime (>= 1000). Default: the client's ttlMs, else 5 minutes. */
    ttlMs?: number;
    /** Default: generated here ("g-" + UUID) and kept for every retry. */
    requestId?: string;
}
/** Counters since the client was created. */
export interface Stats {
    reserves: number;
    reReserves: number;
    refused: number;
    unchecked: number;
    retries: number;
    settled: number;
    recordedWithoutHold: number;
    duplicates: number;
    released: number;
    releaseFailures: number;
    queued: number;
    flushed: number;
    outboxFailed: number;
    watchReconnects: number;
}
export declare class Tally implements AsyncDisposable {
    #private;
    /** The generated client on this transport, for every other RPC. */
    readonly client: Client<typeof BudgetService>;
    readonly failurePolicy: FailurePolicy;
    readonly retry: RetryOptions;
    readonly failOpenAfterMs: number;
    readonly flushIntervalMs: number;
    readonly agent: string;
    readonly ttlMs: number;
    readonly onOutboxError: ((record: RecordCostRequest, error: TallyError) => void) | undefined;
    readonly outboxFailed: Array<{
        record: RecordCostRequest;
        error: TallyError;
    }>;
    constructor(options?: TallyOptions);
    /** Reserve estimateNanos (or the catalog's worst case of model for
     * inputTokens + maxOutputTokens) under a request id generated here and kept
     * for every retry, then run `body`; settles, releases or records as the
     * body ends. Without `body`: the call, for `await using`. */
    guard(options: GuardOptions): Promise<GuardedCall>;
    guard<T>(options: GuardOptions, body: (call: GuardedCall) => Promise<T> | T): Promise<T>;
    /** WatchBudget's events for `project`, reconnecting with backoff when the
     * stream breaks (each connection starts with a SNAPSHOT). Errors a reconnect
     * cannot cure throw TallyError. Ends when `signal` aborts or you break out. */
    watch(project: string, options?: {
        signal?: AbortSignal;
    }): AsyncGenerator<BudgetEvent, void, undefined>;
    /** Delivers the outbox (same request ids) until empty or timeoutMs passed;
     * resolves to how many records are still queued. */
    flush(options?: {
        timeoutMs?: number;
    }): Promise<number>;
    get outboxSize(): number;
    get stats(): Stats;
    /** Flushes the outbox (at most timeoutMs) and stops the flusher; records
     * still queued throw OutboxNotEmpty carrying them. */
    close(options?: {
        timeoutMs?: number;
    }): Promise<void>;
    [Symbol.asyncDispose](): Promise<void>;
}
