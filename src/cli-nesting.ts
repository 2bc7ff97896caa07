// `tally budget set`'s nested-budget options (parent, agent caps, the spend
// rate guard) and how `budget get` shows them. Amounts are in units of the
// project's currency, like every other amount of the CLI; rates are per
// rolling minute.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentLimit, AgentLimitSchema, ProjectBudget } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { amount, parseAmount, UsageError } from "./cli-shared.ts";

export interface NestingOptions {
  parent?: string | undefined;
  "agent-limit"?: string | undefined;
  "agent-daily"?: string | undefined;
  "agent-monthly"?: string | undefined;
  "agent-rate"?: string | undefined;
  "agent-override"?: string[] | undefined;
  rate?: string | undefined;
}

/** parseArgs option specs. */
export const nestingOptions = {
  parent: { type: "string" },
  "agent-limit": { type: "string" },
  "agent-daily": { type: "string" },
  "agent-monthly": { type: "string" },
  "agent-rate": { type: "string" },
  "agent-override": { type: "string", multiple: true },
  rate: { type: "string" },
} as const;

/** Every one of them is budget set's. */
export const nestingOwners: Record<keyof NestingOptions, string> = {
  parent: "budget set",
  "agent-limit": "budget set",
  "agent-daily": "budget set",
  "agent-monthly": "budget set",
  "agent-rate": "budget set",
  "agent-override": "budget set",
  rate: "budget set",
};

export const nestingUsage = `             [--parent ID|none]        the parent project (an org or team: its limits count
                                       this project's spend too); none: no parent
             [--agent-limit AMOUNT]    cap each agent_id's spend in this project (lifetime,
             [--agent-daily AMOUNT]    per day, per month, per rolling minute; 0 removes)
             [--agent-monthly AMOUNT]
             [--agent-rate AMOUNT]
             [--agent-override AGENT=LIMIT[,DAILY[,MONTHLY[,RATE]]]]
                                       one agent's own caps instead (repeat the option;
                                       they replace all overrides; "none" removes them)
             [--rate AMOUNT]           runaway guard: the most this project (with its
                                       children) may record plus reserve per rolling minute`;

/** "looper=5,1,0,0.5" -> the agent's caps (missing ones are 0: no cap). */
export function parseAgentOverride(text: string): MessageInitShape<typeof AgentLimitSchema> {
  const match = /^([A-Za-z0-9._:/-]+)=([^=]+)$/.exec(text);
  const parts = match?.[2]?.split(",") ?? [];
  if (match === null || parts.length > 4) {
    throw new UsageError(
      `--agent-override ${JSON.stringify(text)} must be AGENT=LIMIT[,DAILY[,MONTHLY[,RATE]]] in units of the currency (e.g. looper=5,1 for 5 lifetime and 1 per day; 0 = no cap)`,
    );
  }
  const [limit, daily, monthly, rate] = parts.map((part, i) =>
    parseAmount(part.trim(), `--agent-override ${match[1]} ${["limit", "daily", "monthly", "rate"][i]}`),
  );
  return {
    agentId: match[1]!,
    limitNanos: limit ?? 0n,
    dailyLimitNanos: daily ?? 0n,
    monthlyLimitNanos: monthly ?? 0n,
    rateLimitNanosPerMinute: rate ?? 0n,
  };
}

/** SetProjectBudgetRequest's nesting fields (unset: keep). */
export interface NestingFields {
  parentId: string | undefined;
  agentLimitNanos: bigint | undefined;
  agentDailyLimitNanos: bigint | undefined;
  agentMonthlyLimitNanos: bigint | undefined;
  agentRateLimitNanosPerMinute: bigint | undefined;
  agentLimitOverrides: { agentLimits: MessageInitShape<typeof AgentLimitSchema>[] } | undefined;
  rateLimitNanosPerMinute: bigint | undefined;
}

/** The request fields for the options given; the others stay unset (keep). */
export function nestingRequestFields(options: NestingOptions): NestingFields {
  const optional = (value: string | undefined, flag: string) => (value === undefined ? undefined : parseAmount(value, flag));
  const overrides = options["agent-override"];
  if (overrides?.includes("none") && overrides.length > 1)
    throw new UsageError(`--agent-override none removes every override; it cannot be combined with others`);
  return {
    parentId: options.parent === undefined ? undefined : options.parent === "none" ? "" : options.parent,
    agentLimitNanos: optional(options["agent-limit"], "--agent-limit"),
    agentDailyLimitNanos: optional(options["agent-daily"], "--agent-daily"),
    agentMonthlyLimitNanos: optional(options["agent-monthly"], "--agent-monthly"),
    agentRateLimitNanosPerMinute: optional(options["agent-rate"], "--agent-rate"),
    agentLimitOverrides:
      overrides === undefined ? undefined : { agentLimits: overrides[0] === "none" ? [] : overrides.map(parseAgentOverride) },
    rateLimitNanosPerMinute: optional(options.rate, "--rate"),
  };
}

function capsText(
  caps: Pick<AgentLimit, "limitNanos" | "dailyLimitNanos" | "monthlyLimitNanos" | "rateLimitNanosPerMinute">,
  currency: string,
): string {
  const parts: string[] = [];
  if (caps.limitNanos > 0n) parts.push(`${amount(caps.limitNanos, currency)} lifetime`);
  if (caps.dailyLimitNanos > 0n) parts.push(`${amount(caps.dailyLimitNanos, currency)}/day`);
  if (caps.monthlyLimitNanos > 0n) parts.push(`${amount(caps.monthlyLimitNanos, currency)}/month`);
  if (caps.rateLimitNanosPerMinute > 0n) parts.push(`${amount(caps.rateLimitNanosPerMinute, currency)}/min`);
  return parts.length === 0 ? "no cap" : parts.join(", ");
}

/** `budget get` rows for what is set: parent, agent caps, overrides, rate. */
export function nestingRows(b: ProjectBudget | undefined): Array<[string, string]> {
  if (b === undefined) return [];
  const rows: Array<[string, string]> = [];
  if (b.parentId !== "") rows.push(["parent", b.parentId]);
  const defaults = {
    limitNanos: b.agentLimitNanos,
    dailyLimitNanos: b.agentDailyLimitNanos,
    monthlyLimitNanos: b.agentMonthlyLimitNanos,
    rateLimitNanosPerMinute: b.agentRateLimitNanosPerMinute,
  };
  if (capsText(defaults, b.currency) !== "no cap") rows.push(["each agent", capsText(defaults, b.currency)]);
  for (const entry of b.agentLimitOverrides) rows.push([`agent ${entry.agentId}`, capsText(entry, b.currency)]);
  if (b.rateLimitNanosPerMinute > 0n) rows.push(["rate limit", `${amount(b.rateLimitNanosPerMinute, b.currency)}/min`]);
  return rows;
}
