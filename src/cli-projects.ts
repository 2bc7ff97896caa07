// `tally projects`: every project with its spend and every limit that is set
// (lifetime, day, month: spent, limit and % used, the one that binds first
// leading), and the alert thresholds spend has reached. `tally projects
// archive|unarchive|delete` remove projects (ArchiveProject, UnarchiveProject,
// DeleteProject).
import { toJson } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import {
  ArchiveProjectResponseSchema,
  type BudgetService,
  BudgetWindow,
  DeleteProjectResponseSchema,
  ProjectOrder,
  ProjectSummarySchema,
  UnarchiveProjectResponseSchema,
  type LimitStatus,
  type ProjectSummary,
} from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { formatNanos } from "./ledger/money.ts";
import { listProjectsPageSizeMax } from "./limits.ts";
import { amount, percentText, printJson, UsageError, type Io } from "./cli-shared.ts";

export interface ProjectsOptions {
  order?: string | undefined;
  limit?: string | undefined;
  archived?: boolean | undefined;
  "no-records-since"?: string | undefined;
}

const projectsLimitDefault = 50;
const projectsLimitMax = 1_000_000;

const windowName: Record<BudgetWindow, string> = {
  [BudgetWindow.UNSPECIFIED]: "?",
  [BudgetWindow.LIFETIME]: "lifetime",
  [BudgetWindow.DAY]: "day",
  [BudgetWindow.MONTH]: "month",
  [BudgetWindow.ROLLING_MINUTE]: "per minute",
};

/** 12_500n basis points -> "125.00%". */
const basisPointsText = (bp: bigint) => `${bp / 100n}.${(bp % 100n).toString().padStart(2, "0")}%`;

/** "day 2.5/2 USD 125.00%": spent in the window, its limit, the share used. */
export function limitStatusText(limit: LimitStatus, currency: string): string {
  return `${windowName[limit.window]} ${formatNanos(limit.spentNanos)}/${amount(limit.limitNanos, currency)} ${basisPointsText(limit.usedBasisPoints)}`;
}

/** "2026-11-01T00:00:00Z" as it is; "30d" / "12h" / "45m" as that long before `nowMs`. */
export function parseSince(text: string, nowMs: number): number {
  const age = /^(\d{1,6})([dhm])$/.exec(text);
  if (age !== null) return nowMs - Number(age[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[age[2] as "d" | "h" | "m"];
  const ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(ms))
    throw new UsageError(
      `--no-records-since ${JSON.stringify(text)} must be an RFC 3339 time (2026-11-01T00:00:00Z) or an age (30d, 12h, 45m)`,
    );
  return ms;
}

export async function projects(
  client: Client<typeof BudgetService>,
  rest: readonly string[],
  options: ProjectsOptions,
  json: boolean,
  io: Io,
): Promise<number> {
  const [action, ...args] = rest;
  if (action === "archive" || action === "unarchive" || action === "delete") return removal(client, action, args, options, json, io);
  if (options["no-records-since"] !== undefined) throw new UsageError("--no-records-since is for projects delete");
  const { order: orderText, limit: limitArg } = options;
  if (rest.length !== 0)
    throw new UsageError(
      `projects takes no arguments (use --order and --limit), or archive|unarchive|delete <project>, not ${JSON.stringify(action)}`,
    );
  const order =
    orderText === undefined || orderText === "spent" ? ProjectOrder.SPENT_DESC : orderText === "id" ? ProjectOrder.PROJECT_ID : null;
  if (order === null) throw new UsageError(`--order must be "spent" or "id", not ${JSON.stringify(orderText)}`);
  const limit = limitArg === undefined ? projectsLimitDefault : Number(limitArg);
  if (!Number.isInteger(limit) || limit < 1 || limit > projectsLimitMax)
    throw new UsageError(`--limit must be a whole number from 1 to ${projectsLimitMax}`);
  const listed: ProjectSummary[] = [];
  let pageToken = "";
  let more = true;
  while (more && listed.length < limit) {
    const page = await client.listProjects({
      order,
      pageToken,
      pageSize: Math.min(listProjectsPageSizeMax, limit - listed.length),
      includeArchived: options.archived === true,
    });
    listed.push(...page.projects);
    pageToken = page.nextPageToken;
    more = pageToken !== "";
    if (io.progress && more) io.err(`fetched ${listed.length} projects…`);
  }
  if (json) {
    io.out(JSON.stringify({ projects: listed.map((p) => toJson(ProjectSummarySchema, p, { alwaysEmitImplicit: true })), more }, null, 2));
    return 0;
  }
  // LIMITS lists every set window, the one that binds first leading (as the
  // server orders them), so "blocked for today" is never hidden behind a calm
  // lifetime share.
  const header = ["PROJECT", "SPENT", "LIMITS (binding first)", "REACHED", "CALLS"];
  const rows = listed.map((p) => {
    const currency = p.budget?.currency ?? "USD";
    const limits = p.limits.length === 0 ? "no limit" : p.limits.map((l) => limitStatusText(l, currency)).join(", ");
    const reached =
      p.thresholdsReached.length === 0
        ? "-"
        : p.thresholdsReached.map((t) => `${windowName[t.window]} ${percentText(t.thresholdBps)}`).join(", ");
    return [
      p.archived ? `${p.projectId} (archived)` : p.projectId,
      amount(p.cost?.totalCostNanos ?? 0n, currency),
      limits,
      reached,
      String(p.cost?.recordCount ?? 0n),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const leftAligned = new Set([0, 2, 3]);
  for (const row of [header, ...rows])
    io.out(
      row
        .map((value, i) => (leftAligned.has(i) ? value.padEnd(widths[i]!) : value.padStart(widths[i]!)))
        .join("  ")
        .trimEnd(),
    );
  if (more) io.err(`(first ${listed.length} projects; more exist: raise --limit)`);
  return 0;
}

async function removal(
  client: Client<typeof BudgetService>,
  action: "archive" | "unarchive" | "delete",
  args: readonly string[],
  options: ProjectsOptions,
  json: boolean,
  io: Io,
): Promise<number> {
  if (options.order !== undefined || options.limit !== undefined || options.archived !== undefined)
    throw new UsageError(`--order, --limit and --archived are for listing, not projects ${action}`);
  if (args.length !== 1 || args[0] === "") throw new UsageError(`projects ${action} takes exactly one project id`);
  const projectId = args[0]!;
  if (action !== "delete" && options["no-records-since"] !== undefined) throw new UsageError("--no-records-since is for projects delete");
  switch (action) {
    case "archive": {
      const res = await client.archiveProject({ projectId });
      if (json) printJson(io, ArchiveProjectResponseSchema, res);
      else
        io.out(
          `archived ${projectId} (since ${timestampDate(res.archivedAt!).toISOString()}): hidden from listings, writes refused, totals kept`,
        );
      return 0;
    }
    case "unarchive": {
      const res = await client.unarchiveProject({ projectId });
      if (json) printJson(io, UnarchiveProjectResponseSchema, res);
      else
        io.out(res.wasArchived ? `unarchived ${projectId}: listed and writable again` : `${projectId} was not archived: nothing changed`);
      return 0;
    }
    case "delete": {
      const since = options["no-records-since"];
      if (since === undefined)
        throw new UsageError(
          "projects delete needs --no-records-since (RFC 3339 or an age like 30d): the project is deleted only if it recorded nothing since then",
        );
      const res = await client.deleteProject({ projectId, noRecordsSince: timestampFromMs(parseSince(since, Date.now())) });
      if (json) printJson(io, DeleteProjectResponseSchema, res);
      else
        io.out(
          `deleted ${projectId}: it had spent ${formatNanos(res.deletedCost?.totalCostNanos ?? 0n)} over ${res.deletedCost?.recordCount ?? 0n} calls; ${res.deletedRecordCount} cost records removed`,
        );
      return 0;
    }
  }
}
