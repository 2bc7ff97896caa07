// The BudgetService handlers: validate, call the ledger, map results and
// errors. Nothing else lives here (logging and limits are interceptors and
// server options).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  BudgetDecisionReason,
  type BudgetService,
  CheckBudgetResponseSchema,
  GetProjectBudgetResponseSchema,
  GetProjectCostResponseSchema,
  ListProjectsResponseSchema,
  ProjectOrder as ProjectOrderProto,
  ProjectSummarySchema,
  ProjectBudgetSchema,
  ProjectCostSchema,
  RecordCostResponseSchema,
  SetProjectBudgetResponseSchema,
  type CheckBudgetRequest,
  type CheckBudgetResponse,
  type GetProjectBudgetRequest,
  type GetProjectBudgetResponse,
  type GetProjectCostRequest,
  type GetProjectCostResponse,
  type ListProjectsRequest,
  type ListProjectsResponse,
  type ProjectBudget,
  type ProjectCost,
  type RecordCostRequest,
  type RecordCostResponse,
  type SetProjectBudgetRequest,
  type SetProjectBudgetResponse,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { DecisionReason } from "../ledger/budget.ts";
import type { Ledger } from "../ledger/ledger.ts";
import { limitUsedBasisPoints, ProjectOrder } from "../ledger/projects.ts";
import { listProjectsPageSizeDefault, listProjectsPageSizeMax } from "../limits.ts";
import type { Budget, ProjectTotals } from "../ledger/types.ts";
import { toConnectError } from "./errors.ts";
import { decodePageToken, encodePageToken } from "./page-token.ts";
import { invalidArgument, nonNegative, optionalCurrency, optionalId, optionalModel, requireId } from "./validate.ts";

const reasonToProto = {
  [DecisionReason.noLimit]: BudgetDecisionReason.NO_LIMIT,
  [DecisionReason.withinBudget]: BudgetDecisionReason.WITHIN_BUDGET,
  [DecisionReason.exceedsRemaining]: BudgetDecisionReason.EXCEEDS_REMAINING,
  [DecisionReason.exhausted]: BudgetDecisionReason.EXHAUSTED,
} as const;

export class BudgetServiceHandler implements ServiceImpl<typeof BudgetService> {
  readonly #ledger: Ledger;

  constructor(ledger: Ledger) {
    this.#ledger = ledger;
  }

  async recordCost(req: RecordCostRequest, ctx: HandlerContext): Promise<RecordCostResponse> {
    const entry = {
      projectId: requireId("project_id", req.projectId),
      costNanos: nonNegative("cost_nanos", req.costNanos),
      inputTokens: nonNegative("input_tokens", req.inputTokens),
      outputTokens: nonNegative("output_tokens", req.outputTokens),
      agentId: optionalId("agent_id", req.agentId),
      model: optionalModel("model", req.model),
      requestId: optionalId("request_id", req.requestId),
    };
    try {
      const outcome = await this.#ledger.recordCost(entry, ctx.signal);
      return create(RecordCostResponseSchema, {
        projectCost: projectCostMessage(outcome.totals),
        duplicate: outcome.duplicate,
        requestId: outcome.requestId,
      });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async getProjectCost(req: GetProjectCostRequest): Promise<GetProjectCostResponse> {
    const projectId = requireId("project_id", req.projectId);
    try {
      return create(GetProjectCostResponseSchema, { projectCost: projectCostMessage(await this.#ledger.getProjectCost(projectId)) });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async checkBudget(req: CheckBudgetRequest): Promise<CheckBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    const estimatedCostNanos = nonNegative("estimated_cost_nanos", req.estimatedCostNanos);
    try {
      const { decision, currency } = await this.#ledger.checkBudget(projectId, estimatedCostNanos);
      return create(CheckBudgetResponseSchema, {
        allowed: decision.allowed,
        limitNanos: decision.limitNanos,
        spentNanos: decision.spentNanos,
        remainingNanos: decision.remainingNanos,
        reason: reasonToProto[decision.reason],
        estimatedCostNanos,
        currency,
      });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async setProjectBudget(req: SetProjectBudgetRequest, ctx: HandlerContext): Promise<SetProjectBudgetResponse> {
    const change = {
      projectId: requireId("project_id", req.projectId),
      limitNanos: nonNegative("limit_nanos", req.limitNanos),
      currency: optionalCurrency("currency", req.currency),
    };
    try {
      return create(SetProjectBudgetResponseSchema, { budget: projectBudgetMessage(await this.#ledger.setProjectBudget(change, ctx.signal)) });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async getProjectBudget(req: GetProjectBudgetRequest): Promise<GetProjectBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    try {
      return create(GetProjectBudgetResponseSchema, { budget: projectBudgetMessage(await this.#ledger.getProjectBudget(projectId)) });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async listProjects(req: ListProjectsRequest): Promise<ListProjectsResponse> {
    if (req.pageSize < 0) throw invalidArgument(`page_size must be >= 0 (0 asks for the default ${listProjectsPageSizeDefault}), got ${req.pageSize}`);
    // AIP-158: a page size above the maximum is served at the maximum.
    const limit = req.pageSize === 0 ? listProjectsPageSizeDefault : Math.min(req.pageSize, listProjectsPageSizeMax);
    const order = orderFromProto(req.order);
    const after = decodePageToken(req.pageToken, order);
    try {
      const page = await this.#ledger.listProjects({ order, after, limit });
      return create(ListProjectsResponseSchema, {
        projects: page.entries.map(({ totals, budget }) =>
          create(ProjectSummarySchema, {
            projectId: totals.projectId,
            cost: projectCostMessage(totals),
            budget: projectBudgetMessage(budget),
            limitUsedBasisPoints: limitUsedBasisPoints(totals.totalCostNanos, budget.limitNanos),
          }),
        ),
        nextPageToken: page.next === null ? "" : encodePageToken(order, page.next),
      });
    } catch (error) {
      throw toConnectError(error);
    }
  }
}

function orderFromProto(order: ProjectOrderProto): ProjectOrder {
  switch (order) {
    case ProjectOrderProto.UNSPECIFIED:
    case ProjectOrderProto.PROJECT_ID:
      return ProjectOrder.projectId;
    case ProjectOrderProto.SPENT_DESC:
      return ProjectOrder.spentDesc;
    default:
      throw invalidArgument(`order ${String(order)} is not a ProjectOrder (PROJECT_ORDER_PROJECT_ID = 1, PROJECT_ORDER_SPENT_DESC = 2)`);
  }
}

function projectCostMessage(totals: ProjectTotals): ProjectCost {
  return create(ProjectCostSchema, {
    projectId: totals.projectId,
    totalCostNanos: totals.totalCostNanos,
    inputTokens: totals.inputTokens,
    outputTokens: totals.outputTokens,
    recordCount: totals.recordCount,
    updatedAt: totals.updatedAtMs === null ? undefined : timestampFromMs(totals.updatedAtMs),
  });
}

function projectBudgetMessage(budget: Budget): ProjectBudget {
  return create(ProjectBudgetSchema, {
    projectId: budget.projectId,
    limitNanos: budget.limitNanos,
    currency: budget.currency,
    configured: budget.configured,
    updatedAt: budget.updatedAtMs === null ? undefined : timestampFromMs(budget.updatedAtMs),
  });
}
