// The tree of budgets as pure functions: cycles and depth refused with
// messages that name them, re-parenting moving rolled-up amounts exactly
// (a model checked against a recomputation after every step), and the lock
// order every write follows.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ancestorChain,
  chainCovered,
  checkSameTreeSettings,
  deepestPath,
  lockOrder,
  planReparent,
  scopeCoversChain,
} from "../../src/ledger/budget-tree.ts";
import { BudgetCycleError, BudgetTreeDepthError, BudgetTreeMismatchError } from "../../src/ledger/errors.ts";
import { budgetTreeDepthMax } from "../../src/limits.ts";

/** A stored tree: child -> parent. */
function tree(links: Record<string, string | null>) {
  const parents = new Map(Object.entries(links));
  return {
    parentOf: (id: string) => parents.get(id) ?? null,
    childrenOf: (id: string) =>
      [...parents]
        .filter(([, parent]) => parent === id)
        .map(([child]) => child)
        .sort(),
    parents,
  };
}

describe("budget tree", () => {
  const org = tree({ org: null, "team-a": "org", "team-b": "org", p1: "team-a", p2: "team-a", p3: "team-b", p4: "team-b" });

  it("reads a project's chain nearest first", () => {
    expect(ancestorChain("p3", org.parentOf)).toEqual(["p3", "team-b", "org"]);
    expect(ancestorChain("org", org.parentOf)).toEqual(["org"]);
    expect(deepestPath("org", org.childrenOf)).toEqual(["org", "team-a", "p1"]);
    expect(deepestPath("p1", org.childrenOf)).toEqual(["p1"]);
  });

  it("refuses a project as its own parent, naming the cycle", () => {
    const attempt = () => planReparent("p1", "p1", org.parentOf, ["p1"]);
    expect(attempt).toThrow(BudgetCycleError);
    expect(attempt).toThrow('project "p1" cannot have parent "p1": that would make a cycle (p1 -> p1); nothing was changed');
  });

  it("refuses a descendant as the parent, naming the whole loop", () => {
    const attempt = () => planReparent("org", "p3", org.parentOf, deepestPath("org", org.childrenOf));
    expect(attempt).toThrow(BudgetCycleError);
    expect(attempt).toThrow("(org -> p3 -> team-b -> org)");
  });

  it("allows exactly four levels and refuses a fifth, naming the longest chain", () => {
    const deep = tree({ org: null, bu: "org", team: "bu", p: "team", q: null, "q-child": "q" });
    expect(ancestorChain("p", deep.parentOf)).toHaveLength(budgetTreeDepthMax);
    // q (with one child) under team would be org > bu > team > q > q-child.
    const attempt = () => planReparent("q", "team", deep.parentOf, deepestPath("q", deep.childrenOf));
    expect(attempt).toThrow(BudgetTreeDepthError);
    expect(attempt).toThrow("the tree would have 5 levels (org > bu > team > q > q-child) and a tree of budgets has at most 4");
    // A leaf fits under team (4 levels); q with its child fits under bu.
    expect(planReparent("q-child", "team", deep.parentOf, ["q-child"]).newAncestors).toEqual(["team", "bu", "org"]);
    expect(planReparent("q", "bu", deep.parentOf, deepestPath("q", deep.childrenOf)).join).toEqual(["bu", "org"]);
  });

  it("moves amounts only between the ancestors a subtree leaves and joins", () => {
    const plan = planReparent("p1", "team-b", org.parentOf, ["p1"]);
    expect(plan).toMatchObject({ oldAncestors: ["team-a", "org"], newAncestors: ["team-b", "org"], leave: ["team-a"], join: ["team-b"] });
    expect(plan.locks).toEqual(["org", "p1", "team-a", "team-b"]);
    expect(planReparent("team-a", null, org.parentOf, deepestPath("team-a", org.childrenOf))).toMatchObject({
      leave: ["org"],
      join: [],
      newAncestors: [],
    });
  });

  it("orders locks by key, then id, each project once", () => {
    const key: Record<string, number> = { a: 3, b: 1, c: 1, d: 2 };
    expect(lockOrder(["a", "b", "c", "d", "a", "c"], (id) => key[id]!)).toEqual(["b", "c", "d", "a"]);
    expect(chainCovered(["p1", "team-a", "org"], new Set(["org", "p1", "team-a"]))).toBe(true);
    expect(chainCovered(["p1", "team-b", "org"], new Set(["org", "p1", "team-a"]))).toBe(false);
  });

  it("lets a key scoped to a parent (or a prefix of it) read its descendants, not its siblings", () => {
    const coversTeamA = (id: string) => id === "team-a";
    expect(scopeCoversChain(ancestorChain("p2", org.parentOf), coversTeamA)).toBe(true);
    expect(scopeCoversChain(ancestorChain("p3", org.parentOf), coversTeamA)).toBe(false);
    expect(scopeCoversChain(ancestorChain("p4", org.parentOf), (id) => id.startsWith("team-"))).toBe(true);
  });

  it("keeps one currency and one time zone per tree", () => {
    expect(() =>
      checkSameTreeSettings({ projectId: "p", currency: "EUR", timeZone: "UTC" }, { projectId: "org", currency: "USD", timeZone: "UTC" }),
    ).toThrow(BudgetTreeMismatchError);
    expect(() =>
      checkSameTreeSettings(
        { projectId: "p", currency: "USD", timeZone: "Europe/Berlin" },
        { projectId: "org", currency: "USD", timeZone: "UTC" },
      ),
    ).toThrow(/one time zone/);
    expect(() =>
      checkSameTreeSettings({ projectId: "p", currency: "USD", timeZone: "UTC" }, { projectId: "org", currency: "USD", timeZone: "UTC" }),
    ).not.toThrow();
  });

  it("a chain read from a corrupt store is a bug, not a decision", () => {
    const loop = tree({ a: "b", b: "a" });
    expect(() => ancestorChain("a", loop.parentOf)).toThrow(/invariant/);
  });
});

describe("re-parenting, as a model (fast-check)", () => {
  const ids = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];
  const op = fc.oneof(
    fc.record({ kind: fc.constant("record" as const), project: fc.constantFrom(...ids), cost: fc.bigInt({ min: 0n, max: 1_000_000n }) }),
    fc.record({
      kind: fc.constant("parent" as const),
      project: fc.constantFrom(...ids),
      parent: fc.option(fc.constantFrom(...ids), { nil: null }),
    }),
  );

  it("refuses exactly the cycles and over-deep trees, and rolled-up totals always equal the sum over the subtree", () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 120 }), (ops) => {
        const parents = new Map<string, string | null>(ids.map((id) => [id, null]));
        const own = new Map<string, bigint>(ids.map((id) => [id, 0n]));
        const rolled = new Map<string, bigint>(ids.map((id) => [id, 0n]));
        const parentOf = (id: string) => parents.get(id) ?? null;
        const childrenOf = (id: string) => ids.filter((c) => parents.get(c) === id);
        for (const step of ops) {
          if (step.kind === "record") {
            // A record adds to the project and every ancestor.
            own.set(step.project, own.get(step.project)! + step.cost);
            for (const id of ancestorChain(step.project, parentOf)) rolled.set(id, rolled.get(id)! + step.cost);
          } else {
            // Oracle, independent of planReparent: apply and look.
            const trial = new Map(parents).set(step.project, step.parent);
            let cycle = false;
            let depthMax = 0;
            for (const id of ids) {
              const seen = new Set<string>();
              let depth = 0;
              for (let at: string | null = id; at !== null; at = trial.get(at) ?? null) {
                if (seen.has(at)) {
                  cycle = true;
                  break;
                }
                seen.add(at);
                depth++;
              }
              depthMax = Math.max(depthMax, depth);
            }
            let plan;
            try {
              plan = planReparent(step.project, step.parent, parentOf, deepestPath(step.project, childrenOf));
            } catch (error) {
              if (error instanceof BudgetCycleError) expect(cycle).toBe(true);
              else if (error instanceof BudgetTreeDepthError) expect(cycle || depthMax > budgetTreeDepthMax).toBe(true);
              else throw error;
              continue;
            }
            expect(cycle).toBe(false);
            expect(depthMax).toBeLessThanOrEqual(budgetTreeDepthMax);
            const moved = rolled.get(step.project)!;
            for (const id of plan.leave) rolled.set(id, rolled.get(id)! - moved);
            for (const id of plan.join) rolled.set(id, rolled.get(id)! + moved);
            parents.set(step.project, step.parent);
          }
          for (const id of ids) {
            const subtreeSum = ids.filter((d) => ancestorChain(d, parentOf).includes(id)).reduce((sum, d) => sum + own.get(d)!, 0n);
            expect(rolled.get(id)).toBe(subtreeSum);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
