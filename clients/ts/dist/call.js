// The call inside a guard: what it reports, and the record built from it.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CostSource, RecordCostRequestSchema, } from "@tally/client/tally/budget/v1/budget_pb";
import { UsageNotReported } from "./errors.js";
import { StreamUsage, usageFrom } from "./usage.js";
/** Report what the call used, then leave the block. Leaving normally records
 * the report (settling the hold, or without it if it expired); an exception
 * before a report releases the hold and records nothing. A report made before
 * an exception is recorded all the same: that money was spent. */
export class GuardedCall {
    decision = "allowed";
    check;
    holdId = "";
    holdExpiresAt;
    estimateNanos;
    outcome;
    /** Tally's answer to the record (undefined if queued or nothing recorded). */
    recorded;
    #usage;
    #costNanos;
    #stream;
    #occurredAtMs;
    skipped = false;
    finished = false;
    project;
    requestId;
    model;
    agent;
    /** Set by Tally: what leaving the block does (settle, release). */
    finish;
    constructor(project, requestId, model, agent, estimateNanos, finish) {
        this.project = project;
        this.requestId = requestId;
        this.model = model;
        this.agent = agent;
        this.estimateNanos = estimateNanos;
        this.finish = finish;
    }
    accept(check) {
        this.check = check;
        this.holdId = check.holdId;
        this.estimateNanos = check.estimatedCostNanos;
        this.holdExpiresAt = check.holdExpiresAt ? timestampDate(check.holdExpiresAt) : undefined;
    }
    /** The provider's response or its usage (OpenAI or Anthropic style): its
     * tokens are recorded and, without costNanos, Tally prices them. */
    report(response, options = {}) {
        this.reportUsage(usageFrom(response), options);
    }
    reportUsage(usage, options = {}) {
        if (options.costNanos !== undefined && options.costNanos < 0n)
            throw new RangeError("costNanos must be >= 0");
        this.#usage = usage;
        this.#costNanos = options.costNanos;
        this.#occurredAtMs = Date.now();
    }
    /** The call's cost as you computed it, with its tokens as labels. */
    reportCost(costNanos, tokens = {}) {
        this.reportUsage({
            inputTokens: BigInt(tokens.inputTokens ?? 0),
            cachedInputTokens: BigInt(tokens.cachedInputTokens ?? 0),
            cacheWriteTokens: BigInt(tokens.cacheWriteTokens ?? 0),
            outputTokens: BigInt(tokens.outputTokens ?? 0),
            model: "",
        }, { costNanos });
    }
    /** One chunk/event of a streamed response; its final usage is recorded. */
    observe(chunk) {
        this.#stream ??= new StreamUsage();
        this.#stream.observe(chunk);
        if (this.#stream.usage !== undefined) {
            this.#usage = this.#stream.usage;
            this.#costNanos = undefined;
            this.#occurredAtMs = Date.now();
        }
    }
    /** No LLM call was made after all: release the hold, record nothing. */
    skip() {
        this.skipped = true;
    }
    get reported() {
        return this.#usage !== undefined;
    }
    /** `await using call = await tally.guard({...})`: leaving the scope settles
     * or releases (an exception in the scope cannot be seen here: an unreported
     * call is released without UsageNotReported; the callback form reports it). */
    async [Symbol.asyncDispose]() {
        await this.finish(this, { disposed: true });
    }
    missingUsage() {
        return new UsageNotReported(this.#stream !== undefined
            ? "the stream ended without its final usage (OpenAI: stream_options: { include_usage: true }); the hold was released, nothing recorded"
            : "the guarded call reported no usage or cost (call report(), reportCost(), observe() or skip()); the hold was released, nothing recorded");
    }
    recordRequest() {
        const usage = this.#usage;
        if (usage === undefined)
            throw this.missingUsage();
        const model = this.model || usage.model;
        const catalog = this.#costNanos === undefined;
        if (catalog && model === "")
            throw new UsageNotReported("usage without costNanos needs a model for Tally to price it (guard({ model }) or the response's model)");
        return create(RecordCostRequestSchema, {
            projectId: this.project,
            requestId: this.requestId,
            inputTokens: usage.inputTokens,
            cachedInputTokens: usage.cachedInputTokens,
            cacheWriteTokens: usage.cacheWriteTokens,
            outputTokens: usage.outputTokens,
            model,
            agentId: this.agent,
            holdId: this.holdId,
            costNanos: this.#costNanos ?? 0n,
            costSource: catalog ? CostSource.CATALOG : CostSource.REPORTED,
            // Part of the payload: a retry or a late flush is the same record, priced at its time.
            occurredAt: timestampFromMs(this.#occurredAtMs ?? Date.now()),
        });
    }
}
