// What the three-depth service suites share for their first depth: the
// handler class over its own database, and a client interface that calls it
// with no transport at all (test/api/budget-service.test.ts,
// holds-windows-service.test.ts).
import { create } from "@bufbuild/protobuf";
import { createHandlerContext, type CallOptions } from "@connectrpc/connect";
import {
  ArchiveProjectRequestSchema,
  BudgetService,
  CheckBudgetRequestSchema,
  DeleteProjectRequestSchema,
  UnarchiveProjectRequestSchema,
  GetProjectBudgetRequestSchema,
  GetProjectCostRequestSchema,
  ListCostRecordsRequestSchema,
  ListProjectsRequestSchema,
  RecordCostRequestSchema,
  ReleaseHoldRequestSchema,
  SetProjectBudgetRequestSchema,
  WatchBudgetRequestSchema,
  SetModelPriceRequestSchema,
  ListModelPricesRequestSchema,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import type { BudgetServiceHandler } from "../../src/api/budget-service.ts";
import { withErrorMapping } from "../../src/api/errors.ts";
import { Ledger } from "../../src/ledger/ledger.ts";
import { UnitOfWork } from "../../src/ledger/unit-of-work.ts";
import { initORM, type InitializedStore } from "../../src/store/orm.ts";
import type { BudgetClient } from "../helpers.ts";

/** A ledger on its own store; `now` drives every decision and write when given. */
export async function memoryLedger(databaseUrl: string, now?: () => number): Promise<{ ledger: Ledger; init: InitializedStore }> {
  const init = await initORM(databaseUrl);
  const uow = new UnitOfWork(init.store, { batchSizeMax: 64, queueDepthMax: 1024, now });
  return { ledger: new Ledger(init.store, uow, { now, prices: init.prices }), init };
}

/** The handler class behind the client interface, called with no transport at
 * all, through the one error table every transport also uses. */
export function classClient(unmapped: BudgetServiceHandler): BudgetClient {
  const handler = withErrorMapping(BudgetService, unmapped);
  const ctx = (name: string, options?: CallOptions) =>
    createHandlerContext({
      service: BudgetService,
      method: BudgetService.method[name as keyof typeof BudgetService.method],
      protocolName: "in-process",
      requestMethod: "POST",
      url: `in-process://tally.budget.v1.BudgetService/${name}`,
      requestSignal: options?.signal ?? undefined,
    });
  return {
    recordCost: (init, o) => handler.recordCost(create(RecordCostRequestSchema, init), ctx("recordCost", o)),
    getProjectCost: (init) => handler.getProjectCost(create(GetProjectCostRequestSchema, init)),
    checkBudget: (init, o) => handler.checkBudget(create(CheckBudgetRequestSchema, init), ctx("checkBudget", o)),
    setProjectBudget: (init, o) => handler.setProjectBudget(create(SetProjectBudgetRequestSchema, init), ctx("setProjectBudget", o)),
    getProjectBudget: (init) => handler.getProjectBudget(create(GetProjectBudgetRequestSchema, init)),
    releaseHold: (init, o) => handler.releaseHold(create(ReleaseHoldRequestSchema, init), ctx("releaseHold", o)),
    watchBudget: (init, o) => handler.watchBudget(create(WatchBudgetRequestSchema, init), ctx("watchBudget", o)),
    listCostRecords: (init) => handler.listCostRecords(create(ListCostRecordsRequestSchema, init)),
    listProjects: (init) => handler.listProjects(create(ListProjectsRequestSchema, init)),
    archiveProject: (init, o) => handler.archiveProject(create(ArchiveProjectRequestSchema, init), ctx("archiveProject", o)),
    unarchiveProject: (init, o) => handler.unarchiveProject(create(UnarchiveProjectRequestSchema, init), ctx("unarchiveProject", o)),
    deleteProject: (init, o) => handler.deleteProject(create(DeleteProjectRequestSchema, init), ctx("deleteProject", o)),
    setModelPrice: (init) => handler.setModelPrice(create(SetModelPriceRequestSchema, init)),
    listModelPrices: (init) => handler.listModelPrices(create(ListModelPricesRequestSchema, init)),
  } as BudgetClient;
}
