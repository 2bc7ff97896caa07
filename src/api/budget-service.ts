// The BudgetService handlers: validate, call the ledger, map results and
// errors. Nothing else lives here (logging and limits are interceptors and
// server options).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  BudgetEventKind,
  BudgetEventSchema,
  type BudgetService,
  BudgetWindow,
  CheckBudgetResponseSchema,
  CostBreakdownSchema,
  CostRecordSchema,
  GetProjectBudgetResponseSchema,
  GetProjectCostResponseSchema,
  ListProjectsResponseSchema,
  ArchiveProjectResponseSchema,
  DeleteProjectResponseSchema,
  UnarchiveProjectResponseSchema,
  type ArchiveProjectRequest,
  type ArchiveProjectResponse,
  type DeleteProjectRequest,
  type DeleteProjectResponse,
  type UnarchiveProjectRequest,
  type UnarchiveProjectResponse,
  ProjectSummarySchema,
  ListCostRecordsResponseSchema,
  RecordCostResponseSchema,
  ReleaseHoldResponseSchema,
  SetProjectBudgetResponseSchema,
  WatchBudgetResponseSchema,
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
  type RecordCostRequest,
  type RecordCostResponse,
  type ReleaseHoldRequest,
  type ReleaseHoldResponse,
  type SetProjectBudgetRequest,
  type SetProjectBudgetResponse,
  type WatchBudgetRequest,
  type WatchBudgetResponse,
  type ListModelPricesRequest,
  type ListModelPricesResponse,
  type SetModelPriceRequest,
  type SetModelPriceResponse,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { breakdownEntriesMax } from "../limits.ts";
import type { Ledger } from "../ledger/ledger.ts";
import { limitUsedBasisPoints } from "../ledger/projects.ts";
import { listProjectsPageSizeDefault, listProjectsPageSizeMax } from "../limits.ts";
import type { Dimension } from "../ledger/types.ts";
import { principalKey } from "../auth/auth.ts";
import { costRecordPricing, recordPricingAnswer, recordPricingFields } from "./record-pricing.ts";
import { adviceFields, listModelPrices, setModelPrice, tokenCheckOf, tokenEstimates, tokenFingerprint } from "./prices-service.ts";
import { decodePageToken, encodePageToken } from "./page-token.ts";
import {
  checkAgentIdOf,
  levelWindowToProto,
  nestedDecisionFields,
  nestedReasonToProto,
  nestingChangeOf,
  refuseUnstoredDimension,
  refuseUnstoredNesting,
} from "./nesting-fields.ts";
import { decodePageToken as decodeCostRecordPageToken, encodePageToken as encodeCostRecordPageToken } from "./cost-record-page-token.ts";
import {
  budgetWarningMessage,
  dimensionFromProto,
  dimensionToProto,
  eventMessage,
  limitStatusMessage,
  orderFromProto,
  periodMessage,
  projectBudgetMessage,
  projectCostMessage,
  reasonToProto,
  thresholdMessage,
  windowToProto,
} from "./messages.ts";
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

/** For callers that map decisions themselves (bench's comparison servers). */
export { reasonToProto };

export class BudgetServiceHandler implements ServiceImpl<typeof BudgetService> {
  readonly #ledger: Ledger;

  constructor(ledger: Ledger) {
    this.#ledger = ledger;
  }

  async recordCost(req: RecordCostRequest, ctx: HandlerContext): Promise<RecordCostResponse> {
    const entry = {
      ...recordPricingFields(req),
      projectId: requireId("project_id", req.projectId),
      costNanos: nonNegative("cost_nanos", req.costNanos),
      inputTokens: nonNegative("input_tokens", req.inputTokens),
      outputTokens: nonNegative("output_tokens", req.outputTokens),
      agentId: optionalId("agent_id", req.agentId),
      model: optionalModel("model", req.model),
      requestId: optionalId("request_id", req.requestId),
      holdId: optionalId("hold_id", req.holdId),
    };
    const outcome = await this.#ledger.recordCost(entry, ctx.signal);
    return create(RecordCostResponseSchema, {
      projectCost: projectCostMessage(outcome.totals),
      duplicate: outcome.duplicate,
      requestId: outcome.requestId,
      thresholdsCrossed: outcome.crossings.map(thresholdMessage),
      settledHoldNanos: outcome.settledHoldNanos,
      ...recordPricingAnswer(outcome),
    });
  }

  async getProjectCost(req: GetProjectCostRequest): Promise<GetProjectCostResponse> {
    const projectId = requireId("project_id", req.projectId);
    const dimensions: Dimension[] = [];
    for (const value of req.breakdownBy) {
      if (!this.#ledger.treesStored) refuseUnstoredDimension(value);
      const dimension = dimensionFromProto[value];
      if (dimension === undefined)
        throw new ConnectError(
          `breakdown_by ${value} is not a dimension (use BREAKDOWN_DIMENSION_AGENT, BREAKDOWN_DIMENSION_MODEL or BREAKDOWN_DIMENSION_CHILD)`,
          Code.InvalidArgument,
        );
      if (dimensions.includes(dimension))
        throw new ConnectError(`breakdown_by lists the ${dimension} dimension twice`, Code.InvalidArgument);
      dimensions.push(dimension);
    }
    const { state, breakdowns, own } = await this.#ledger.getCostReport(projectId, dimensions, breakdownEntriesMax);
    return create(GetProjectCostResponseSchema, {
      projectCost: projectCostMessage(state.totals, state),
      ownCost: projectCostMessage(own),
      currentDay: periodMessage(state.day),
      currentMonth: periodMessage(state.month),
      breakdowns: breakdowns.map((b) =>
        create(CostBreakdownSchema, { dimension: dimensionToProto[b.dimension], truncated: b.truncated, entries: b.entries }),
      ),
    });
  }

  async checkBudget(req: CheckBudgetRequest, ctx?: HandlerContext): Promise<CheckBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    const agentId = checkAgentIdOf(req);
    const tokens = tokenCheckOf(req);
    const ttlMs = holdTtlMs("hold_ttl", req.holdTtl, req.reserve);
    const requestId = optionalId("request_id", req.requestId);
    if (requestId !== "" && !req.reserve)
      throw invalidArgument("request_id applies only with reserve = true (a check without reserve is a read: retry it freely)");
    // Connect GET is meant for cacheable reads; a reservation is a write.
    if (req.reserve && ctx?.requestMethod === "GET") {
      throw new ConnectError("reserve = true places a hold (a write): send CheckBudget with POST, not Connect GET", Code.InvalidArgument);
    }
    // By tokens: the estimate is the catalog's worst case for model (the first estimate).
    const estimates = tokens === null ? [] : await tokenEstimates(this.#ledger, projectId, tokens);
    const estimatedCostNanos = estimates[0]?.estimatedCostNanos ?? nonNegative("estimated_cost_nanos", req.estimatedCostNanos);
    const outcome = await this.#ledger.checkBudget(
      projectId,
      estimatedCostNanos,
      req.reserve ? { ttlMs, requestId, tokenFingerprint: tokenFingerprint(tokens) } : null,
      ctx?.signal,
      agentId,
    );
    const { decision, windowed, hold } = outcome;
    const { nested } = outcome;
    return create(CheckBudgetResponseSchema, {
      // Every level decides (a project without a parent is one level).
      allowed: nested.allowed,
      limitNanos: decision.limitNanos,
      spentNanos: decision.spentNanos,
      remainingNanos: decision.remainingNanos,
      reason: nestedReasonToProto[nested.reason],
      estimatedCostNanos,
      currency: outcome.currency,
      reservedNanos: windowed.reservedNanos,
      holdId: hold?.holdId ?? "",
      holdExpiresAt: hold === null ? undefined : timestampFromMs(hold.expiresAtMs),
      decidedBy: nested.decidedBy === null ? BudgetWindow.UNSPECIFIED : levelWindowToProto[nested.decidedBy],
      limits: windowed.limits.map(limitStatusMessage),
      decidedByRemainingNanos: nested.decidedByRemainingNanos,
      thresholdsReached: outcome.thresholdsReached.map(thresholdMessage),
      duplicate: outcome.duplicate,
      ...nestedDecisionFields(outcome.nested),
      ...(tokens === null ? {} : adviceFields(outcome.state, estimates)),
    });
  }

  setModelPrice(req: SetModelPriceRequest): Promise<SetModelPriceResponse> {
    return setModelPrice(this.#ledger, req);
  }

  listModelPrices(req: ListModelPricesRequest): Promise<ListModelPricesResponse> {
    return listModelPrices(this.#ledger, req);
  }

  async releaseHold(req: ReleaseHoldRequest, ctx?: HandlerContext): Promise<ReleaseHoldResponse> {
    const projectId = requireId("project_id", req.projectId);
    const holdId = requireId("hold_id", req.holdId);
    const hold = await this.#ledger.releaseHold(projectId, holdId, ctx?.signal);
    return create(ReleaseHoldResponseSchema, { holdId: hold.holdId, projectId: hold.projectId, releasedNanos: hold.amountNanos });
  }

  async *watchBudget(req: WatchBudgetRequest, ctx?: HandlerContext): AsyncGenerator<WatchBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    // Each key gets its share of the server's watch slots (open mode: no keys, no shares).
    const { subscription, snapshot, atMs } = await this.#ledger.watch(projectId, ctx?.values.get(principalKey)?.keyId ?? null);
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
          ...costRecordPricing(r),
        }),
      ),
      nextPageToken:
        rows.length > limit && last !== undefined ? encodeCostRecordPageToken(query, { recordedAtMs: last.recordedAtMs, id: last.id }) : "",
    });
  }

  async setProjectBudget(req: SetProjectBudgetRequest, ctx: HandlerContext): Promise<SetProjectBudgetResponse> {
    const change = {
      projectId: requireId("project_id", req.projectId),
      limitNanos: nonNegative("limit_nanos", req.limitNanos),
      currency: optionalCurrency("currency", req.currency),
      dailyLimitNanos: optionalNonNegative("daily_limit_nanos", req.dailyLimitNanos),
      monthlyLimitNanos: optionalNonNegative("monthly_limit_nanos", req.monthlyLimitNanos),
      timeZone: optionalTimeZone("time_zone", req.timeZone),
      alertThresholdsBps:
        req.alertThresholds === undefined ? null : alertThresholds("alert_thresholds.basis_points", req.alertThresholds.basisPoints),
    };
    const nesting = nestingChangeOf(change.projectId, req);
    refuseUnstoredNesting(nesting, this.#ledger.treesStored);
    const budget = await this.#ledger.setProjectBudget({ ...change, ...nesting }, ctx.signal);
    const warnings = await this.#ledger.limitWarnings(budget.projectId);
    return create(SetProjectBudgetResponseSchema, {
      budget: projectBudgetMessage(budget),
      warnings: warnings.map((w) => budgetWarningMessage(w, budget.currency)),
    });
  }

  async getProjectBudget(req: GetProjectBudgetRequest): Promise<GetProjectBudgetResponse> {
    const projectId = requireId("project_id", req.projectId);
    return create(GetProjectBudgetResponseSchema, { budget: projectBudgetMessage(await this.#ledger.getProjectBudget(projectId)) });
  }

  async listProjects(req: ListProjectsRequest): Promise<ListProjectsResponse> {
    if (req.pageSize < 0)
      throw invalidArgument(`page_size must be >= 0 (0 asks for the default ${listProjectsPageSizeDefault}), got ${req.pageSize}`);
    // AIP-158: a page size above the maximum is served at the maximum.
    const limit = req.pageSize === 0 ? listProjectsPageSizeDefault : Math.min(req.pageSize, listProjectsPageSizeMax);
    const order = orderFromProto(req.order);
    const after = decodePageToken(req.pageToken, order);
    const page = await this.#ledger.listProjects({ order, after, limit, includeArchived: req.includeArchived });
    return create(ListProjectsResponseSchema, {
      projects: page.entries.map(({ totals, budget, reservedNanos, activeHoldCount, windowed, thresholdsReached, archivedAtMs }) =>
        create(ProjectSummarySchema, {
          projectId: totals.projectId,
          cost: projectCostMessage(totals, { reservedNanos, activeHoldCount }),
          budget: projectBudgetMessage(budget),
          limitUsedBasisPoints: limitUsedBasisPoints(totals.totalCostNanos, budget.limitNanos),
          limits: windowed.limits.map(limitStatusMessage),
          decidedBy: windowed.decidedBy === null ? BudgetWindow.UNSPECIFIED : windowToProto[windowed.decidedBy],
          thresholdsReached: thresholdsReached.map(thresholdMessage),
          archived: archivedAtMs !== null,
          archivedAt: archivedAtMs === null ? undefined : timestampFromMs(archivedAtMs),
        }),
      ),
      nextPageToken: page.next === null ? "" : encodePageToken(order, page.next),
    });
  }

  async archiveProject(req: ArchiveProjectRequest, ctx?: HandlerContext): Promise<ArchiveProjectResponse> {
    const projectId = requireId("project_id", req.projectId);
    const { archivedAtMs } = await this.#ledger.archiveProject(projectId, ctx?.signal);
    return create(ArchiveProjectResponseSchema, { projectId, archivedAt: timestampFromMs(archivedAtMs) });
  }

  async unarchiveProject(req: UnarchiveProjectRequest, ctx?: HandlerContext): Promise<UnarchiveProjectResponse> {
    const projectId = requireId("project_id", req.projectId);
    const { wasArchived } = await this.#ledger.unarchiveProject(projectId, ctx?.signal);
    return create(UnarchiveProjectResponseSchema, { projectId, wasArchived });
  }

  async deleteProject(req: DeleteProjectRequest, ctx?: HandlerContext): Promise<DeleteProjectResponse> {
    const projectId = requireId("project_id", req.projectId);
    const noRecordsSinceMs = optionalTimestampMs("no_records_since", req.noRecordsSince);
    if (noRecordsSinceMs === null)
      throw invalidArgument(
        "no_records_since is required: the project is deleted only if it recorded nothing at or after it (e.g. 30 days ago)",
      );
    const { totals, deletedRecordCount } = await this.#ledger.deleteProject(projectId, noRecordsSinceMs, ctx?.signal);
    return create(DeleteProjectResponseSchema, { projectId, deletedCost: projectCostMessage(totals), deletedRecordCount });
  }
}
