// What the tree of budgets needs beyond ListProjects' rows, read with the
// existing RPCs and bounded per refresh:
// - each listed parent's own calls (GetProjectCost.own_cost): ListProjects'
//   figures are rolled up (the project's calls plus its descendants'), so the
//   part a parent spent itself only comes from GetProjectCost;
// - the chain above a project whose parent is not listed (archived and hidden,
//   beyond the listed pages, or not readable with this key): GetProjectBudget's
//   parent_id, level by level, so the row can say where it sits and the page's
//   totals do not count its spend a second time under a listed ancestor.
import { Code, ConnectError } from "@connectrpc/connect";
import type { ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { budgetTreeDepthMax } from "../../src/limits-nesting.ts";
import { parentOf } from "./tree.ts";

/** Parents whose own calls are read per refresh, the largest spenders first
 * (ListProjects' order): one GetProjectCost each, only when its rolled-up
 * totals moved since the last read (a new own call moves them too). A page
 * of 5 000 projects has at most a few hundred parents in fleets the size
 * Tally is built for; past this the Own cell says it was not read. */
export const ownCostReadsMax = 200;
/** GetProjectBudget calls per refresh to follow the chains above projects
 * whose parent is not listed: each chain has at most budgetTreeDepthMax - 1
 * levels above the row, and archived parents are few. Past it a row's chain
 * is left unknown (the note says so) and its spend is counted in the totals. */
export const unlistedParentReadsMax = 64;
/** Calls in flight at once while reading the above: the page shares the
 * server with agents and must not burst hundreds of calls every 5 s. */
export const treeReadsConcurrency = 4;

/** A parent that is not listed, as far as it could be read. */
export type UnlistedParent =
  /** Its own parent ("" for a root), read with GetProjectBudget. */
  | { kind: "read"; parentId: string }
  /** NOT_FOUND or PERMISSION_DENIED: this key may not read it. */
  | { kind: "hidden" }
  /** Past unlistedParentReadsMax or deeper than a tree may be: not read. */
  | { kind: "unread" };

export interface TreeData {
  /** Own calls' spend (nanos) of the listed parents that were read. */
  ownNanos: Map<string, bigint>;
  /** Listed parents whose own calls were not read (past ownCostReadsMax). */
  ownUnread: Set<string>;
  /** Every parent met above a listed row that is not itself listed. */
  unlisted: Map<string, UnlistedParent>;
}

/** The calls this module makes (the page's client; any BudgetService client). */
export interface TreeClient {
  getProjectCost(req: { projectId: string }): Promise<{
    projectCost?: { totalCostNanos: bigint; recordCount: bigint } | undefined;
    ownCost?: { totalCostNanos: bigint } | undefined;
  }>;
  getProjectBudget(req: { projectId: string }): Promise<{ budget?: { parentId: string } | undefined }>;
}

/** Own costs read before, by project: reused while the rolled-up totals they
 * were read with have not moved. */
export type OwnCostCache = Map<string, { rolledUp: string; ownNanos: bigint }>;

const rolledUpKey = (p: ProjectSummary) => `${p.cost?.totalCostNanos ?? 0n}/${p.cost?.recordCount ?? 0n}`;

/** Runs `tasks` with at most `limit` in flight. */
async function inBatches(tasks: readonly (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
}

const isHidden = (error: unknown) => {
  const code = ConnectError.from(error).code;
  return code === Code.NotFound || code === Code.PermissionDenied;
};

export async function loadTreeData(client: TreeClient, projects: readonly ProjectSummary[], cache: OwnCostCache): Promise<TreeData> {
  const listed = new Map(projects.map((p) => [p.projectId, p]));
  const parents = new Set(projects.map(parentOf).filter((id) => listed.has(id)));
  const data: TreeData = { ownNanos: new Map(), ownUnread: new Set(), unlisted: new Map() };

  const reads: (() => Promise<void>)[] = [];
  for (const p of projects) {
    if (!parents.has(p.projectId)) continue;
    const key = rolledUpKey(p);
    const cached = cache.get(p.projectId);
    if (cached?.rolledUp === key) data.ownNanos.set(p.projectId, cached.ownNanos);
    else if (reads.length >= ownCostReadsMax) data.ownUnread.add(p.projectId);
    else
      reads.push(async () => {
        const { ownCost } = await client.getProjectCost({ projectId: p.projectId });
        const ownNanos = ownCost?.totalCostNanos ?? 0n;
        // Keyed by the listing's totals, not the read's: a call landing in
        // between is read again next time rather than kept as current.
        cache.set(p.projectId, { rolledUp: key, ownNanos });
        data.ownNanos.set(p.projectId, ownNanos);
      });
  }
  for (const id of cache.keys()) if (!parents.has(id)) cache.delete(id);

  // The chains above rows whose parent is not listed, one level per round:
  // a level's parents are known once it is read. A row's chain has at most
  // budgetTreeDepthMax - 1 levels above it.
  const chains = async () => {
    let readsLeft = unlistedParentReadsMax;
    let level = [...new Set(projects.map(parentOf).filter((id) => id !== "" && !listed.has(id)))];
    for (let depth = 1; depth < budgetTreeDepthMax && level.length > 0; depth++) {
      const tasks = level.map((id) => async () => {
        if (readsLeft <= 0) {
          data.unlisted.set(id, { kind: "unread" });
          return;
        }
        readsLeft--;
        try {
          const { budget } = await client.getProjectBudget({ projectId: id });
          data.unlisted.set(id, { kind: "read", parentId: budget?.parentId ?? "" });
        } catch (error) {
          if (!isHidden(error)) throw error;
          data.unlisted.set(id, { kind: "hidden" });
        }
      });
      await inBatches(tasks, treeReadsConcurrency);
      const above = new Set<string>();
      for (const id of level) {
        const u = data.unlisted.get(id);
        if (u?.kind === "read" && u.parentId !== "" && !listed.has(u.parentId) && !data.unlisted.has(u.parentId)) above.add(u.parentId);
      }
      level = [...above];
    }
    // Deeper than a tree may be (a listing read while a tree moved): not followed.
    for (const id of level) if (!data.unlisted.has(id)) data.unlisted.set(id, { kind: "unread" });
  };
  // One after the other: at most treeReadsConcurrency calls in flight.
  await inBatches(reads, treeReadsConcurrency);
  await chains();
  return data;
}
