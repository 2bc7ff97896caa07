// `tally projects`: every project with its spend and every limit that is set
// (lifetime, day, month: spent, limit and % used, the one that binds first
// leading), and the alert thresholds spend has reached.
import { toJson } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { BudgetService, BudgetWindow, ProjectOrder, ProjectSummarySchema, type LimitStatus, type ProjectSummary } from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { formatNanos } from "./ledger/money.ts";
import { listProjectsPageSizeMax } from "./limits.ts";
import { amount, percentText, UsageError, type Io } from "./cli-shared.ts";

const projectsLimitDefault = 50;
const projectsLimitMax = 1_000_000;

const windowName: Record<BudgetWindow, string> = {
  [BudgetWindow.UNSPECIFIED]: "?",
  [BudgetWindow.LIFETIME]: "lifetime",
  [BudgetWindow.DAY]: "day",
  [BudgetWindow.MONTH]: "month",
};

/** 12_500n basis points -> "125.00%". */
const basisPointsText = (bp: bigint) => `${bp / 100n}.${(bp % 100n).toString().padStart(2, "0")}%`;

/** "day 2.5/2 USD 125.00%": spent in the window, its limit, the share used. */
export function limitStatusText(limit: LimitStatus, currency: string): string {
  return `${windowName[limit.window]} ${formatNanos(limit.spentNanos)}/${amount(limit.limitNanos, currency)} ${basisPointsText(limit.usedBasisPoints)}`;
}

export async function projects(client: Client<typeof BudgetService>, rest: readonly string[], orderText: string | undefined, limitArg: string | undefined, json: boolean, io: Io): Promise<number> {
  if (rest.length !== 0) throw new UsageError("projects takes no arguments (use --order and --limit)");
  const order = orderText === undefined || orderText === "spent" ? ProjectOrder.SPENT_DESC : orderText === "id" ? ProjectOrder.PROJECT_ID : null;
  if (order === null) throw new UsageError(`--order must be "spent" or "id", not ${JSON.stringify(orderText)}`);
  const limit = limitArg === undefined ? projectsLimitDefault : Number(limitArg);
  if (!Number.isInteger(limit) || limit < 1 || limit > projectsLimitMax) throw new UsageError(`--limit must be a whole number from 1 to ${projectsLimitMax}`);
  const listed: ProjectSummary[] = [];
  let pageToken = "";
  let more = true;
  while (more && listed.length < limit) {
    const page = await client.listProjects({ order, pageToken, pageSize: Math.min(listProjectsPageSizeMax, limit - listed.length) });
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
    const reached = p.thresholdsReached.length === 0 ? "-" : p.thresholdsReached.map((t) => `${windowName[t.window]} ${percentText(t.thresholdBps)}`).join(", ");
    return [p.projectId, amount(p.cost?.totalCostNanos ?? 0n, currency), limits, reached, String(p.cost?.recordCount ?? 0n)];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const leftAligned = new Set([0, 2, 3]);
  for (const row of [header, ...rows]) io.out(row.map((value, i) => (leftAligned.has(i) ? value.padEnd(widths[i]!) : value.padStart(widths[i]!))).join("  ").trimEnd());
  if (more) io.err(`(first ${listed.length} projects; more exist: raise --limit)`);
  return 0;
}
