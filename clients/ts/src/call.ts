// The call inside a guard: what it reports, and the record built from it.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  CostSource,
  RecordCostRequestSchema,
  type CheckBudgetResponse,
  type RecordCostRequest,
  type RecordCostResponse,
} from "@tally/client/tally/budget/v1/budget_pb";
import { UsageNotReported } from "./errors.ts";
import { StreamUsage, usageFrom, type Usage } from "./usage.ts";

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
export class GuardedCall implements AsyncDisposable {
  decision: Decision = "allowed";
  check: CheckBudgetResponse | undefined;
  holdId = "";
  holdExpiresAt: Date | undefined;
  estimateNanos: bigint;
  outcome: Outcome | undefined;
  /** Tally's answer to the record (undefined if queued or nothing recorded). */
  recorded: RecordCostResponse | undefined;
  #usage: Usage | undefined;
  #costNanos: bigint | undefined;
  #stream: StreamUsage | undefined;
  #occurredAtMs: number | undefined;
  skipped = false;
  finished = false;

  readonly project: string;
  readonly requestId: string;
  readonly model: string;
  readonly agent: string;
  /** Set by Tally: what leaving the block does (settle, release). */
  readonly finish: (call: GuardedCall, ending: { error?: unknown; disposed?: boolean }) => Promise<void>;

  constructor(
    project: string,
    requestId: string,
    model: string,
    agent: string,
    estimateNanos: bigint,
    finish: (call: GuardedCall, ending: { error?: unknown; disposed?: boolean }) => Promise<void>,
  ) {
    this.project = project;
    this.requestId = requestId;
    this.model = model;
    this.agent = agent;
    this.estimateNanos = estimateNanos;
    this.finish = finish;
  }

  accept(check: CheckBudgetResponse): void {
    this.check = check;
    this.holdId = check.holdId;
    this.estimateNanos = check.estimatedCostNanos;
    this.holdExpiresAt = check.holdExpiresAt ? timestampDate(check.holdExpiresAt) : undefined;
  }

  /** The provider's response or its usage (OpenAI or Anthropic style): its
   * tokens are recorded and, without costNanos, Tally prices them. */
  report(response: unknown, options: { costNanos?: bigint } = {}): void {
    this.reportUsage(usageFrom(response), options);
  }

  reportUsage(usage: Usage, options: { costNanos?: bigint } = {}): void {
    if (options.costNanos !== undefined && options.costNanos < 0n) throw new RangeError("costNanos must be >= 0");
    this.#usage = usage;
    this.#costNanos = options.costNanos;
    this.#occurredAtMs = Date.now();
  }

  /** The call's cost as you computed it, with its tokens as labels. */
  reportCost(costNanos: bigint, tokens: Tokens = {}): void {
    this.reportUsage(
      {
        inputTokens: BigInt(tokens.inputTokens ?? 0),
        cachedInputTokens: BigInt(tokens.cachedInputTokens ?? 0),
        cacheWriteTokens: BigInt(tokens.cacheWriteTokens ?? 0),
        outputTokens: BigInt(tokens.outputTokens ?? 0),
        model: "",
      },
      { costNanos },
    );
  }

  /** One chunk/event of a streamed response; its final usage is recorded. */
  observe(chunk: unknown): void {
    this.#stream ??= new StreamUsage();
    this.#stream.observe(chunk);
    if (this.#stream.usage !== undefined) {
      this.#usage = this.#stream.usage;
      this.#costNanos = undefined;
      this.#occurredAtMs = Date.now();
    }
  }

  /** No LLM call was made after all: release the hold, record nothing. */
  skip(): void {
    this.skipped = true;
  }

  get reported(): boolean {
    return this.#usage !== undefined;
  }

  /** `await using call = await tally.guard({...})`: leaving the scope settles
   * or releases (an exception in the scope cannot be seen here: an unreported
   * call is released without UsageNotReported; the callback form reports it). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.finish(this, { disposed: true });
  }

  missingUsage(): UsageNotReported {
    return new UsageNotReported(
      this.#stream !== undefined
        ? "the stream ended without its final usage (OpenAI: stream_options: { include_usage: true }); the hold was released, nothing recorded"
        : "the guarded call reported no usage or cost (call report(), reportCost(), observe() or skip()); the hold was released, nothing recorded",
    );
  }

  recordRequest(): RecordCostRequest {
    const usage = this.#usage;
    if (usage === undefined) throw this.missingUsage();
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
