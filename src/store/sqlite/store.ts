// LedgerStore on SQLite. MikroORM owns the connection, the entities and the
// migrations; the hot path runs prepared statements (./statements.ts) on the
// connection's native better-sqlite3 handle: writes (./writes.ts) in one
// synchronous transaction per batch, on the writer thread for a file database
// (./writer.ts), reads (./reads.ts, ./state.ts) on this connection
// (docs/decisions/0001-storage-hot-path.md, 0008-sqlite-writer-thread.md).
import type Database from "better-sqlite3";
import type { CurrencyReserved, CurrencySpend, ProjectEntry, ProjectListQuery } from "../../ledger/projects.ts";
import { projectOf, type LedgerStore, type OpResult, type WriteOp } from "../../ledger/store.ts";
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
import { readOrUnavailable } from "./errors.ts";
import { SqliteProjectRemoval } from "./project-removal.ts";
import { SqliteReads } from "./reads.ts";
import { SqliteStateCache } from "./state.ts";
import { prepareStatements } from "./statements.ts";
import { budgetTreeDepthMax } from "../../limits.ts";
import { childBreakdownOf, ownTotalsOf } from "./tree-reads.ts";
import { prepareTreeStatements, type SqliteTreeStatements } from "./tree-statements.ts";
import { SqliteBatchWrites } from "./writes.ts";
import { prepareCapStatements, type SqliteCapStatements } from "./cap-statements.ts";
import { capNeeds, decisionLevels } from "../../ledger/cap-levels.ts";
import type { LevelInput } from "../../ledger/nested-decision.ts";
import { readCaps } from "./cap-reads.ts";

/** Where a store's writes go when they do not run on its own connection: the
 * writer thread (./writer.ts), which applies them with a SqliteLedgerStore of
 * its own (the *Sync methods below). */
export interface SqliteWrites {
  commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]>;
  deleteExpiredHolds(nowMs: number, countMax: number): Promise<number>;
  deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number>;
  deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number>;
  close(): Promise<void>;
}

export class SqliteLedgerStore implements LedgerStore {
  readonly #db: Database.Database;
  readonly #close: () => Promise<void>;
  readonly #writes: SqliteWrites | undefined;
  readonly #local: SqliteBatchWrites;
  readonly #reads: SqliteReads;
  readonly #states: SqliteStateCache;
  readonly #tree: SqliteTreeStatements;
  readonly #caps: SqliteCapStatements;
  readonly treesStored = true;

  /** `db` is the native handle of an initialised, migrated connection; `close`
   * releases it (the ORM's close). With `writes`, every write goes there and
   * this connection only reads; without, writes run here, synchronously. */
  constructor(db: Database.Database, close: () => Promise<void>, writes?: SqliteWrites) {
    this.#db = db;
    this.#close = close;
    this.#writes = writes;
    const statements = prepareStatements(db);
    const removal = new SqliteProjectRemoval(db);
    this.#tree = prepareTreeStatements(db);
    this.#caps = prepareCapStatements(db);
    this.#local = new SqliteBatchWrites(db, statements, this.#tree, this.#caps, removal);
    this.#reads = new SqliteReads(statements, removal);
    this.#states = new SqliteStateCache(statements);
  }

  async commitBatch(ops: readonly WriteOp[], nowMs: number): Promise<OpResult[]> {
    try {
      if (this.#writes !== undefined) return await this.#writes.commitBatch(ops, nowMs);
      return this.commitBatchSync(ops, nowMs);
    } finally {
      // Committed or not (a failed batch may have committed before the failure
      // was seen): the next read of these projects goes to the database.
      for (const op of ops) {
        this.#states.forget(projectOf(op));
        if (op.kind === "setBudget" && op.change.parentId) this.#states.forget(op.change.parentId);
      }
    }
  }

  /** commitBatch on this connection, blocking until the commit (and its fsync)
   * is done: what the writer thread runs. */
  commitBatchSync(ops: readonly WriteOp[], nowMs: number): OpResult[] {
    return this.#local.commitBatch(ops, nowMs);
  }

  /** deleteExpiredHolds on this connection (the writer thread runs it). */
  deleteExpiredHoldsSync(nowMs: number, countMax: number): number {
    return this.#local.deleteExpiredHolds(nowMs, countMax);
  }

  /** deleteReserveKeysBefore on this connection (the writer thread runs it). */
  deleteReserveKeysBeforeSync(beforeMs: number, countMax: number): number {
    return this.#local.deleteReserveKeysBefore(beforeMs, countMax);
  }

  /** deleteRecordsBefore on this connection (the writer thread runs it). */
  deleteRecordsBeforeSync(beforeMs: number, countMax: number): number {
    return this.#local.deleteRecordsBefore(beforeMs, countMax);
  }

  async getTotals(projectId: string): Promise<ProjectTotals> {
    return this.#reads.getTotals(projectId);
  }

  async getBudget(projectId: string): Promise<Budget> {
    return this.#reads.getBudget(projectId);
  }

  async getBudgetAndTotals(projectId: string): Promise<{ budget: Budget; totals: ProjectTotals }> {
    return this.#reads.getBudgetAndTotals(projectId);
  }

  async getBudgetState(projectId: string, nowMs: number): Promise<BudgetState> {
    return readOrUnavailable(() => this.#states.read(projectId, nowMs));
  }

  async getBreakdown(projectId: string, dimension: Dimension, entriesMax: number): Promise<Breakdown> {
    if (dimension === "child") return readOrUnavailable(() => childBreakdownOf(this.#tree, projectId, entriesMax));
    return this.#reads.getBreakdown(projectId, dimension, entriesMax);
  }

  async getChainStates(projectId: string, nowMs: number): Promise<BudgetState[]> {
    return readOrUnavailable(() => this.#chainStates(projectId, nowMs));
  }

  async getDecisionLevels(projectId: string, agentId: string, nowMs: number): Promise<{ chain: BudgetState[]; levels: LevelInput[] }> {
    // One synchronous read: the chain, the agent's spend and the rates in one snapshot.
    return readOrUnavailable(() => {
      const chain = this.#chainStates(projectId, nowMs);
      const needs = capNeeds(chain, agentId);
      return { chain, levels: decisionLevels(chain, needs, readCaps(this.#caps, needs, chain, nowMs)) };
    });
  }

  #chainStates(projectId: string, nowMs: number): BudgetState[] {
    // Synchronous on one connection: the levels are read in one snapshot.
    // Each level's budget row names the next (projects of a tree are never
    // cached, so every level is read now).
    const chain = [this.#states.read(projectId, nowMs)];
    for (let parent = chain[0]!.budget.parentId; parent !== ""; parent = chain.at(-1)!.budget.parentId) {
      if (chain.length >= budgetTreeDepthMax || chain.some((state) => state.budget.projectId === parent)) {
        throw new Error(
          `invariant: the stored budget tree above "${projectId}" is deeper than ${budgetTreeDepthMax} levels or has a cycle`,
        );
      }
      chain.push(this.#states.read(parent, nowMs));
    }
    return chain;
  }

  async getOwnTotals(projectId: string): Promise<ProjectTotals> {
    // Without children the rolled-up totals are the project's own.
    if (this.#tree.hasChildren.get(projectId) === undefined) return this.#reads.getTotals(projectId);
    return readOrUnavailable(() => ownTotalsOf(this.#tree, projectId));
  }

  async listCostRecords(query: CostRecordQuery): Promise<CostRecordView[]> {
    return this.#reads.listCostRecords(query);
  }

  async getHold(holdId: string): Promise<Hold | null> {
    return this.#reads.getHold(holdId);
  }

  async deleteExpiredHolds(nowMs: number, countMax: number): Promise<number> {
    if (this.#writes !== undefined) return this.#writes.deleteExpiredHolds(nowMs, countMax);
    return this.deleteExpiredHoldsSync(nowMs, countMax);
  }

  async deleteReserveKeysBefore(beforeMs: number, countMax: number): Promise<number> {
    if (this.#writes !== undefined) return this.#writes.deleteReserveKeysBefore(beforeMs, countMax);
    return readOrUnavailable(() => this.deleteReserveKeysBeforeSync(beforeMs, countMax));
  }

  async deleteRecordsBefore(beforeMs: number, countMax: number): Promise<number> {
    if (this.#writes !== undefined) return this.#writes.deleteRecordsBefore(beforeMs, countMax);
    return readOrUnavailable(() => this.deleteRecordsBeforeSync(beforeMs, countMax));
  }

  async listProjects(query: ProjectListQuery, nowMs: number): Promise<ProjectEntry[]> {
    return this.#reads.listProjects(query, nowMs);
  }

  async reservedByCurrency(nowMs: number): Promise<CurrencyReserved[]> {
    return this.#reads.reservedByCurrency(nowMs);
  }

  async spendByCurrency(): Promise<CurrencySpend[]> {
    return this.#reads.spendByCurrency();
  }

  async close(): Promise<void> {
    try {
      await this.#writes?.close();
    } finally {
      await this.#close();
    }
  }

  /** For tests and tools: the native handle (e.g. to inspect the ledger). */
  get native(): Database.Database {
    return this.#db;
  }
}
