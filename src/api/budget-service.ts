// The BudgetService handlers: validate, call the ledger, map results and
// errors. Nothing else lives here (logging and limits are interceptors and
// server options).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  BreakdownDimension,
  BudgetDecisionReason,
  BudgetEventKind,
  BudgetEventSchema,
  type BudgetService,
  BudgetThresholdSchema,
  BudgetWindow,
  CheckBudgetResponseSchema,
  CostBreakdownSchema,
  CostRecordSchema,
  GetProjectBudgetResponseSchema,
  GetProjectCostResponseSchema,
  ListProjectsResponseSchema,
  ProjectOrder as ProjectOrderProto,
  ProjectSummarySchema,
  LimitStatusSchema,
  ListCostRecordsResponseSchema,
  PeriodCostSchema,
  ProjectBudgetSchema,
  ProjectCostSchema,
  RecordCostResponseSchema,
  ReleaseHoldResponseSchema,
  SetProjectBudgetResponseSchema,
  WatchBudgetResponseSchema,
  type BudgetEvent as BudgetEventMessage,
  type BudgetThreshold,
  type CheckBudgetRequest,
  type CheckBudgetResponse,
  type GetProjectBudgetRequest,
  type GetProjectBudgetResponse,
  type GetProjectCostRequest,
  type GetProjectCostResponse,
  type ListProjectsRequest,
  type ListProjectsResponse,
  type ListCostRecordsRequest,
  type ListCostRecordsResponse,
  type PeriodCost,
  type ProjectBudget,
  type ProjectCost,
  type RecordCostRequest,
  type RecordCostResponse,
  type ReleaseHoldRequest,
  type ReleaseHoldResponse,
  type SetProjectBudgetRequest,
  type SetProjectBudgetResponse,
  type WatchBudgetRequest,
  type WatchBudgetResponse,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { breakdownEntriesMax } from "../limits.ts";
import { DecisionReason } from "../ledger/budget.ts";
import type { Ledger, ThresholdReached } from "../ledger/ledger.ts";
import { limitUsedBasisPoints, ProjectOrder } from "../ledger/projects.ts";
import { listProjectsPageSizeDefault, listProjectsPageSizeMax } from "../limits.ts";
import { Dimension, Window, type Budget, type BudgetState, type PeriodTotals, type ProjectTotals } from "../ledger/types.ts";
import { principalKey } from "./auth.ts";
import { toConnectError } from "./errors.ts";
import { decodePageToken, encodePageToken } from "./page-token.ts";
import type { BudgetEvent } from "../ledger/events.ts";
import { decodePageToken as decodeCostRecordPageToken, encodePageToken as encodeCostRecordPageToken } from "./cost-record-page-token.ts";
import {
  alertThresholds,
  invalidArgument,
  holdTtlMs,
  nonNegative,
  optionalCurrency,
  optionalId,
  optionalModel,
  optionalNonNegative,
  optionalTimestampMs,
  optionalTimeZone,
  costRecordsPageSize,
  requireId,
} from "./validate.ts";

export const reasonToProto = {
  [DecisionReason.noLimit]: BudgetDecisionReason.NO_LIMIT,
  [DecisionReason.withinBudget]: BudgetDecisionReason.WITHIN_BUDGET,
  [DecisionReason.exceedsRemaining]: BudgetDecisionReason.EXCEEDS_REMAINING,
  [DecisionReason.exhausted]: BudgetDecisionReason.EXHAUSTED,
  [DecisionReason.fullyReserved]: BudgetDecisionReason.FULLY_RESERVED,
} as const;

const windowToProto = {
  [Window.lifetime]: BudgetWindow.LIFETIME,
  [Window.day]: BudgetWindow.DAY,
  [Window.month]: BudgetWindow.MONTH,
} as const;

const dimensionFromProto: Partial<Record<BreakdownDimension, Dimension>> = {
  [BreakdownDimension.AGENT]: Dimension.agent,
  [BreakdownDimension.MODEL]: Dimension.model,
};
const dimensionToProto = { [Dimension.agent]: BreakdownDimension.AGENT, [Dimension.model]: BreakdownDimension.MODEL } as const;

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
      holdId: optionalId("hold_id", req.holdId),
    };
    try {
      const outcome = await this.#ledger.recordCost(entry, ctx.signal);
      return create(RecordCostResponseSchema, {
        projectCost: projectCostMessage(outcome.totals),
        duplicate: outcome.duplicate,
        requestId: outcome.requestId,
        thresholdsCrossed: outcome.crossings.map(thresholdMessage),
        settledHoldNanos: outcome.settledHoldNanos,
      });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async getProjectCost(req: GetProjectCostRequest): Promise<GetProjectCostResponse> {
    const projectId = requireId("project_id", req.projectId);
    const dimensions: Dimension[] = [];
    for (const value of req.breakdownBy) {
      const dimension = dimensionFromProto[value];
      if (dimension === undefined) throw new ConnectError(`breakdown_by ${value} is not a dimension (use BREAKDOWN_DIMENSION_AGENT or BREAKDOWN_DIMENSION_MODEL)`, Code.InvalidArgument);
      if (dimensions.includes(dimension)) throw new ConnectError(`breakdown_by lists the ${dimension} dimension twice`, Code.InvalidArgument);
      dimensions.push(dimension);
    }
    try {
      const { state, breakdowns } = await this.#ledger.getCostReport(projectId, dimensions, breakdownEntriesMax);
      return create(GetProjectCostResponseSchema, {
        projectCost: projectCostMessage(state.totals, state),
        currentDay: periodMessage(state.day),
        currentMonth: periodMessage(state.month),
        breakdowns: breakdowns.map((b) =>
          create(CostBreakdownSchema, { dimension: dimensionToProto[b.dimension], truncated: b.truncated, entries: b.entries }),
        ),
      });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async checkBudget(req: CheckBudgetRequest, ctx?: HandlerContext): Promise<CheckBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    const estimatedCostNanos = nonNegative("estimated_cost_nanos", req.estimatedCostNanos);
    const ttlMs = holdTtlMs("hold_ttl", req.holdTtl, req.reserve);
    const requestId = optionalId("request_id", req.requestId);
    if (requestId !== "" && !req.reserve) throw invalidArgument("request_id applies only with reserve = true (a check without reserve is a read: retry it freely)");
    // Connect GET is meant for cacheable reads; a reservation is a write.
    if (req.reserve && ctx?.requestMethod === "GET") {
      throw new ConnectError("reserve = true places a hold (a write): send CheckBudget with POST, not Connect GET", Code.InvalidArgument);
    }
    try {
      const outcome = await this.#ledger.checkBudget(projectId, estimatedCostNanos, req.reserve ? { ttlMs, requestId } : null, ctx?.signal);
      const { decision, windowed, hold } = outcome;
      return create(CheckBudgetResponseSchema, {
        allowed: decision.allowed,
        limitNanos: decision.limitNanos,
        spentNanos: decision.spentNanos,
        remainingNanos: decision.remainingNanos,
        reason: reasonToProto[decision.reason],
        estimatedCostNanos,
        currency: outcome.currency,
        reservedNanos: windowed.reservedNanos,
        holdId: hold?.holdId ?? "",
        holdExpiresAt: hold === null ? undefined : timestampFromMs(hold.expiresAtMs),
        decidedBy: windowed.decidedBy === null ? BudgetWindow.UNSPECIFIED : windowToProto[windowed.decidedBy],
        limits: windowed.limits.map((limit) =>
          create(LimitStatusSchema, {
            window: windowToProto[limit.window],
            period: limit.period,
            limitNanos: limit.limitNanos,
            spentNanos: limit.spentNanos,
            reservedNanos: limit.reservedNanos,
            remainingNanos: limit.remainingNanos,
            allowed: limit.allowed,
            reason: reasonToProto[limit.reason],
          }),
        ),
        thresholdsReached: outcome.thresholdsReached.map(thresholdMessage),
        duplicate: outcome.duplicate,
      });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async releaseHold(req: ReleaseHoldRequest, ctx?: HandlerContext): Promise<ReleaseHoldResponse> {
    const projectId = requireId("project_id", req.projectId);
    const holdId = requireId("hold_id", req.holdId);
    try {
      const hold = await this.#ledger.releaseHold(projectId, holdId, ctx?.signal);
      return create(ReleaseHoldResponseSchema, { holdId: hold.holdId, projectId: hold.projectId, releasedNanos: hold.amountNanos });
    } catch (error) {
      throw toConnectError(error);
    }
  }

  async *watchBudget(req: WatchBudgetRequest, ctx?: HandlerContext): AsyncGenerator<WatchBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    let start;
    try {
      // Each key gets its share of the server's watch slots (open mode: no keys, no shares).
      start = await this.#ledger.watch(projectId, ctx?.values.get(principalKey)?.keyId ?? null);
    } catch (error) {
      throw toConnectError(error);
    }
    const { subscription, snapshot, atMs } = start;
    try {
      yield create(WatchBudgetResponseSchema, {
        event: create(BudgetEventSchema, {
          kind: BudgetEventKind.SNAPSHOT,
          projectId,
          occurredAt: timestampFromMs(atMs),
          budget: projectBudgetMessage(snapshot.budget),
          projectCost: projectCostMessage(snapshot.totals, snapshot),
        }),
      });
      for (;;) {
        const event = await subscription.next(ctx?.signal);
        if (event === null) return; // the client went away
        yield create(WatchBudgetResponseSchema, { event: eventMessage(event) });
      }
    } catch (error) {
      throw toConnectError(error);
    } finally {
      subscription.close();
    }
  }

  async listCostRecords(req: ListCostRecordsRequest): Promise<ListCostRecordsResponse> {
    const projectId = requireId("project_id", req.projectId);
    const startMs = optionalTimestampMs("start_time", req.startTime);
    const endMs = optionalTimestampMs("end_time", req.endTime);
    if (startMs !== null && endMs !== null && startMs > endMs) throw new ConnectError("start_time is after end_time", Code.InvalidArgument);
    const limit = costRecordsPageSize("page_size", req.pageSize);
    const query = { projectId, startMs, endMs };
    const after = decodeCostRecordPageToken("page_token", req.pageToken, query);
    try {
      // One more than a page tells whether another page follows.
      const rows = await this.#ledger.listCostRecords({ ...query, after, limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return create(ListCostRecordsResponseSchema, {
        records: page.map((r) =>
          create(CostRecordSchema, {
            requestId: r.requestId,
            costNanos: r.costNanos,
            inputTokens: r.inputTokens,
            outputTokens: r.outputTokens,
            agentId: r.agentId,
            model: r.model,
            holdId: r.holdId,
            recordedAt: timestampFromMs(r.recordedAtMs),
            totalCostNanosAfter: r.totalCostNanosAfter,
          }),
        ),
        nextPageToken: rows.length > limit && last !== undefined ? encodeCostRecordPageToken(query, { recordedAtMs: last.recordedAtMs, id: last.id }) : "",
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
      dailyLimitNanos: optionalNonNegative("daily_limit_nanos", req.dailyLimitNanos),
      monthlyLimitNanos: optionalNonNegative("monthly_limit_nanos", req.monthlyLimitNanos),
      timeZone: optionalTimeZone("time_zone", req.timeZone),
      alertThresholdsBps: req.alertThresholds === undefined ? null : alertThresholds("alert_thresholds.basis_points", req.alertThresholds.basisPoints),
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
        projects: page.entries.map(({ totals, budget, reservedNanos, activeHoldCount }) =>
          create(ProjectSummarySchema, {
            projectId: totals.projectId,
            cost: projectCostMessage(totals, { reservedNanos, activeHoldCount }),
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

/** Lifetime totals; with `holds`, also the project's active holds. */
function projectCostMessage(totals: ProjectTotals, holds?: Pick<BudgetState, "reservedNanos" | "activeHoldCount">): ProjectCost {
  return create(ProjectCostSchema, {
    projectId: totals.projectId,
    totalCostNanos: totals.totalCostNanos,
    inputTokens: totals.inputTokens,
    outputTokens: totals.outputTokens,
    recordCount: totals.recordCount,
    updatedAt: totals.updatedAtMs === null ? undefined : timestampFromMs(totals.updatedAtMs),
    reservedNanos: holds?.reservedNanos ?? 0n,
    activeHoldCount: holds?.activeHoldCount ?? 0n,
  });
}

function periodMessage(period: PeriodTotals): PeriodCost {
  return create(PeriodCostSchema, {
    window: windowToProto[period.window],
    period: period.period,
    timeZone: period.timeZone,
    totalCostNanos: period.totalCostNanos,
    inputTokens: period.inputTokens,
    outputTokens: period.outputTokens,
    recordCount: period.recordCount,
  });
}

function thresholdMessage(t: ThresholdReached): BudgetThreshold {
  return create(BudgetThresholdSchema, {
    window: windowToProto[t.window],
    period: t.period,
    thresholdBps: t.thresholdBps,
    limitNanos: t.limitNanos,
    spentNanos: t.spentNanos,
  });
}

function eventMessage(event: BudgetEvent): BudgetEventMessage {
  const base = { projectId: event.projectId, occurredAt: timestampFromMs(event.atMs) };
  if (event.kind === "limit_changed") {
    return create(BudgetEventSchema, { ...base, kind: BudgetEventKind.LIMIT_CHANGED, budget: projectBudgetMessage(event.budget) });
  }
  return create(BudgetEventSchema, {
    ...base,
    kind: event.kind === "exhausted" ? BudgetEventKind.EXHAUSTED : BudgetEventKind.THRESHOLD_CROSSED,
    threshold: thresholdMessage(event.crossing),
    requestId: event.crossing.requestId,
  });
}

function projectBudgetMessage(budget: Budget): ProjectBudget {
  return create(ProjectBudgetSchema, {
    projectId: budget.projectId,
    limitNanos: budget.limitNanos,
    currency: budget.currency,
    configured: budget.configured,
    updatedAt: budget.updatedAtMs === null ? undefined : timestampFromMs(budget.updatedAtMs),
    dailyLimitNanos: budget.dailyLimitNanos,
    monthlyLimitNanos: budget.monthlyLimitNanos,
    timeZone: budget.timeZone,
    alertThresholdsBps: budget.alertThresholdsBps,
  });
}
