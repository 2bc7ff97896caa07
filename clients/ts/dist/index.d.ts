export { GuardedCall, type Decision, type Outcome, type Tokens } from "./call.ts";
export { BudgetRefused, OutboxFull, OutboxNotEmpty, TallyError, TallyUnavailable, UsageNotReported } from "./errors.ts";
export { retryDefaults, type RetryOptions } from "./retry.ts";
export { Tally, type FailurePolicy, type GuardOptions, type Stats, type TallyOptions } from "./tally.ts";
export { StreamUsage, fromAnthropic, fromOpenAI, usageFrom, type Usage } from "./usage.ts";
