// Projects as the tree of budgets they form (ProjectBudget.parent_id): each
// project under its parent, depth first, siblings in the table's sort order.
// A parent's figures are rolled up (its own calls plus its descendants'), so
// the page's totals count only the tops of the trees it lists. A project
// whose parent is not listed (beyond the listed pages, archived and hidden,
// or not readable with the key) is shown as a top and says so; the chain
// above it, as far as ./tree-data.ts could read it, keeps the totals from
// counting it again under a listed ancestor. A filter keeps the ancestors of
// every match, so a match is always shown where it sits in its tree.
import type { CostBreakdownEntry, ProjectSummary } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { budgetTreeDepthMax } from "../../src/limits-nesting.ts";
import { formatAmount, formatAmountRounded, formatBasisPoints } from "./format.ts";
import type { UnlistedParent } from "./tree-data.ts";

/** Twice what the server allows, as a guard: a listing read across pages
 * while a tree moved (a chain briefly longer than a tree may be, or a loop
 * between two pages' links) cannot loop the page. */
const depthMax = 2 * budgetTreeDepthMax;

export interface TreeRow {
  project: ProjectSummary;
  /** 0 for a top. */
  depth: number;
  /** Listed children (shown or collapsed). */
  children: number;
  collapsed: boolean;
  /** The parent's id when it is not listed (the row is shown as a top); "". */
  unlistedParent: string;
  /** Why, and where the row sits, when unlistedParent is set; "". */
  unlistedNote: string;
}

export const parentOf = (p: ProjectSummary): string => p.budget?.parentId ?? "";

/** The parent of `id`, listed or read above an unlisted one; undefined when
 * not known (not read, or not readable with the key). */
function parentIdOf(
  id: string,
  listed: ReadonlyMap<string, ProjectSummary>,
  unlisted: ReadonlyMap<string, UnlistedParent>,
): string | undefined {
  const p = listed.get(id);
  if (p !== undefined) return parentOf(p);
  const u = unlisted.get(id);
  return u?.kind === "read" ? u.parentId : undefined;
}

/** Whether a project's spend is not already in the figures of an ancestor
 * that is also totalled (`totalled`: the ids the totals add up, e.g. the
 * filter's matches): what the totals count, so each tree counts once. The
 * chain goes through parents that are not listed when they were read. */
export function countsInTotals(
  p: ProjectSummary,
  listed: ReadonlyMap<string, ProjectSummary>,
  totalled: ReadonlySet<string>,
  unlisted: ReadonlyMap<string, UnlistedParent> = new Map(),
): boolean {
  let id: string | undefined = parentOf(p);
  for (let depth = 0; depth < depthMax && id !== undefined && id !== ""; depth++) {
    if (totalled.has(id)) return false;
    id = parentIdOf(id, listed, unlisted);
  }
  return true;
}

/** What a top whose parent is not listed says: why, as far as it is known,
 * and the listed ancestor whose rolled-up figures hold it, if any. */
export function unlistedNote(
  parentId: string,
  listed: ReadonlyMap<string, ProjectSummary>,
  unlisted: ReadonlyMap<string, UnlistedParent>,
): string {
  const first = unlisted.get(parentId);
  if (first?.kind === "hidden") return `parent ${parentId} is not visible to this key`;
  let id = parentIdOf(parentId, listed, unlisted);
  for (let depth = 0; depth < depthMax && id !== undefined && id !== ""; depth++) {
    if (listed.has(id)) return `parent ${parentId} is not listed; it is under ${id}, whose figures include this project's`;
    id = parentIdOf(id, listed, unlisted);
  }
  return `parent ${parentId} is not listed`;
}

/** The rows to show: `all` the listed projects, `matches` those the filter
 * keeps, `compare` the table's order, `collapsed` the parents folded,
 * `unlisted` the parents read above rows whose parent is not listed. */
export function treeRows(
  all: readonly ProjectSummary[],
  matches: (p: ProjectSummary) => boolean,
  compare: (a: ProjectSummary, b: ProjectSummary) => number,
  collapsed: ReadonlySet<string>,
  unlisted: ReadonlyMap<string, UnlistedParent> = new Map(),
): TreeRow[] {
  const byId = new Map(all.map((p) => [p.projectId, p]));
  const shown = new Set<string>();
  for (const p of all) {
    if (!matches(p)) continue;
    // The match and every listed ancestor.
    let id = p.projectId;
    for (let depth = 0; depth <= depthMax && id !== "" && byId.has(id) && !shown.has(id); depth++) {
      shown.add(id);
      id = parentOf(byId.get(id)!);
    }
  }
  const children = new Map<string, ProjectSummary[]>();
  const tops: ProjectSummary[] = [];
  for (const p of all) {
    if (!shown.has(p.projectId)) continue;
    const parent = parentOf(p);
    if (parent !== "" && shown.has(parent)) {
      const list = children.get(parent) ?? [];
      list.push(p);
      children.set(parent, list);
    } else tops.push(p);
  }
  const rows: TreeRow[] = [];
  const visited = new Set<string>();
  const visit = (p: ProjectSummary, depth: number) => {
    if (visited.has(p.projectId) || depth > depthMax) return;
    visited.add(p.projectId);
    const kids = (children.get(p.projectId) ?? []).sort(compare);
    const parent = parentOf(p);
    const fold = collapsed.has(p.projectId) && kids.length > 0;
    const orphan = parent !== "" && !byId.has(parent);
    rows.push({
      project: p,
      depth,
      children: kids.length,
      collapsed: fold,
      unlistedParent: orphan ? parent : "",
      unlistedNote: orphan ? unlistedNote(parent, byId, unlisted) : "",
    });
    if (!fold) for (const kid of kids) visit(kid, depth + 1);
  };
  for (const top of tops.sort(compare)) visit(top, 0);
  return rows;
}

/** The selected parent's rolled-up spend by direct child (GetProjectCost's
 * BREAKDOWN_DIMENSION_CHILD; "" is its own calls), with each one's share. */
export function renderChildren(entries: readonly CostBreakdownEntry[], totalNanos: bigint, currency: string): HTMLTableSectionElement {
  const body = document.createElement("tbody");
  for (const e of entries) {
    const row = document.createElement("tr");
    row.dataset.child = e.key;
    const name = document.createElement("td");
    name.textContent = e.key === "" ? "(its own calls)" : e.key;
    const spent = document.createElement("td");
    spent.className = "num";
    spent.textContent = formatAmountRounded(e.totalCostNanos);
    spent.title = `${formatAmount(e.totalCostNanos)} ${currency}`;
    spent.dataset.nanos = String(e.totalCostNanos);
    const share = document.createElement("td");
    share.className = "num";
    share.textContent = totalNanos > 0n ? formatBasisPoints((e.totalCostNanos * 10_000n) / totalNanos) : "—";
    const calls = document.createElement("td");
    calls.className = "num";
    calls.textContent = String(e.recordCount);
    row.append(name, spent, share, calls);
    body.append(row);
  }
  return body;
}
