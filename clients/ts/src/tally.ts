// The Tally client with guarded calls: `await tally.guard({...}, async (call) => ...)`
// or `await using call = await tally.guard({...})`.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type CallOptions, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BudgetDecisionReason,
  BudgetService,
  CheckBudgetRequestSchema,
  ReleaseHoldRequestSchema,
  type BudgetEvent,
  type CheckBudgetResponse,
  type RecordCostRequest,
  type RecordCostResponse,
} from "@tally/client/tally/budget/v1/budget_pb";
import { GuardedCall } from "./call.ts";
import { BudgetRefused, OutboxFull, OutboxNotEmpty, TallyError, TallyUnavailable } from "./errors.ts";
import { backoffMs, delayMs, failureOf, isRetryable, retryOptions, type Failure, type RetryOptions } from "./retry.ts";

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

/** Codes a WatchBudget stream ends with that a reconnect cures. */
const watchReconnectCodes = new Set(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "ABORTED"]);

type Unary = (request: unknown, options: CallOptions) => Promise<unknown>;

export class Tally implements AsyncDisposable {
  /** The generated client on this transport, for every other RPC. */
  readonly client: Client<typeof BudgetService>;
  readonly failurePolicy: FailurePolicy;
  readonly retry: RetryOptions;
  readonly failOpenAfterMs: number;
  readonly flushIntervalMs: number;
  readonly agent: string;
  readonly ttlMs: number;
  readonly onOutboxError: ((record: RecordCostRequest, error: TallyError) => void) | undefined;
  readonly #outboxMax: number;
  readonly #outbox: RecordCostRequest[] = [];
  readonly outboxFailed: Array<{ record: RecordCostRequest; error: TallyError }> = [];
  readonly #stats: Stats = {
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
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #closed = false;

  constructor(options: TallyOptions = {}) {
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
    if (!(this.#outboxMax >= 1)) throw new RangeError("outboxMax must be >= 1");
    let transport = options.transport;
    if (transport === undefined) {
      const url = options.url ?? "http://127.0.0.1:8080";
      if (!/^https?:\/\//.test(url)) throw new RangeError(`url must start with http:// or https://, got ${url}`);
      const key = options.apiKey;
      const interceptors: Interceptor[] = key
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

  /** Reserve estimateNanos (or the catalog's worst case of model for
   * inputTokens + maxOutputTokens) under a request id generated here and kept
   * for every retry, then run `body`; settles, releases or records as the
   * body ends. Without `body`: the call, for `await using`. */
  guard(options: GuardOptions): Promise<GuardedCall>;
  guard<T>(options: GuardOptions, body: (call: GuardedCall) => Promise<T> | T): Promise<T>;
  async guard<T>(options: GuardOptions, body?: (call: GuardedCall) => Promise<T> | T): Promise<T | GuardedCall> {
    const call = await this.#reserve(options);
    if (body === undefined) return call;
    let result: T;
    try {
      result = await body(call);
    } catch (error) {
      await this.#finish(call, { error });
      throw error;
    }
    await this.#finish(call, {});
    return result;
  }

  /** WatchBudget's events for `project`, reconnecting with backoff when the
   * stream breaks (each connection starts with a SNAPSHOT). Errors a reconnect
   * cannot cure throw TallyError. Ends when `signal` aborts or you break out. */
  async *watch(project: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<BudgetEvent, void, undefined> {
    const { signal } = options;
    let attempt = 0;
    for (;;) {
      try {
        for await (const response of this.client.watchBudget({ projectId: project }, signal ? { signal } : {})) {
          attempt = 0;
          if (response.event) yield response.event;
        }
      } catch (error) {
        if (signal?.aborted) return; // ours: the caller stopped watching
        const failure = failureOf(error);
        if (!watchReconnectCodes.has(failure.code))
          throw new TallyError(`WatchBudget: ${failure.code}: ${failure.message}`, { code: failure.code, cause: error });
      }
      if (signal?.aborted) return;
      this.#stats.watchReconnects++;
      try {
        await sleep(backoffMs(this.retry, attempt++), undefined, signal ? { signal } : {});
      } catch {
        return; // aborted while waiting
      }
    }
  }

  /** Delivers the outbox (same request ids) until empty or timeoutMs passed;
   * resolves to how many records are still queued. */
  async flush(options: { timeoutMs?: number } = {}): Promise<number> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    while (this.#outbox.length > 0) {
      await this.#flushRound();
      const left = deadline - Date.now();
      if (this.#outbox.length === 0 || left <= 0) break;
      await sleep(Math.min(this.flushIntervalMs, left));
    }
    return this.#outbox.length;
  }

  get outboxSize(): number {
    return this.#outbox.length;
  }

  get stats(): Stats {
    return { ...this.#stats };
  }

  /** Flushes the outbox (at most timeoutMs) and stops the flusher; records
   * still queued throw OutboxNotEmpty carrying them. */
  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    const left = await this.flush(options);
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#flushing;
    if (left > 0) throw new OutboxNotEmpty(`${left} records could not be delivered to Tally before close`, this.#outbox.splice(0));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- internals --------------------------------------------------------------

  #waitMs(): number {
    return this.failurePolicy === "fail_open" ? Math.min(this.retry.totalMs, this.failOpenAfterMs) : this.retry.totalMs;
  }

  /** Sends one request, retrying what is safe to retry (the same request,
   * same request id) within waitMs and the attempt bound. */
  async #send<R>(
    method: "checkBudget" | "recordCost" | "releaseHold",
    request: unknown,
    waitMs: number,
    attemptsMax = this.retry.attemptsMax,
  ): Promise<R> {
    const started = Date.now();
    const unary = (this.client[method] as Unary).bind(this.client);
    for (let attempt = 0; ; ) {
      const left = waitMs - (Date.now() - started);
      try {
        return (await unary(request, { timeoutMs: Math.max(100, Math.min(this.retry.callTimeoutMs, left)) })) as R;
      } catch (error) {
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

  async #reserve(options: GuardOptions): Promise<GuardedCall> {
    const { project } = options;
    if (!project) throw new RangeError("project is required");
    const model = options.model ?? "";
    if ((options.estimateNanos === undefined) === (model === ""))
      throw new RangeError("give either estimateNanos, or model with inputTokens and maxOutputTokens");
    if (options.estimateNanos !== undefined && options.estimateNanos < 0n) throw new RangeError("estimateNanos must be >= 0");
    const ttlMs = options.ttlMs ?? this.ttlMs;
    if (!(ttlMs >= 1_000)) throw new RangeError(`ttlMs must be at least 1000 (Tally's minimum), got ${ttlMs}`);
    const requestId = options.requestId ?? `g-${randomUUID().replaceAll("-", "")}`;
    const call = new GuardedCall(project, requestId, model, options.agent ?? this.agent, options.estimateNanos ?? 0n, (c, ending) =>
      this.#finish(c, ending),
    );
    let key = requestId;
    for (let round = 1; ; round++) {
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
      let check: CheckBudgetResponse;
      try {
        check = await this.#send<CheckBudgetResponse>("checkBudget", request, this.#waitMs());
      } catch (error) {
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
        throw new BudgetRefused(
          `budget refused ${project}: ${BudgetDecisionReason[check.reason]}, ${check.decidedByRemainingNanos} nanos remaining`,
          check,
        );
      }
      call.accept(check);
      return call;
    }
  }

  async #finish(call: GuardedCall, ending: { error?: unknown; disposed?: boolean }): Promise<void> {
    if (call.finished) return;
    call.finished = true;
    if (!call.reported) {
      if (call.holdId !== "") await this.#release(call);
      call.outcome = call.skipped ? "skipped" : "released";
      if (!("error" in ending) && !ending.disposed && !call.skipped) throw call.missingUsage();
      return;
    }
    await this.#record(call, call.recordRequest());
  }

  async #record(call: GuardedCall, record: RecordCostRequest): Promise<void> {
    for (;;) {
      let response: RecordCostResponse;
      try {
        response = await this.#send<RecordCostResponse>("recordCost", record, this.#waitMs());
      } catch (error) {
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
        if (call.holdId !== "") await this.#release(call); // e.g. no price for the model: give the estimate back now
        throw error;
      }
      if (response.duplicate) this.#stats.duplicates++;
      call.recorded = response;
      call.outcome = record.holdId !== "" ? "settled" : "recorded";
      if (record.holdId !== "") this.#stats.settled++;
      else this.#stats.recordedWithoutHold++;
      return;
    }
  }

  async #release(call: GuardedCall): Promise<void> {
    try {
      await this.#send("releaseHold", create(ReleaseHoldRequestSchema, { projectId: call.project, holdId: call.holdId }), this.#waitMs());
      this.#stats.released++;
    } catch (error) {
      if (error instanceof TallyError && error.code === "NOT_FOUND")
        this.#stats.released++; // already gone: nothing holds budget
      else this.#stats.releaseFailures++; // it expires at its TTL
    }
  }

  #enqueue(record: RecordCostRequest): void {
    if (this.#outbox.length >= this.#outboxMax) {
      throw new OutboxFull(
        `Tally is unreachable and the outbox holds ${this.#outboxMax} records (outboxMax); record ${record.requestId} was not queued`,
        record,
      );
    }
    this.#outbox.push(record);
    if (this.#timer === undefined && !this.#closed) {
      // Unref'd: the flusher never keeps a process alive; close() flushes.
      this.#timer = setInterval(() => void this.#flushRound().catch(() => {}), this.flushIntervalMs).unref();
    }
  }

  #flushRound(): Promise<void> {
    this.#flushing ??= (async () => {
      try {
        for (let record = this.#outbox[0]; record !== undefined; record = this.#outbox[0]) {
          let response: RecordCostResponse;
          try {
            response = await this.#deliver(record);
          } catch (error) {
            const tallyError = error instanceof TallyError ? error : new TallyError(String(error), { cause: error });
            if (tallyError.retryable) return;
            this.#outbox.shift();
            this.outboxFailed.push({ record, error: tallyError });
            this.#stats.outboxFailed++;
            this.onOutboxError?.(record, tallyError);
            continue;
          }
          this.#outbox.shift();
          this.#stats.flushed++;
          if (response.duplicate) this.#stats.duplicates++;
        }
        clearInterval(this.#timer);
        this.#timer = undefined;
      } finally {
        this.#flushing = undefined;
      }
    })();
    return this.#flushing;
  }

  /** One attempt at a queued record (the flush rounds are the retries). */
  async #deliver(record: RecordCostRequest): Promise<RecordCostResponse> {
    for (;;) {
      try {
        return await this.#send<RecordCostResponse>("recordCost", record, this.retry.callTimeoutMs, 1);
      } catch (error) {
        if (error instanceof TallyError && error.code === "FAILED_PRECONDITION" && record.holdId !== "") {
          record.holdId = "";
          continue;
        }
        throw error;
      }
    }
  }
}

function failed(method: string, failure: Failure, attempts: number, cause: unknown): TallyError {
  const retryable = isRetryable(failure);
  const message = `${method}: ${failure.code}: ${failure.message} (after ${attempts} attempt${attempts === 1 ? "" : "s"})`;
  return retryable
    ? new TallyUnavailable(message, { code: failure.code, attempts, retryable, cause })
    : new TallyError(message, { code: failure.code, attempts, retryable, cause });
}
