// @tally/guard: one guarded block around each LLM call.
//
//   const tally = new Tally({ url: "http://127.0.0.1:8080", apiKey });
//   const answer = await tally.guard({ project: "my-project", estimateNanos: 2_000_000n }, async (call) => {
//     const response = await openai.chat.completions.create({ ... });
//     call.report(response); // OpenAI or Anthropic response, or reportCost(...)
//     return response;
//   });
//
// The guard reserves under a request id it generates and keeps, settles the
// hold with the reported usage, releases it on an exception, records without
// it if it expired; retries only what is safe (UNAVAILABLE, DEADLINE_EXCEEDED,
// RESOURCE_EXHAUSTED with a retry time) with the same request id, within
// bounds; applies the failure policy (fail_closed / fail_open with a bounded
// outbox).
export { GuardedCall, type Decision, type Outcome, type Tokens } from "./call.ts";
export { BudgetRefused, OutboxFull, OutboxNotEmpty, TallyError, TallyUnavailable, UsageNotReported } from "./errors.ts";
export { retryDefaults, type RetryOptions } from "./retry.ts";
export { Tally, type FailurePolicy, type GuardOptions, type Stats, type TallyOptions } from "./tally.ts";
export { StreamUsage, fromAnthropic, fromOpenAI, usageFrom, type Usage } from "./usage.ts";
