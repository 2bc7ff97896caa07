// Property-based tests (fast-check): money arithmetic, the budget decision,
// and the ledger under arbitrary sequences of valid and invalid requests.
// Every run is bounded (numRuns, command counts); seeds are printed on failure.
import { create } from "@bufbuild/protobuf";
import { ConnectError, createHandlerContext } from "@connectrpc/connect";
import { withErrorMapping } from "../../src/api/errors.ts";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BudgetService,
  CheckBudgetRequestSchema,
  RecordCostRequestSchema,
  SetProjectBudgetRequestSchema,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { BudgetServiceHandler } from "../../src/api/budget-service.ts";
import { decideBudget, DecisionReason } from "../../src/ledger/budget.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { addChecked, formatNanos, int64Max, Int64OverflowError, nanosPerUnit } from "../../src/ledger/money.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";

const amount = fc.bigInt({ min: 0n, max: int64Max });
/** Amounts near the interesting edges as well as anywhere in int64. */
const edgyAmount = fc.oneof(amount, fc.bigInt({ min: 0n, max: 1_000n }), fc.bigInt({ min: int64Max - 1_000n, max: int64Max }));
/** (limit, spent, estimate) with the estimate often right at the boundary
 * (remaining - 3 .. remaining + 3), where an off-by-one would hide. */
const decisionInputs = fc.oneof(
  fc.tuple(edgyAmount, edgyAmount, edgyAmount),
  fc.tuple(edgyAmount, edgyAmount, fc.bigInt({ min: -3n, max: 3n })).map(([limit, spent, delta]) => {
    const estimate = limit - spent + delta;
    return [limit, spent, estimate < 0n ? 0n : estimate > int64Max ? int64Max : estimate] as [bigint, bigint, bigint];
  }),
);
/** The rule, written independently of decideBudget. */
const oracleAllows = (limit: bigint, spent: bigint, estimate: bigint) => limit === 0n || (limit - spent > 0n && estimate <= limit - spent);

/** Parses formatNanos output back to nanos, without floats. */
function parseUnits(text: string): bigint {
  const negative = text.startsWith("-");
  const [whole, fraction = ""] = (negative ? text.slice(1) : text).split(".");
  const nanos = BigInt(whole!) * nanosPerUnit + BigInt(fraction.padEnd(9, "0"));
  return negative ? -nanos : nanos;
}

describe("money", () => {
  it("adds exactly inside int64 and refuses (never wraps) outside it", () => {
    fc.assert(
      fc.property(edgyAmount, edgyAmount, (a, b) => {
        if (a + b <= int64Max) {
          expect(addChecked("total", a, b)).toBe(a + b);
        } else {
          expect(() => addChecked("total", a, b)).toThrow(Int64OverflowError);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it("is associative where it is defined: the order of records never changes a total", () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: int64Max / 64n }), { maxLength: 64 }), (amounts) => {
        const forward = amounts.reduce((sum, x) => addChecked("t", sum, x), 0n);
        const backward = [...amounts].reverse().reduce((sum, x) => addChecked("t", sum, x), 0n);
        expect(forward).toBe(backward);
        expect(forward).toBe(amounts.reduce((s, x) => s + x, 0n));
      }),
      { numRuns: 500 },
    );
  });

  it("formats nanos as decimal units that parse back to the same nanos", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -int64Max, max: int64Max }), (nanos) => {
        const text = formatNanos(nanos);
        expect(text).toMatch(/^-?\d+(\.\d{1,9})?$/);
        expect(parseUnits(text)).toBe(nanos);
      }),
      { numRuns: 2_000 },
    );
  });
});

describe("the budget decision", () => {
  it("allows exactly when there is no limit or the estimate fits in what remains", () => {
    fc.assert(
      fc.property(decisionInputs, ([limit, spent, estimate]) => {
        const d = decideBudget(limit, spent, estimate);
        expect(d.limitNanos).toBe(limit);
        expect(d.spentNanos).toBe(spent);
        if (limit === 0n) {
          expect(d).toMatchObject({ allowed: true, reason: DecisionReason.noLimit, remainingNanos: 0n });
          return;
        }
        expect(d.remainingNanos).toBe(limit - spent);
        expect(d.allowed).toBe(oracleAllows(limit, spent, estimate));
        // The safety property: an allowed estimate never takes spend past the limit.
        if (d.allowed) expect(spent + estimate).toBeLessThanOrEqual(limit);
        if (!d.allowed) expect(d.reason).toBe(limit - spent <= 0n ? DecisionReason.exhausted : DecisionReason.exceedsRemaining);
      }),
      { numRuns: 5_000 },
    );
  });

  it("is monotonic: a smaller estimate or a smaller spend is never refused where a larger one was allowed", () => {
    fc.assert(
      fc.property(edgyAmount, edgyAmount, edgyAmount, edgyAmount, (limit, spent, e1, e2) => {
        const [small, large] = e1 <= e2 ? [e1, e2] : [e2, e1];
        if (decideBudget(limit, spent, large).allowed) expect(decideBudget(limit, spent, small).allowed).toBe(true);
        const [lessSpent, moreSpent] = e1 <= e2 ? [e1, e2] : [e2, e1];
        if (decideBudget(limit, moreSpent, spent).allowed) expect(decideBudget(limit, lessSpent, spent).allowed).toBe(true);
      }),
      { numRuns: 5_000 },
    );
  });
});

// --- The ledger under arbitrary request sequences ---------------------------

type Command =
  | { kind: "record"; project: number; requestId: number; costNanos: bigint; inputTokens: bigint; garbage: Garbage | null }
  | { kind: "setBudget"; project: number; limitNanos: bigint }
  /** An agent that checks first and spends only if allowed; the estimate is
   * `delta` away from what remains (when a limit is set), or `costNanos`. */
  | { kind: "spendIfAllowed"; project: number; requestId: number; costNanos: bigint; delta: bigint | null };
type Garbage = "negativeCost" | "badProject" | "longRequestId" | "badModel" | "negativeTokens";

const costArb = fc.oneof(fc.bigInt({ min: 0n, max: 1_000n }), fc.bigInt({ min: 0n, max: int64Max }), fc.constant(int64Max));
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("record" as const),
      project: fc.nat(2),
      requestId: fc.nat(12),
      costNanos: costArb,
      inputTokens: fc.bigInt({ min: 0n, max: 10_000n }),
      garbage: fc.option(fc.constantFrom<Garbage>("negativeCost", "badProject", "longRequestId", "badModel", "negativeTokens"), {
        freq: 4,
      }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("setBudget" as const), project: fc.nat(2), limitNanos: fc.bigInt({ min: 0n, max: 5_000n }) }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("spendIfAllowed" as const),
      project: fc.nat(2),
      requestId: fc.nat(1_000_000),
      costNanos: fc.bigInt({ min: 0n, max: 2_000n }),
      delta: fc.option(fc.bigInt({ min: -2n, max: 2n }), { freq: 2 }),
    }),
  },
);

describe("the ledger, for any sequence of requests (through the handler)", () => {
  let init: InitializedStore;
  let handler: BudgetServiceHandler;
  let run = 0;
  beforeAll(async () => {
    init = await initORM("sqlite::memory:");
    handler = withErrorMapping(
      BudgetService,
      new BudgetServiceHandler(new Ledger(init.store, new UnitOfWork(init.store, { batchSizeMax: 32, queueDepthMax: 1024 }))),
    );
  });
  afterAll(async () => {
    await init.store.close();
  });
  const ctx = (name: "recordCost" | "setProjectBudget") =>
    createHandlerContext({
      service: BudgetService,
      method: BudgetService.method[name],
      protocolName: "in-process",
      requestMethod: "POST",
      url: `in-process://${name}`,
    });

  it("keeps the lifetime total equal to the sum of accepted records; garbage, duplicates, conflicts and overflows add nothing; checked spending never passes the limit", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 40 }), async (commands) => {
        run++;
        const projectId = (p: number) => `prop-${run}-p${p}`;
        // The model: what a correct ledger must contain.
        const accepted = new Map<string, { costNanos: bigint; inputTokens: bigint }>(); // by project + request id
        const totals = [0n, 0n, 0n];
        const tokens = [0n, 0n, 0n];
        const limits = [0n, 0n, 0n];
        // Spend that went through CheckBudget first, per project, counted only
        // while a limit was set: the discipline the decision must make safe.
        const checkedOverLimit: boolean[] = [false, false, false];

        for (const c of commands) {
          if (c.kind === "setBudget") {
            await handler.setProjectBudget(
              create(SetProjectBudgetRequestSchema, { projectId: projectId(c.project), limitNanos: c.limitNanos }),
              ctx("setProjectBudget"),
            );
            limits[c.project] = c.limitNanos;
            continue;
          }
          if (c.kind === "spendIfAllowed") {
            const remaining = limits[c.project]! - totals[c.project]!;
            const costNanos = c.delta !== null && limits[c.project]! > 0n && remaining + c.delta >= 0n ? remaining + c.delta : c.costNanos;
            const check = await handler.checkBudget(
              create(CheckBudgetRequestSchema, { projectId: projectId(c.project), estimatedCostNanos: costNanos }),
            );
            expect(check.allowed).toBe(oracleAllows(limits[c.project]!, totals[c.project]!, costNanos));
            if (!check.allowed) continue;
            const spend = handler.recordCost(
              create(RecordCostRequestSchema, {
                projectId: projectId(c.project),
                costNanos,
                requestId: `spend-${c.requestId}-${totals[c.project]}`,
              }),
              ctx("recordCost"),
            );
            if (totals[c.project]! + costNanos > int64Max) {
              // Only possible without a limit (an earlier record of nearly int64Max).
              expect(ConnectError.from(await spend.catch((e: unknown) => e)).code).toBe(9);
              continue;
            }
            if (!(await spend).duplicate) totals[c.project]! += costNanos;
            if (limits[c.project]! > 0n && totals[c.project]! > limits[c.project]! && check.reason !== 1 /* NO_LIMIT */)
              checkedOverLimit[c.project] = true;
            continue;
          }
          const request = create(RecordCostRequestSchema, {
            projectId: c.garbage === "badProject" ? `${projectId(c.project)} ` : projectId(c.project),
            costNanos: c.garbage === "negativeCost" ? -c.costNanos - 1n : c.costNanos,
            inputTokens: c.garbage === "negativeTokens" ? -1n : c.inputTokens,
            requestId: c.garbage === "longRequestId" ? "r".repeat(129) : `r${c.requestId}`,
            model: c.garbage === "badModel" ? "has space" : "m",
          });
          const key = `${c.project}/r${c.requestId}`;
          let outcome: "ok" | "duplicate" | string;
          try {
            outcome = (await handler.recordCost(request, ctx("recordCost"))).duplicate ? "duplicate" : "ok";
          } catch (error) {
            outcome = ConnectError.from(error).code.toString();
          }
          const previous = accepted.get(key);
          if (c.garbage !== null) {
            expect(outcome).toBe("3"); // INVALID_ARGUMENT
          } else if (previous !== undefined) {
            const same = previous.costNanos === c.costNanos && previous.inputTokens === c.inputTokens;
            expect(outcome).toBe(same ? "duplicate" : "6"); // ALREADY_EXISTS
          } else if (totals[c.project]! + c.costNanos > int64Max) {
            expect(outcome).toBe("9"); // FAILED_PRECONDITION: would overflow
          } else {
            expect(outcome).toBe("ok");
            accepted.set(key, { costNanos: c.costNanos, inputTokens: c.inputTokens });
            totals[c.project]! += c.costNanos;
            tokens[c.project]! += c.inputTokens;
          }
        }
        for (const p of [0, 1, 2]) {
          const stored = await init.store.getTotals(projectId(p));
          expect(stored.totalCostNanos).toBe(totals[p]);
          expect(stored.inputTokens).toBe(tokens[p]);
          expect(checkedOverLimit[p]).toBe(false);
        }
      }),
      { numRuns: 60 },
    );
  });
});
