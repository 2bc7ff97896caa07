// The SQLite store's reads, on the main thread's connection. Each is
// synchronous on the one connection, so the statements of one read see one
// snapshot (no write can come between them). A read the database cannot serve
// is UNAVAILABLE (readOrUnavailable), as on PostgreSQL.
import type { CurrencyReserved, CurrencySpend, ProjectEntry, ProjectListQuery } from "../../ledger/projects.ts";
import { ProjectOrder } from "../../ledger/projects.ts";
import {
  zeroTotals,
  type Breakdown,
  type Budget,
  type CostRecordQuery,
  type CostRecordView,
  type Dimension,
  type Hold,
  type ProjectTotals,
} from "../../ledger/types.ts";
import { currencyDefault } from "../../limits.ts";
import {
  budgetFromRow,
  holdFromRow,
  recordViewFromRow,
  totalsFromRow,
  unsetBudget,
  type BudgetRow,
  type HoldRow,
  type RecordRow,
  type TotalsRow,
} from "../rows.ts";
import { readOrUnavailable } from "./errors.ts";
import type { SqliteProjectRemoval } from "./project-removal.ts";
import type { SqliteStatements } from "./statements.ts";

interface BreakdownRow {
  label: string;
  total_cost_nanos: bigint;
  input_tokens: bigint;
  output_tokens: bigint;
  record_count: bigint;
  catalog_cost_nanos: bigint;
  priced_cost_nanos: bigint;
  unpriced_record_count: bigint;
}

const byCurrency = (a: { currency: string }, b: { currency: string }) => (a.currency < b.currency ? -1 : a.currency > b.currency ? 1 : 0);

export class SqliteReads {
  readonly #statements: SqliteStatements;
  readonly #removal: SqliteProjectRemoval;

  constructor(statements: SqliteStatements, removal: SqliteProjectRemoval) {
    this.#statements = statements;
    this.#removal = removal;
  }

  getTotals(projectId: string): ProjectTotals {
    const row = readOrUnavailable(() => this.#statements.selectTotals.get(projectId) as TotalsRow | undefined);
    return row === undefined ? zeroTotals(projectId) : totalsFromRow(row);
  }

  getBudget(projectId: string): Budget {
    const row = readOrUnavailable(() => this.#statements.selectBudget.get(projectId) as BudgetRow | undefined);
    return row === undefined ? unsetBudget(projectId) : budgetFromRow(row);
  }

  getBudgetAndTotals(projectId: string): { budget: Budget; totals: ProjectTotals } {
    const [budget, totals] = readOrUnavailable(() => [
      this.#statements.selectBudget.get(projectId) as BudgetRow | undefined,
      this.#statements.selectTotals.get(projectId) as TotalsRow | undefined,
    ]);
    return {
      budget: budget === undefined ? unsetBudget(projectId) : budgetFromRow(budget),
      totals: totals === undefined ? zeroTotals(projectId) : totalsFromRow(totals),
    };
  }

  getBreakdown(projectId: string, dimension: Exclude<Dimension, "child">, entriesMax: number): Breakdown {
    const rows = readOrUnavailable(() => this.#statements.selectBreakdown[dimension].all(projectId, entriesMax + 1) as BreakdownRow[]);
    return {
      dimension,
      truncated: rows.length > entriesMax,
      entries: rows.slice(0, entriesMax).map((row) => ({
        key: row.label,
        totalCostNanos: row.total_cost_nanos,
        inputTokens: row.input_tokens,
        outputTokens: row.output_tokens,
        recordCount: row.record_count,
        catalogCostNanos: row.catalog_cost_nanos,
        pricedCostNanos: row.priced_cost_nanos,
        unpricedRecordCount: row.unpriced_record_count,
      })),
    };
  }

  listCostRecords(query: CostRecordQuery): CostRecordView[] {
    const rows = readOrUnavailable(
      () =>
        this.#statements.listRecords.all({
          projectId: query.projectId,
          startMs: query.startMs ?? Number.MIN_SAFE_INTEGER,
          endMs: query.endMs ?? Number.MAX_SAFE_INTEGER,
          afterMs: query.after?.recordedAtMs ?? Number.MIN_SAFE_INTEGER,
          afterId: query.after?.id ?? -1n,
          limit: query.limit,
        }) as Array<RecordRow & { id: bigint }>,
    );
    return rows.map(recordViewFromRow);
  }

  getHold(holdId: string): Hold | null {
    const row = readOrUnavailable(() => this.#statements.selectHold.get(holdId) as HoldRow | undefined);
    return row === undefined ? null : holdFromRow(row);
  }

  listProjects(query: ProjectListQuery, nowMs: number): ProjectEntry[] {
    return readOrUnavailable(() => this.#listProjects(query, nowMs));
  }

  #listProjects(query: ProjectListQuery, nowMs: number): ProjectEntry[] {
    const s = this.#statements;
    const afterId = query.after?.projectId ?? "";
    const archived = query.includeArchived === true ? 1 : 0;
    const rows = (
      query.order === ProjectOrder.projectId
        ? s.listById.all({ afterId, limit: query.limit, archived })
        : s.listBySpent.all({
            first: query.after === null ? 1 : 0,
            afterSpent: query.after?.spentNanos ?? 0n,
            afterId,
            limit: query.limit,
            archived,
          })
    ) as Array<{ project_id: string }>;
    // Active holds of the page in one statement (the rule of the ledger's
    // activeHolds, in SQL).
    const reserved = new Map<string, { reserved_nanos: bigint; hold_count: bigint }>();
    if (rows.length > 0) {
      const found = s.reservationsOf.all({ ids: JSON.stringify(rows.map((row) => row.project_id)), nowMs }) as Array<{
        project_id: string;
        reserved_nanos: bigint;
        hold_count: bigint;
      }>;
      for (const row of found) reserved.set(row.project_id, row);
    }
    return rows.map(({ project_id: projectId }) => {
      const budget = s.selectBudget.get(projectId) as BudgetRow | undefined;
      const totals = s.selectTotals.get(projectId) as TotalsRow | undefined;
      const holds = reserved.get(projectId);
      return {
        budget: budget === undefined ? unsetBudget(projectId) : budgetFromRow(budget),
        totals: totals === undefined ? zeroTotals(projectId) : totalsFromRow(totals),
        reservedNanos: holds?.reserved_nanos ?? 0n,
        activeHoldCount: holds?.hold_count ?? 0n,
        archivedAtMs: this.#removal.archivedAtMs(projectId),
      };
    });
  }

  reservedByCurrency(nowMs: number): CurrencyReserved[] {
    const s = this.#statements;
    const [all, others, expired] = readOrUnavailable(
      () =>
        [
          s.reservedAll.get() as { reserved: number; holds: number },
          s.reservedOtherCurrencies.all() as Array<{ currency: string; reserved: number; holds: number }>,
          s.expiredByCurrency.all(nowMs) as Array<{ currency: string; reserved: number; holds: bigint }>,
        ] as const,
    );
    // Hold rows (expired ones included) per currency; the default currency's
    // share is the difference.
    const perCurrency = new Map<string, CurrencyReserved>([
      [currencyDefault, { currency: currencyDefault, reservedNanos: all.reserved, activeHolds: all.holds }],
    ]);
    for (const row of others) {
      const base = perCurrency.get(currencyDefault)!;
      base.reservedNanos -= row.reserved;
      base.activeHolds -= row.holds;
      perCurrency.set(row.currency, { currency: row.currency, reservedNanos: row.reserved, activeHolds: row.holds });
    }
    const result: CurrencyReserved[] = [];
    for (const entry of perCurrency.values()) {
      if (entry.activeHolds <= 0) continue; // no hold rows in this currency
      const gone = expired.find((row) => row.currency === entry.currency);
      // Float differences of int64 sums: clamp rounding below zero away.
      result.push({
        currency: entry.currency,
        reservedNanos: Math.max(0, entry.reservedNanos - (gone?.reserved ?? 0)),
        activeHolds: Math.max(0, entry.activeHolds - Number(gone?.holds ?? 0n)),
      });
    }
    return result.sort(byCurrency);
  }

  spendByCurrency(): CurrencySpend[] {
    const [all, others] = readOrUnavailable(
      () =>
        [
          this.#statements.spendAll.get() as { spent: number; projects: bigint },
          this.#statements.spendOtherCurrencies.all() as Array<{ currency: string; spent: number; projects: bigint }>,
        ] as const,
    );
    const defaultCurrency: CurrencySpend = { currency: currencyDefault, totalCostNanos: all.spent, projects: Number(all.projects) };
    const result: CurrencySpend[] = [];
    for (const row of others) {
      defaultCurrency.totalCostNanos -= row.spent;
      defaultCurrency.projects -= Number(row.projects);
      result.push({ currency: row.currency, totalCostNanos: row.spent, projects: Number(row.projects) });
    }
    if (defaultCurrency.projects > 0) result.push({ ...defaultCurrency, totalCostNanos: Math.max(0, defaultCurrency.totalCostNanos) });
    return result.sort(byCurrency);
  }
}
