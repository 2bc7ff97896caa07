// LedgerStore on PostgreSQL, for several stateless replicas on one database.
// MikroORM owns the entities, the migrations and the connection pool; the hot
// path runs parameterised SQL on a client of that pool (the `pg` Pool behind
// MikroORM's connection): writes (./writes.ts) in one READ COMMITTED
// transaction per batch under per-project advisory locks (./locks.ts), reads
// (./reads.ts) one statement each (docs/decisions/0005-postgresql.md).
import type { Pool } from "pg";
import type { CurrencyReserved, CurrencySpend, ProjectEntry, ProjectListQuery } from "../../ledger/projects.ts";
import type { LedgerStore, OpResult, WriteOp } from "../../ledger/store.ts";
import type {
  Breakdown,
  Budget,
  BudgetState,
  CostRecordQuery,
  CostRecordView,
  Dimension,
  Hold,
  ProjectTotals,
} from "../../ledger/types.ts";
import { PostgresReads } from "./reads.ts";
import type { LevelInput } from "../../ledger/nested-decision.ts";
import { readDecisionLevels } from "./cap-reads.ts";
import { unavailableOr } from "./errors.ts";
import { PostgresTreeReads } from "./tree-reads.ts";
import { deleteBeforeSql, deleteReserveKeysSql } from "./write-statements.ts";
import { PostgresBatchWrites } from "./writes.ts";

export class PostgresLedgerStore implements LedgerStore {
  readonly #pool: Pool;
  readonly #close: () => Promise<void>;
  readonly #writes: PostgresBatchWrites;
  readonly #reads: PostgresReads;
  readonly #tree: PostgresTreeReads;
  /** Trees of budgets: parents locked with their children's writes (decision 0013). */
  readonly treesStored = true;

  /** `pool` is the pg Pool of an initialised, migrated MikroORM connection;
   * `close` releases it (the ORM's close). */
  constructor(pool: Pool, close: () => Promise<void>) {
    this.#pool = pool;
    this.#close = close;
    this.#writes = new PostgresBatchWrites(pool);
    this.#reads = new PostgresReads(pool);
    this.#tree = new PostgresTreeReads(pool, this.#writes.parents);
  }

  commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    return this.#writes.commitBatch(ops, nowMs);
  }

  getTotals(projectId: string): Promise<ProjectTotals> {
    return this.#reads.getTotals(projectId);
  }

  getBudget(projectId: string): Promise<Budget> {
    return this.#reads.getBudget(projectId);
  }

  getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    return this.#reads.getBudgetAndTotals(projectId);
  }

  getBudgetState(projectId: string, nowMs: number): Promise<BudgetState> {
    return this.#reads.getBudgetState(projectId, nowMs);
  }

  getBreakdown(projectId: string, dimension: Dimension, entriesMax: number): Promise<Breakdown> {
    if (dimension === "child") return this.#tree.childBreakdown(projectId, entriesMax);
    return this.#reads.getBreakdown(projectId, dimension, entriesMax);
  }

  getChainStates(projectId: string, nowMs: number): Promise<BudgetState[]> {
    return this.#tree.chainStates(projectId, nowMs);
  }

  async getDecisionLevels(projectId: string, agentId: string, nowMs: number): Promise<{ chain: BudgetState[]; levels: LevelInput[] }> {
    // A check is advice: the chain and the caps in two statements on the pool.
    const chain = await this.#tree.chainStates(projectId, nowMs);
    try {
      return { chain, levels: await readDecisionLevels(this.#pool, chain, agentId, nowMs) };
    } catch (error) {
      throw unavailableOr(error, "read");
    }
  }

  async getOwnTotals(projectId: string): Promise<ProjectTotals> {
    return (await this.#tree.ownTotals(projectId)) ?? (await this.#reads.getTotals(projectId));
  }

  listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]> {
    return this.#reads.listCostRecords(query);
  }

  getHold(holdId: string): Promise<Hold | null> {
    return this.#reads.getHold(holdId);
  }

  deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    return this.#writes.deleteExpiredHolds(nowMs, countMax);
  }

  async deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number> {
    const result = await this.#reads.query("tally_delete_reserve_keys", deleteReserveKeysSql, [String(beforeMs), countMax]);
    return result.rowCount ?? 0;
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    const result = await this.#reads.query("tally_delete_before", deleteBeforeSql, [String(beforeMs), countMax]);
    return result.rowCount ?? 0;
  }

  listProjects(query: ProjectListQuery, nowMs: number): Promise<ProjectEntry[]> {
    return this.#reads.listProjects(query, nowMs);
  }

  reservedByCurrency(nowMs: number): Promise<CurrencyReserved[]> {
    return this.#reads.reservedByCurrency(nowMs);
  }

  spendByCurrency(): Promise<CurrencySpend[]> {
    return this.#reads.spendByCurrency();
  }

  async close(): Promise<void> {
    await this.#close();
  }

  /** For tests and tools: the pool (e.g. to inspect the ledger). */
  get native(): Pool {
    return this.#pool;
  }
}
