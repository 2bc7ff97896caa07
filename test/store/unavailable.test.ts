// A database that cannot serve a read is UNAVAILABLE to the caller (retry
// later), like a failed write; never INTERNAL. Both drivers raise
// StoreUnavailableError for it, and the API maps that to UNAVAILABLE.
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { toConnectError } from "../../src/api/errors.ts";
import { StoreUnavailableError } from "../../src/ledger/errors.ts";
import { ProjectOrder } from "../../src/ledger/projects.ts";
import { initORM } from "../../src/store/orm.ts";
import { isPostgresUnavailable } from "../../src/store/postgres/errors.ts";

describe("unavailable database", () => {
  it("maps read and write failures of the store to UNAVAILABLE, with messages that say which", () => {
    const read = toConnectError(new StoreUnavailableError(new Error("connection terminated"), "read"));
    expect(read.code).toBe(Code.Unavailable);
    expect(read.rawMessage).toMatch(/could not be read \(connection terminated\)/);
    const write = toConnectError(new StoreUnavailableError(new Error("disk I/O error")));
    expect(write.code).toBe(Code.Unavailable);
    expect(write.rawMessage).toMatch(/nothing was written, retry with the same request_id/);
  });

  it("turns SQLite read failures into StoreUnavailableError", async () => {
    const { store } = await initORM("sqlite::memory:");
    await store.close();
    await expect(store.getTotals("p")).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(store.getBudgetAndTotals("p")).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it("turns every SQLite read a closed database cannot serve into StoreUnavailableError, as PostgreSQL's reads do", async () => {
    const { store } = await initORM("sqlite::memory:");
    await store.close();
    const reads: Array<[string, () => Promise<unknown>]> = [
      ["getBudget", () => store.getBudget("p")],
      ["getBudgetState", () => store.getBudgetState("p", Date.now())],
      ["getBreakdown", () => store.getBreakdown("p", "agent", 10)],
      ["listCostRecords", () => store.listCostRecords({ projectId: "p", startMs: null, endMs: null, after: null, limit: 10 })],
      ["getHold", () => store.getHold("h")],
      ["listProjects", () => store.listProjects({ order: ProjectOrder.projectId, after: null, limit: 10 }, Date.now())],
      ["spendByCurrency", () => store.spendByCurrency()],
      ["reservedByCurrency", () => store.reservedByCurrency(Date.now())],
    ];
    for (const [name, read] of reads) {
      await expect(read(), name).rejects.toBeInstanceOf(StoreUnavailableError);
    }
  });

  it("classifies PostgreSQL errors: connection and server-state errors are unavailable, bugs are not", () => {
    const pgError = (code: string, message = "x") => Object.assign(new Error(message), { code });
    for (const code of ["ECONNREFUSED", "ECONNRESET", "08006", "57P01", "57P03", "57014", "53300", "40001", "40P01", "55P03", "25P03"]) {
      expect(isPostgresUnavailable(pgError(code)), code).toBe(true);
    }
    expect(isPostgresUnavailable(new Error("Connection terminated unexpectedly"))).toBe(true);
    expect(isPostgresUnavailable(new Error("timeout exceeded when trying to connect"))).toBe(true);
    for (const code of ["42601", "42P01", "23505", "22003", "28P01", "3D000"]) {
      expect(isPostgresUnavailable(pgError(code)), code).toBe(false);
    }
    expect(isPostgresUnavailable(new TypeError("x is undefined"))).toBe(false);
  });
});
