import { type CheckBudgetResponse, type RecordCostRequest, type RecordCostResponse } from "@tally/client/tally/budget/v1/budget_pb";
import { UsageNotReported } from "./errors.ts";
import { type Usage } from "./usage.ts";
/** "allowed": Tally reserved the estimate. "unchecked": fail_open, Tally could
 * not decide, the call runs without a hold. */
export type Decision = "allowed" | "unchecked";
/** After the block: "settled" (recorded with the hold), "recorded" (without
 * one: it expired, or the call was unchecked), "queued" (in the outbox, Tally
 * unreachable), "released" (nothing reported), "skipped". */
export type Outcome = "settled" | "recorded" | "queued" | "released" | "skipped";
export interface Tokens {
    inputTokens?: bigint | number;
    outputTokens?: bigint | number;
    cachedInputTokens?: bigint | number;
    cacheWriteTokens?: bigint | number;
}
/** Report what the call used, then leave the block. Leaving normally records
 * the report (settling the hold, or without it if it expired); an exception
 * before a report releases the hold and records nothing. A report made before
 * an exception is recorded all the same: that money was spent. */
export declare class GuardedCall implements AsyncDisposable {
    #private;
    decision: Decision;
    check: CheckBudgetResponse | undefined;
    holdId: string;
    holdExpiresAt: Date | undefined;
    estimateNanos: bigint;
    outcome: Outcome | undefined;
    /** Tally's answer to the record (undefined if queued or nothing recorded). */
    recorded: RecordCostResponse | undefined;
    skipped: boolean;
    finished: boolean;
    readonly project: string;
    readonly requestId: string;
    readonly model: string;
    readonly agent: string;
    /** Set by Tally: what leaving the block does (settle, release). */
    readonly finish: (call: GuardedCall, ending: {
        error?: unknown;
        disposed?: boolean;
    }) => Promise<void>;
    constructor(project: string, requestId: string, model: string, agent: string, estimateNanos: bigint, finish: (call: GuardedCall, ending: {
        error?: unknown;
        disposed?: boolean;
    }) => Promise<void>);
    accept(check: CheckBudgetResponse): void;
    /** The provider's response or its usage (OpenAI or Anthropic style): its
     * tokens are recorded and, without costNanos, Tally prices them. */
    report(response: unknown, options?: {
        costNanos?: bigint;
    }): void;
    reportUsage(usage: Usage, options?: {
        costNanos?: bigint;
    }): void;
    /** The call's cost as you computed it, with its tokens as labels. */
    reportCost(costNanos: bigint, tokens?: Tokens): void;
    /** One chunk/event of a streamed response; its final usage is recorded. */
    observe(chunk: unknown): void;
    /** No LLM call was made after all: release the hold, record nothing. */
    skip(): void;
    get reported(): boolean;
    /** `await using call = await tally.guard({...})`: leaving the scope settles
     * or releases (an exception in the scope cannot be seen here: an unreported
     * call is released without UsageNotReported; the callback form reports it). */
    [Symbol.asyncDispose](): Promise<void>;
    missingUsage(): UsageNotReported;
    recordRequest(): RecordCostRequest;
}
