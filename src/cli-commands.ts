// The client side of the `tally` command: operators' commands that talk to a
// running Tally through the generated Connect client (never to the database),
// so they work against any deployment the same way agents do.
//
//   tally budget get <project>
//   tally budget set <project> <amount> [--currency EUR] [--daily AMOUNT]
//                    [--monthly AMOUNT] [--time-zone TZ] [--alerts BPS,...]
//                    [--parent ID|none] [--agent-limit|--agent-daily|--agent-monthly|
//                    --agent-rate AMOUNT] [--agent-override AGENT=LIMIT,...] [--rate AMOUNT]
//   tally cost <project>
//   tally projects [--order spent|id] [--limit N] [--archived]
//   tally projects archive|unarchive <project>
//   tally projects delete <project> --no-records-since TIME|AGE
//   tally prices set <model> --input P --cached-input P --cache-write P --output P
//                --effective-from T --source S [--project P] [--currency XXX]
//   tally prices list [--model M] [--project P]
//   tally prices import <file.json>
//
// Every command takes --url (default $TALLY_URL or http://127.0.0.1:8080),
// --key (default $TALLY_API_KEY; sent as "Authorization: Bearer <key>") and
// --json (one JSON document on stdout, the API's own JSON encoding: amounts are
// int64 nanos as strings). Exit codes: 0 ok, 1 the call failed, 2 bad usage.
import { parseArgs } from "node:util";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  BudgetService,
  GetProjectBudgetResponseSchema,
  GetProjectCostResponseSchema,
  SetProjectBudgetResponseSchema,
  type ProjectBudget,
} from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { amount, limitText, parseAmount, percentText, printJson, table, UsageError, when, type Io } from "./cli-shared.ts";
import { nestingOptions, nestingOwners, nestingRequestFields, nestingRows, nestingUsage, type NestingOptions } from "./cli-nesting.ts";

export { parseAmount };
import { projects } from "./cli-projects.ts";
import { prices, pricesUsage } from "./cli-prices.ts";
import { apiKeyLengthMax, timeZoneDefault } from "./limits.ts";

export const clientCommands = ["budget", "cost", "projects", "prices"] as const;

export const clientUsage = `  budget get <project>                 show a project's limits, currency, zone and alerts
  budget set <project> <amount>        set a project's lifetime limit, in units of its
             [--currency XXX]          currency ("25", "12.50"; 0 disables enforcement)
             [--daily AMOUNT]          limits per calendar day and per calendar month,
             [--monthly AMOUNT]        in the same units (0 removes one)
             [--time-zone TZ]          IANA zone whose midnight starts a day and whose 1st
                                       starts a month (e.g. Europe/Berlin; new projects: UTC)
             [--alerts BPS,...]        alert thresholds in basis points of each limit
                                       (5000,8000 = at 50 % and 80 %; "none" removes them)
${nestingUsage}
                                       <amount> always replaces the lifetime limit; every
                                       option not given keeps its current value
  cost <project>                       show a project's spend (lifetime, today, this
                                       month), active holds, limits and tokens
  projects [--order spent|id]          list projects with spend and every set limit (spent,
           [--limit N] [--archived]    limit, % used; the one binding first leads) and the
                                       alerts reached (default 50, largest spend first;
                                       --archived lists archived projects too)
  projects archive <project>           hide a project from listings and refuse its writes
                                       (totals kept); unarchive undoes it
  projects delete <project>            delete a project for good, only if it recorded
           --no-records-since T        nothing at or after T (RFC 3339, or an age: 30d, 12h)
${pricesUsage}

  Options of these commands:
    --url URL   the Tally to talk to (default $TALLY_URL or http://127.0.0.1:8080)
    --key KEY   the API key, when the server has keys (default $TALLY_API_KEY; prefer
                the variable: a command line is visible to other users of the machine).
                budget set and projects (and archive, delete) need an admin key; a project key may read
                its own projects (budget get, cost)
    --json      print the API's JSON (amounts are int64 nanos, as strings)`;

/** Calls taking longer than this fail with DEADLINE_EXCEEDED instead of hanging. */
const callTimeoutMs = 10_000;

const defaultIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  progress: process.stderr.isTTY === true,
};

/** Runs one client command; resolves with the exit code. */
export async function runClientCommand(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, io: Io = defaultIo): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        url: { type: "string" },
        key: { type: "string" },
        json: { type: "boolean", default: false },
        currency: { type: "string" },
        daily: { type: "string" },
        monthly: { type: "string" },
        "time-zone": { type: "string" },
        alerts: { type: "string" },
        order: { type: "string" },
        limit: { type: "string" },
        archived: { type: "boolean" },
        "no-records-since": { type: "string" },
        model: { type: "string" },
        project: { type: "string" },
        input: { type: "string" },
        "cached-input": { type: "string" },
        "cache-write": { type: "string" },
        output: { type: "string" },
        "effective-from": { type: "string" },
        source: { type: "string" },
        ...nestingOptions,
      },
    });
  } catch (error) {
    io.err(`tally: ${(error as Error).message}\n\nusage:\n${clientUsage}`);
    return 2;
  }
  const url = args.values.url ?? env.TALLY_URL ?? "http://127.0.0.1:8080";
  // An empty value (TALLY_API_KEY= ) means no key, like an unset variable.
  const key = args.values.key ?? (env.TALLY_API_KEY || undefined);
  try {
    if (!/^https?:\/\/[^/]+\/?$/.test(url)) throw new UsageError(`--url ${JSON.stringify(url)} must be http(s)://host:port`);
    if (key !== undefined && (key.length === 0 || key.length > apiKeyLengthMax || !/^[\x21-\x7e]+$/.test(key))) {
      throw new UsageError(`the API key (--key or TALLY_API_KEY) must be 1..${apiKeyLengthMax} printable characters without spaces`);
    }
    const interceptors = key === undefined ? [] : [bearer(key)];
    const client = createClient(
      BudgetService,
      createConnectTransport({ baseUrl: url.replace(/\/$/, ""), httpVersion: "1.1", defaultTimeoutMs: callTimeoutMs, interceptors }),
    );
    const [command, ...rest] = args.positionals;
    const json = args.values.json;
    switch (command) {
      case "budget":
        return await budget(client, rest, args.values, json, io);
      case "cost":
        onlyOptionsOf("cost", args.values);
        return await cost(client, rest, json, io);
      case "projects":
        onlyOptionsOf("projects", args.values);
        return await projects(client, rest, args.values, json, io);
      case "prices":
        onlyOptionsOf("prices", args.values);
        return await prices(client, rest, args.values, json, io);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`tally: ${error.message}\n\nusage:\n${clientUsage}`);
      return 2;
    }
    io.err(`tally: ${describeFailure(error, url, key !== undefined)}`);
    return 1;
  }
}

/** Options only one command reads. Given to another they are a usage error:
 * silently ignoring `cost p --currency EUR` or `budget get p --limit 5` would
 * let a typo pass for an answer. */
const ownerOf: Record<string, string> = {
  currency: "budget set",
  daily: "budget set",
  monthly: "budget set",
  "time-zone": "budget set",
  alerts: "budget set",
  order: "projects",
  limit: "projects",
  archived: "projects",
  "no-records-since": "projects",
  model: "prices",
  project: "prices",
  input: "prices",
  "cached-input": "prices",
  "cache-write": "prices",
  output: "prices",
  "effective-from": "prices",
  source: "prices",
  ...nestingOwners,
};

function onlyOptionsOf(command: string, values: object): void {
  for (const [name, value] of Object.entries(values)) {
    const owner = ownerOf[name];
    // --currency is budget set's and prices set's.
    if (name === "currency" && command === "prices") continue;
    if (value !== undefined && owner !== undefined && owner !== command) throw new UsageError(`--${name} is for ${owner}`);
  }
}

/** Sends the key on every call, as agents do. */
function bearer(key: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${key}`);
    return next(req);
  };
}

function describeFailure(error: unknown, url: string, keyGiven: boolean): string {
  const e = ConnectError.from(error);
  if (e.code === Code.Unavailable || e.code === Code.Unknown || e.code === Code.Internal) {
    const cause = e.cause instanceof Error ? ((e.cause as NodeJS.ErrnoException).code ?? e.cause.message) : "";
    if (/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ECONNRESET|fetch failed/.test(`${cause} ${e.rawMessage}`)) {
      return `cannot reach Tally at ${url} (${cause || e.rawMessage}); is \`tally serve\` running there? Set --url or TALLY_URL.`;
    }
  }
  if (e.code === Code.DeadlineExceeded) return `Tally at ${url} did not answer within ${callTimeoutMs / 1000} s`;
  if (e.code === Code.Unauthenticated) {
    return keyGiven
      ? `Tally at ${url} did not accept the API key (Unauthenticated: ${e.rawMessage}). Check --key / TALLY_API_KEY: the key may be mistyped, revoked, or from another deployment.`
      : `Tally at ${url} needs an API key (Unauthenticated: ${e.rawMessage}). Pass --key or set TALLY_API_KEY; an operator creates keys with \`tally keys create\`.`;
  }
  if (e.code === Code.PermissionDenied) {
    return `the API key may not do this (PermissionDenied: ${e.rawMessage}). budget set and projects need an admin key; a project key may only read and record its own projects.`;
  }
  return `Tally refused the call: ${Code[e.code]}: ${e.rawMessage}`;
}

function oneProject(rest: readonly string[], what: string): string {
  if (rest.length !== 1 || rest[0] === "") throw new UsageError(`${what} takes exactly one project id`);
  return rest[0] as string;
}

/** Basis points travel as int32: a larger number cannot even be sent. */
const int32Max = 2 ** 31 - 1;

/** "5000,8000" -> [5000, 8000]; "none" -> [] (which removes every threshold).
 * The range (1..10000) and count are the server's to check, with its own
 * message; here only what is not a list of numbers is refused. An empty
 * value is refused too rather than read as "remove": `--alerts "$UNSET"` must
 * not wipe the alerts. */
export function parseAlerts(text: string): number[] {
  if (text === "none") return [];
  const parts = text.split(",").map((part) => part.trim());
  if (!parts.every((part) => /^\d+$/.test(part) && Number(part) <= int32Max)) {
    throw new UsageError(
      `--alerts ${JSON.stringify(text)} must be basis points separated by commas (5000,8000 = at 50 % and 80 % of each limit), or "none" to remove them`,
    );
  }
  return parts.map(Number);
}

interface BudgetSetOptions extends NestingOptions {
  currency?: string | undefined;
  daily?: string | undefined;
  monthly?: string | undefined;
  "time-zone"?: string | undefined;
  alerts?: string | undefined;
}

async function budget(
  client: Client<typeof BudgetService>,
  rest: readonly string[],
  options: BudgetSetOptions,
  json: boolean,
  io: Io,
): Promise<number> {
  const [action, ...args] = rest;
  if (action === "get") {
    onlyOptionsOf("budget get", options);
    const res = await client.getProjectBudget({ projectId: oneProject(args, "budget get") });
    if (json) printJson(io, GetProjectBudgetResponseSchema, res);
    else table(io, budgetRows(res.budget));
    return 0;
  }
  if (action === "set") {
    onlyOptionsOf("budget set", options);
    if (args.length !== 2) throw new UsageError("budget set takes a project id and an amount");
    const [projectId, text] = args as [string, string];
    // Only the options given are sent. SetProjectBudget replaces the lifetime
    // limit but keeps every field the request leaves unset (the proto's "Not
    // given: keep the current one", applied by the store in the same write), so
    // `budget set p 30` keeps a daily limit set last week. Reading the budget
    // first and sending it all back would do no better and could do worse:
    // another operator's change landing between the read and the write would be
    // silently undone.
    const res = await client.setProjectBudget({
      projectId,
      limitNanos: parseAmount(text),
      currency: options.currency ?? "",
      dailyLimitNanos: options.daily === undefined ? undefined : parseAmount(options.daily, "--daily"),
      monthlyLimitNanos: options.monthly === undefined ? undefined : parseAmount(options.monthly, "--monthly"),
      // Checked and canonicalised by the server ("utc" -> "UTC"), which knows the zones.
      timeZone: options["time-zone"],
      alertThresholds: options.alerts === undefined ? undefined : { basisPoints: parseAlerts(options.alerts) },
      ...nestingRequestFields(options),
    });
    if (json) printJson(io, SetProjectBudgetResponseSchema, res);
    else table(io, budgetRows(res.budget));
    // Stored all the same; said on stderr so scripts reading stdout are unaffected.
    for (const warning of res.warnings) io.err(`warning: ${warning.message}`);
    return 0;
  }
  throw new UsageError(`budget takes "get" or "set", not ${JSON.stringify(action ?? "")}`);
}

function budgetRows(b: ProjectBudget | undefined): Array<[string, string]> {
  return [
    ["project", b?.projectId ?? ""],
    ["limit", limitText(b)],
    ["currency", b?.currency ?? ""],
    ["configured", b?.configured ? "yes" : "no (never set)"],
    // Calendar windows and alerts (holds and windows), shown when set.
    ...((b?.dailyLimitNanos ?? 0n) > 0n ? [["daily limit", amount(b!.dailyLimitNanos, b!.currency)] as [string, string]] : []),
    ...((b?.monthlyLimitNanos ?? 0n) > 0n ? [["monthly limit", amount(b!.monthlyLimitNanos, b!.currency)] as [string, string]] : []),
    // The zone also decides "today" and "this month" in cost: shown when it is not the default too.
    ...((b?.dailyLimitNanos ?? 0n) > 0n ||
    (b?.monthlyLimitNanos ?? 0n) > 0n ||
    (b !== undefined && b.timeZone !== "" && b.timeZone !== timeZoneDefault)
      ? [["time zone", b!.timeZone] as [string, string]]
      : []),
    ...((b?.alertThresholdsBps.length ?? 0) > 0
      ? [["alerts at", b!.alertThresholdsBps.map(percentText).join(", ")] as [string, string]]
      : []),
    ...nestingRows(b),
    ["updated", when(b?.updatedAt)],
  ];
}

async function cost(client: Client<typeof BudgetService>, rest: readonly string[], json: boolean, io: Io): Promise<number> {
  const projectId = oneProject(rest, "cost");
  const res = await client.getProjectCost({ projectId });
  if (json) {
    printJson(io, GetProjectCostResponseSchema, res);
    return 0;
  }
  const { budget: b } = await client.getProjectBudget({ projectId });
  const c = res.projectCost;
  const currency = b?.currency ?? "USD";
  const spent = c?.totalCostNanos ?? 0n;
  const reserved = c?.reservedNanos ?? 0n;
  const holds = c?.activeHoldCount ?? 0n;
  // What is left of a limit: as CheckBudget counts it, after the active holds
  // (every hold counts against every window).
  const left = (limitNanos: bigint, spentNanos: bigint) => amount(limitNanos - spentNanos - reserved, currency);
  const rows: Array<[string, string]> = [
    ["project", projectId],
    ["spent", amount(spent, currency)],
    ["reserved", holds === 0n ? amount(0n, currency) : `${amount(reserved, currency)} in ${holds} active hold${holds === 1n ? "" : "s"}`],
    ["limit", limitText(b)],
    ["remaining", b === undefined || b.limitNanos === 0n ? "unlimited" : left(b.limitNanos, spent)],
  ];
  // The current calendar day and month in the project's time zone, each with
  // its limit when one is set.
  for (const [label, period, limitNanos, limitLabel] of [
    ["today", res.currentDay, b?.dailyLimitNanos ?? 0n, "daily limit"],
    ["this month", res.currentMonth, b?.monthlyLimitNanos ?? 0n, "monthly limit"],
  ] as const) {
    const periodSpent = period?.totalCostNanos ?? 0n;
    rows.push([
      `spent ${label}`,
      `${amount(periodSpent, currency)}${period === undefined ? "" : ` (${period.period}, ${period.timeZone})`}`,
    ]);
    if (limitNanos > 0n) rows.push([limitLabel, `${amount(limitNanos, currency)} (${left(limitNanos, periodSpent)} remaining)`]);
  }
  if ((b?.alertThresholdsBps.length ?? 0) > 0) rows.push(["alerts at", b!.alertThresholdsBps.map(percentText).join(", ")]);
  rows.push(
    ["input tokens", String(c?.inputTokens ?? 0n)],
    ["output tokens", String(c?.outputTokens ?? 0n)],
    ["calls", String(c?.recordCount ?? 0n)],
    ["last cost", when(c?.updatedAt)],
  );
  table(io, rows);
  return 0;
}
