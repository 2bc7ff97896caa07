// Budgets nest: a project may name a parent project, and its spend, holds and
// alerts count at every ancestor too. These pure functions keep the tree
// valid (no cycle, at most budgetTreeDepthMax levels), say which ancestors a
// re-parented subtree leaves and joins, and give the one global order in which
// a write locks a project and its ancestors. Stores read the parent links (a
// few rows: depth is bounded) and call these; nothing here touches storage.
import { budgetTreeDepthMax } from "../limits.ts";
import { BudgetCycleError, BudgetTreeDepthError, BudgetTreeMismatchError } from "./errors.ts";

/** The stored parent of a project: null at the top of a tree. */
export type ParentOf = (projectId: string) => string | null;
/** The stored direct children of a project. */
export type ChildrenOf = (projectId: string) => readonly string[];

/** The project and its ancestors, nearest first: [project, parent, ..., root].
 * The stored tree is valid by construction (planReparent guards every
 * change), so a loop or a chain past the depth limit here is a bug. */
export function ancestorChain(projectId: string, parentOf: ParentOf, depthMax: number = budgetTreeDepthMax): string[] {
  const chain = [projectId];
  for (let parent = parentOf(projectId); parent !== null; parent = parentOf(parent)) {
    if (chain.includes(parent)) throw new Error(`invariant: the stored budget tree has a cycle (${[...chain, parent].join(" -> ")})`);
    chain.push(parent);
    if (chain.length > depthMax)
      throw new Error(`invariant: the stored budget tree is deeper than ${depthMax} levels (${chain.join(" -> ")})`);
  }
  return chain;
}

/** The longest downward path from the project: [project, child, grandchild,
 * ...] (just [project] for a leaf). Bounded: a stored tree never has more
 * than depthMax levels, so the walk is too (a longer one is a bug). Ties go to
 * the child first in childrenOf's order, so messages are stable. */
export function deepestPath(projectId: string, childrenOf: ChildrenOf, depthMax: number = budgetTreeDepthMax): string[] {
  const walk = (id: string, level: number): string[] => {
    if (level > depthMax) throw new Error(`invariant: the stored budget tree is deeper than ${depthMax} levels below "${projectId}"`);
    let best: string[] = [];
    for (const child of childrenOf(id)) {
      const path = walk(child, level + 1);
      if (path.length > best.length) best = path;
    }
    return [id, ...best];
  };
  return walk(projectId, 1);
}

/** What re-parenting a project changes. Amounts rolled up at an ancestor (the
 * subtree's lifetime, day and month totals and its active holds) move only
 * between the ancestors the subtree leaves and those it joins: an ancestor
 * common to both chains keeps them. */
export interface ReparentPlan {
  projectId: string;
  /** Ancestors before, nearest first (empty for a root). */
  oldAncestors: string[];
  /** Ancestors after, nearest first (empty when detached). */
  newAncestors: string[];
  /** Old ancestors not in the new chain: subtract the subtree's amounts. */
  leave: string[];
  /** New ancestors not in the old chain: add the subtree's amounts. */
  join: string[];
  /** Every project whose rows change, in lock order (see lockOrder). */
  locks: string[];
}

/** Validates and plans setting `projectId`'s parent to `newParentId` (null:
 * detach). `subtree` is deepestPath(projectId) as stored now. A cycle names
 * its loop; a tree deeper than depthMax names its longest chain. */
export function planReparent(
  projectId: string,
  newParentId: string | null,
  parentOf: ParentOf,
  subtree: readonly string[],
  depthMax: number = budgetTreeDepthMax,
): ReparentPlan {
  if (subtree[0] !== projectId) throw new Error(`invariant: planReparent's subtree path starts at "${subtree[0]}", not "${projectId}"`);
  const oldAncestors = ancestorChain(projectId, parentOf, depthMax).slice(1);
  let newAncestors: string[] = [];
  if (newParentId !== null) {
    if (newParentId === projectId) throw new BudgetCycleError(projectId, newParentId, [projectId, projectId]);
    // The new parent's chain as stored; the project in it means the parent
    // is the project's own descendant.
    newAncestors = [newParentId];
    for (let parent = parentOf(newParentId); parent !== null; parent = parentOf(parent)) {
      if (parent === projectId) throw new BudgetCycleError(projectId, newParentId, [projectId, ...newAncestors, projectId]);
      if (newAncestors.includes(parent))
        throw new Error(`invariant: the stored budget tree has a cycle (${[...newAncestors, parent].join(" -> ")})`);
      newAncestors.push(parent);
      if (newAncestors.length > depthMax)
        throw new Error(`invariant: the stored budget tree is deeper than ${depthMax} levels (${newAncestors.join(" -> ")})`);
    }
    const levels = newAncestors.length + subtree.length;
    if (levels > depthMax) throw new BudgetTreeDepthError(projectId, newParentId, [...[...newAncestors].reverse(), ...subtree], depthMax);
  }
  const leave = oldAncestors.filter((id) => !newAncestors.includes(id));
  const join = newAncestors.filter((id) => !oldAncestors.includes(id));
  return { projectId, oldAncestors, newAncestors, leave, join, locks: lockOrder([projectId, ...oldAncestors, ...newAncestors]) };
}

/** The one global order in which every write takes its projects' locks: by
 * `keyOf` (PostgreSQL's advisory lock key) ascending, then by id. A write
 * to a project locks the project and all its ancestors in this order, and a
 * re-parenting locks the project and both chains in it, so two writes never
 * wait on each other in opposite orders (no deadlock), and any write below a
 * re-parented project shares that project's lock with the re-parenting. */
export function lockOrder(projectIds: readonly string[], keyOf: (projectId: string) => number = () => 0): string[] {
  const distinct = [...new Set(projectIds)];
  const keys = new Map(distinct.map((id) => [id, keyOf(id)]));
  return distinct.sort((a, b) => keys.get(a)! - keys.get(b)! || (a < b ? -1 : a > b ? 1 : 0));
}

/** True when every project of `chain` is among the locked ones. A write reads
 * its chain before locking; if a re-parenting committed in between, the chain
 * read after locking is not covered, and the write retries from the start
 * rather than take a lock out of order. */
export function chainCovered(chain: readonly string[], locked: ReadonlySet<string>): boolean {
  return chain.every((id) => locked.has(id));
}

/** A key scoped to a parent project (or a prefix matching it) may read the
 * parent's descendants: true when `covers` accepts the project or any of its
 * ancestors (its chain, nearest first). */
export function scopeCoversChain(chain: readonly string[], covers: (projectId: string) => boolean): boolean {
  return chain.some(covers);
}

/** What a child must share with its parent. */
export interface TreeSettings {
  projectId: string;
  currency: string;
  timeZone: string;
}

/** A tree of budgets has one currency (rolled-up amounts add nanos of one
 * unit) and one time zone (a record adds to today's spend of every level, so
 * "today" must be the same day at every level, and a re-parented subtree's
 * day and month spend moves exactly). Throws when `child` and `parent` differ. */
export function checkSameTreeSettings(child: TreeSettings, parent: TreeSettings): void {
  if (child.currency !== parent.currency) {
    throw new BudgetTreeMismatchError(
      `project "${child.projectId}" (${child.currency}) cannot have parent "${parent.projectId}" (${parent.currency}): a tree of budgets has one currency; nothing was changed`,
    );
  }
  if (child.timeZone !== parent.timeZone) {
    throw new BudgetTreeMismatchError(
      `project "${child.projectId}" (time zone ${child.timeZone}) cannot have parent "${parent.projectId}" (time zone ${parent.timeZone}): a tree of budgets has one time zone; set the same time_zone first; nothing was changed`,
    );
  }
}
