import { ConnectError } from "@connectrpc/connect";
/** Bounded retries with exponential backoff and half jitter. */
export interface RetryOptions {
    /** Sends per call, the first included. */
    attemptsMax: number;
    /** No new attempt starts after this long since the first. */
    totalMs: number;
    /** Backoff before attempt n+1 is uniform in [d/2, d], d = min(maxDelayMs, baseDelayMs * 2^n). */
    baseDelayMs: number;
    maxDelayMs: number;
    /** Each attempt's deadline (DEADLINE_EXCEEDED is retried). */
    callTimeoutMs: number;
}
export declare const retryDefaults: RetryOptions;
export declare function retryOptions(partial?: Partial<RetryOptions>): RetryOptions;
export declare function backoffMs(retry: RetryOptions, attempt: number): number;
/** What a failed call said, in gRPC's names: UNAVAILABLE for a connection that
 * failed before any answer (connect-node calls a reset "aborted" or
 * "internal", and a stream cut by a dying server "canceled": no server said
 * so, and these helpers never cancel their own calls), the server's code
 * otherwise. */
export interface Failure {
    code: string;
    message: string;
    retryInfoMs: number | undefined;
}
export declare function failureOf(error: unknown): Failure;
/** The delay of a google.rpc.RetryInfo detail, or undefined. */
export declare function retryInfoMs(error: ConnectError): number | undefined;
/** Whether Tally could not decide (the failure policy and the outbox apply). */
export declare function isRetryable(failure: Failure): boolean;
/** How long to wait before retrying, or undefined when it must not be retried. */
export declare function delayMs(retry: RetryOptions, failure: Failure, attempt: number): number | undefined;
