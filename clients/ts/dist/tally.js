// The Tally client with guarded calls: `await tally.guard({...}, async (call) => ...)`
// or `await using call = await tally.guard({...})`.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BudgetDecisionReason, BudgetService, CheckBudgetRequestSchema, ReleaseHoldRequestSchema, } from "@tally/client/tally/budget/v1/budget_pb";
import { GuardedCall } from "./call.js";
import { BudgetRefused, OutboxFull, OutboxNotEmpty, TallyError, TallyUnavailable } from "./errors.js";
import { backoffMs, delayMs, failureOf, isRetryable, retryOptions } from "./retry.js";
/** Codes a WatchBudget stream ends with that a reconnect cures. */
const watchReconnectCodes = new Set(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "ABORTED"]);
export class Tally {
    /** The generated client on this transport, for every other RPC. */
    client;
    failurePolicy;
    retry;
    failOpenAfterMs;
    flushIntervalMs;
    agent;
    ttlMs;
    onOutboxError;
    #outboxMax;
    #outbox = [];
    outboxFailed = [];
    #stats = {
        reserves: 0,
        reReserves: 0,
        refused: 0,
        unchecked: 0,
        retries: 0,
        settled: 0,
        recordedWithoutHold: 0,
        duplicates: 0,
        released: 0,
        releaseFailures: 0,
        queued: 0,
        flushed: 0,
        outboxFailed: 0,
        watchReconnects: 0,
    };
    #timer;
    #flushing;
    #closed = false;
    constructor(options = {}) {
        const policy = options.failurePolicy ?? "fail_closed";
        if (policy !== "fail_closed" && policy !== "fail_open")
            throw new RangeError(`failurePolicy must be "fail_closed" or "fail_open", got ${String(policy)}`);
        this.failurePolicy = policy;
        this.retry = retryOptions(options.retry);
        this.failOpenAfterMs = options.failOpenAfterMs ?? 1_000;
        this.flushIntervalMs = options.flushIntervalMs ?? 500;
        this.agent = options.agent ?? "";
        this.ttlMs = options.ttlMs ?? 300_000;
        this.onOutboxError = options.onOutboxError;
        this.#outboxMax = options.outboxMax ?? 1_000;
        if (!(this.#outboxMax >= 1))
            throw new RangeError("outboxMax must be >= 1");
        let transport = options.transport;
        if (transport === undefined) {
            const url = options.url ?? "http://127.0.0.1:8080";
            if (!/^https?:\/\//.test(url))
                throw new RangeError(`url must start with http:// or https://, got ${url}`);
            const key = options.apiKey;
            const interceptors = key
                ? [
                    (next) => (req) => {
                        req.header.set("authorization", `Bearer ${key}`);
                        return next(req);
                    },
                ]
                : [];
            transport = createGrpcTransport({
                baseUrl: url,
                interceptors,
                ...(options.ca !== undefined ? { nodeOptions: { ca: options.ca } } : {}),
            });
        }
        this.client = createClient(BudgetService, transport);
    }
    async guard(options, body) {
        const call = await this.#reserve(options);
        if (body === undefined)
            return call;
        let result;
        try {
            result = await body(call);
        }
        catch (error) {
            await this.#finish(call, { error });
            throw error;
        }
        await this.#finish(call, {});
        return result;
    }
    /** WatchBudget's events for `project`, reconnecting with backoff when the
     * stream breaks (each connection starts with a SNAPSHOT). Errors a reconnect
     * cannot cure throw TallyError. Ends when `signal` aborts or you break out. */
    async *watch(project, options = {}) {
        const { signal } = options;
        let attempt = 0;
        for (;;) {
            try {
                for await (const response of this.client.watchBudget({ projectId: project }, signal ? { signal } : {})) {
                    attempt = 0;
                    if (response.event)
                        yield response.event;
                }
            }
            catch (error) {
                if (signal?.aborted)
                    return; // ours: the caller stopped watching
                const failure = failureOf(error);
                if (!watchReconnectCodes.has(failure.code))
                    throw new TallyError(`WatchBudget: ${failure.code}: ${failure.message}`, { code: failure.code, cause: error });
            }
            if (signal?.aborted)
                return;
            this.#stats.watchReconnects++;
            try {
                await sleep(backoffMs(this.retry, attempt++), undefined, signal ? { signal } : {});
            }
            catch {
                return; // aborted while waiting
            }
        }
    }
    /** Delivers the outbox (same request ids) until empty or timeoutMs passed;
     * resolves to how many records are still queued. */
    async flush(options = {}) {
        const deadline = Date.now() + (options.timeoutMs ?? 30_000);
        while (this.#outbox.length > 0) {
            await this.#flushRound();
            const left = deadline - Date.now();
            if (this.#outbox.length === 0 || left <= 0)
                break;
            await sleep(Math.min(this.flushIntervalMs, left));
        }
        return this.#outbox.length;
    }
    get outboxSize() {
        return this.#outbox.length;
    }
    get stats() {
        return { ...this.#stats };
    }
    /** Flushes the outbox (at most timeoutMs) and stops the flusher; records
     * still queued throw OutboxNotEmpty carrying them. */
    async close(options = {}) {
        const left = await this.flush(options);
        this.#closed = true;
        clearInterval(this.#timer);
        this.#timer = undefined;
        await this.#flushing;
        if (left > 0)
            throw new OutboxNotEmpty(`${left} records could not be delivered to Tally before close`, this.#outbox.splice(0));
    }
    async [Symbol.asyncDispose]() {
        await this.close();
    }
    // --- internals --------------------------------------------------------------
    #waitMs() {
        return this.failurePolicy === "fail_open" ? Math.min(this.retry.totalMs, this.failOpenAfterMs) : this.retry.totalMs;
    }
    /** Sends one request, retrying what is safe to retry (the same request,
     * same request id) within waitMs and the attempt bound. */
    async #send(method, request, waitMs, attemptsMax = this.retry.attemptsMax) {
        const started = Date.now();
        const unary = this.client[method].bind(this.client);
        for (let attempt = 0;;) {
            const left = waitMs - (Date.now() - started);
            try {
                return (await unary(request, { timeoutMs: Math.max(100, Math.min(this.retry.callTimeoutMs, left)) }));
            }
            catch (error) {
                const failure = failureOf(error);
                const delay = delayMs(this.retry, failure, attempt);
                attempt++;
                if (delay === undefined || attempt >= attemptsMax || Date.now() - started + delay >= waitMs)
                    throw failed(method, failure, attempt, error);
                this.#stats.retries++;
                await sleep(delay);
            }
        }
    }
    async #reserve(options) {
        const { project } = options;
        if (!project)
            throw new RangeError("project is required");
        const model = options.model ?? "";
        if ((options.estimateNanos === undefined) === (model === ""))
            throw new RangeError("give either estimateNanos, or model with inputTokens and maxOutputTokens");
        if (options.estimateNanos !== undefined && options.estimateNanos < 0n)
            throw new RangeError("estimateNanos must be >= 0");
        const ttlMs = options.ttlMs ?? this.ttlMs;
        if (!(ttlMs >= 1_000))
            throw new RangeError(`ttlMs must be at least 1000 (Tally's minimum), got ${ttlMs}`);
        const requestId = options.requestId ?? `g-${randomUUID().replaceAll("-", "")}`;
        const call = new GuardedCall(project, requestId, model, options.agent ?? this.agent, options.estimateNanos ?? 0n, (c, ending) => this.#finish(c, ending));
        let key = requestId;
        for (let round = 1;; round++) {
            const request = create(CheckBudgetRequestSchema, {
                projectId: project,
                reserve: true,
                requestId: key,
                // The agent goes with the reservation too: its cap in the project counts the hold.
                agentId: call.agent,
                holdTtl: durationFromMs(ttlMs),
                ...(model !== ""
                    ? { model, inputTokens: BigInt(options.inputTokens ?? 0), maxOutputTokens: BigInt(options.maxOutputTokens ?? 0) }
                    : { estimatedCostNanos: options.estimateNanos ?? 0n }),
            });
            let check;
            try {
                check = await this.#send("checkBudget", request, this.#waitMs());
            }
            catch (error) {
                if (error instanceof TallyError && error.code === "FAILED_PRECONDITION" && error.attempts > 1 && round < 3) {
                    // An earlier attempt placed the hold but its answer was lost, and the
                    // hold ended before the retry: that key is spent (and holds nothing).
                    this.#stats.reReserves++;
                    key = `${requestId}.r${round + 1}`;
                    continue;
                }
                if (error instanceof TallyError && error.retryable && this.failurePolicy === "fail_open") {
                    call.decision = "unchecked";
                    this.#stats.unchecked++;
                    return call;
                }
                throw error;
            }
            this.#stats.reserves++;
            if (!check.allowed) {
                this.#stats.refused++;
                throw new BudgetRefused(`budget refused ${project}: ${BudgetDecisionReason[check.reason]}, ${check.decidedByRemainingNanos} nanos remaining`, check);
            }
            call.accept(check);
            return call;
        }
    }
    async #finish(call, ending) {
        if (call.finished)
            return;
        call.finished = true;
        if (!call.reported) {
            if (call.holdId !== "")
                await this.#release(call);
            call.outcome = call.skipped ? "skipped" : "released";
            if (!("error" in ending) && !ending.disposed && !call.skipped)
                throw call.missingUsage();
            return;
        }
        await this.#record(call, call.recordRequest());
    }
    async #record(call, record) {
        for (;;) {
            let response;
            try {
                response = await this.#send("recordCost", record, this.#waitMs());
            }
            catch (error) {
                if (error instanceof TallyError && error.code === "FAILED_PRECONDITION" && record.holdId !== "") {
                    // The hold expired (or was released) before the record: the cost is
                    // real all the same, so record it without the hold.
                    record.holdId = "";
                    continue;
                }
                if (error instanceof TallyError && error.retryable) {
                    this.#enqueue(record);
                    this.#stats.queued++;
                    call.outcome = "queued";
                    return;
                }
                if (call.holdId !== "")
                    await this.#release(call); // e.g. no price for the model: give the estimate back now
                throw error;
            }
            if (response.duplicate)
                this.#stats.duplicates++;
            call.recorded = response;
            call.outcome = record.holdId !== "" ? "settled" : "recorded";
            if (record.holdId !== "")
                this.#stats.settled++;
            else
                this.#stats.recordedWithoutHold++;
            return;
        }
    }
    async #release(call) {
        try {
            await this.#send("releaseHold", create(ReleaseHoldRequestSchema, { projectId: call.project, holdId: call.holdId }), this.#waitMs());
            this.#stats.released++;
        }
        catch (error) {
            if (error instanceof TallyError && error.code === "NOT_FOUND")
                this.#stats.released++; // already gone: nothing holds budget
            else
                this.#stats.releaseFailures++; // it expires at its TTL
        }
    }
    #enqueue(record) {
        if (this.#outbox.length >= this.#outboxMax) {
            throw new OutboxFull(`Tally is unreachable and the outbox holds ${this.#outboxMax} records (outboxMax); record ${record.requestId} was not queued`, record);
        }
        this.#outbox.push(record);
        if (this.#timer === undefined && !this.#closed) {
            // Unref'd: the flusher never keeps a process alive; close() flushes.
            this.#timer = setInterval(() => void this.#flushRound().catch(() => { }), this.flushIntervalMs).unref();
        }
    }
    #flushRound() {
        this.#flushing ??= (async () => {
            try {
                for (let record = this.#outbox[0]; record !== undefined; record = this.#outbox[0]) {
                    let response;
                    try {
                        response = await this.#deliver(record);
                    }
                    catch (error) {
                        const tallyError = error instanceof TallyError ? error : new TallyError(String(error), { cause: error });
                        if (tallyError.retryable)
                            return;
                        this.#outbox.shift();
                        this.outboxFailed.push({ record, error: tallyError });
                        this.#stats.outboxFailed++;
                        this.onOutboxError?.(record, tallyError);
                        continue;
                    }
                    this.#outbox.shift();
                    this.#stats.flushed++;
                    if (response.duplicate)
                        this.#stats.duplicates++;
                }
                clearInterval(this.#timer);
                this.#timer = undefined;
            }
            finally {
                this.#flushing = undefined;
            }
        })();
        return this.#flushing;
    }
    /** One attempt at a queued record (the flush rounds are the retries). */
    async #deliver(record) {
        for (;;) {
            try {
                return await this.#send("recordCost", record, this.retry.callTimeoutMs, 1);
            }
            catch (error) {
                if (error instanceof TallyError && error.code === "FAILED_PRECONDITION" && record.holdId !== "") {
                    record.holdId = "";
                    continue;
                }
                throw error;
            }
        }
    }
}
function failed(method, failure, attempts, cause) {
    const retryable = isRetryable(failure);
    const message = `${method}: ${failure.code}: ${failure.message} (after ${attempts} attempt${attempts === 1 ? "" : "s"})`;
    return retryable
        ? new TallyUnavailable(message, { code: failure.code, attempts, retryable, cause })
        : new TallyError(message, { code: failure.code, attempts, retryable, cause });
}
