// Per-agent caps and rates in the SQLite store's write transaction (issue 18):
// the levels a reservation is decided over, and what a record, a hold and a
// sweep add to or take from the agent's windows and the rates. Which levels
// count what is the ledger's (src/ledger/cap-levels.ts).
import { capNeeds, decisionLevels, rateBucketOf, rateTargets, type CapSettings } from "../../ledger/cap-levels.ts";
import { TotalOverflowError } from "../../ledger/errors.ts";
import type { LevelInput } from "../../ledger/nested-decision.ts";
import type { PeriodKeys } from "../../ledger/periods.ts";
import type { BudgetState, Hold } from "../../ledger/types.ts";
import { rateBucketMs, rateWindowMs } from "../../limits.ts";
import { readCaps } from "./cap-reads.ts";
import type { SqliteCapStatements } from "./cap-statements.ts";

export class SqliteCapWrites {
  readonly #c: SqliteCapStatements;

  constructor(statements: SqliteCapStatements) {
    this.#c = statements;
  }

  /** The levels of a decision by `agentId` over `chain` (nearest first). */
  levels(chain: readonly BudgetState[], agentId: string, nowMs: number): LevelInput[] {
    const needs = capNeeds(chain, agentId);
    return decisionLevels(chain, needs, readCaps(this.#c, needs, chain, nowMs));
  }

  /** A placed hold counts at every project of its chain with a rate (an
   * agent's rate reads the agent's holds themselves). */
  holdPlaced(chainBudgets: readonly CapSettings[], hold: Hold, nowMs: number): void {
    for (const projectId of rateTargets(chainBudgets, "").projects)
      this.#c.insertRateHold.run({ projectId, holdId: hold.holdId, nowMs, expiresAtMs: hold.expiresAtMs, amountNanos: hold.amountNanos });
  }

  /** A settled or released hold stops counting at once (its record, if any,
   * counts instead). */
  holdEnded(holdId: string): void {
    this.#c.deleteRateHolds.run(holdId);
  }

  /** A record's cost in its agent's windows and in every rate that counts it. */
  recorded(
    chainBudgets: readonly CapSettings[],
    entry: { projectId: string; agentId: string; costNanos: bigint },
    keys: PeriodKeys,
    nowMs: number,
  ): void {
    const { projectId, agentId, costNanos } = entry;
    if (agentId !== "")
      this.#c.upsertAgentWindows.run({ projectId, agentId, dayPeriod: keys.day, monthPeriod: keys.month, costNanos, nowMs });
    const targets = rateTargets(chainBudgets, agentId);
    const bucketMs = rateBucketOf(nowMs);
    const add = (level: string, levelAgent: string) => {
      if (this.#c.upsertRateBucket.get({ projectId: level, agentId: levelAgent, bucketMs, costNanos }) === undefined)
        throw new TotalOverflowError(level, "recorded spend of the rate window");
    };
    for (const level of targets.projects) add(level, "");
    if (targets.agent) add(projectId, agentId);
  }

  /** Deletes what no rate counts any more: expired holds' entries and buckets
   * that left the window. At most `countMax` rows of each. */
  sweep(nowMs: number, countMax: number): void {
    this.#c.sweepRateHolds.run(nowMs, countMax);
    this.#c.sweepRateBuckets.run(nowMs - rateWindowMs - rateBucketMs, countMax);
  }
}
