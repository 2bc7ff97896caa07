// Domain values to their proto messages and enums (and back, for the enums
// requests carry). Shared by the BudgetService handlers; no validation here.
import { capFields } from "./nesting-fields.ts";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  BreakdownDimension,
  BudgetDecisionReason,
  BudgetEventKind,
  BudgetEventSchema,
  BudgetThresholdSchema,
  BudgetWarningSchema,
  BudgetWindow,
  LimitStatusSchema,
  PeriodCostSchema,
  ProjectBudgetSchema,
  ProjectCostSchema,
  ProjectOrder as ProjectOrderProto,
  type BudgetEvent as BudgetEventMessage,
  type BudgetThreshold,
  type BudgetWarning,
  type LimitStatus,
  type PeriodCost,
  type ProjectBudget,
  type ProjectCost,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { DecisionReason, type LimitDecision } from "../ledger/budget.ts";
import type { BudgetEvent } from "../ledger/events.ts";
import type { LimitWarning, ThresholdReached } from "../ledger/limit-views.ts";
import { formatNanos } from "../ledger/money.ts";
import { limitUsedBasisPoints, ProjectOrder } from "../ledger/projects.ts";
import { Dimension, Window, type Budget, type BudgetState, type PeriodTotals, type ProjectTotals } from "../ledger/types.ts";
import { invalidArgument } from "./validate.ts";

export const reasonToProto = {
  [DecisionReason.noLimit]: BudgetDecisionReason.NO_LIMIT,
  [DecisionReason.withinBudget]: BudgetDecisionReason.WITHIN_BUDGET,
  [DecisionReason.exceedsRemaining]: BudgetDecisionReason.EXCEEDS_REMAINING,
  [DecisionReason.exhausted]: BudgetDecisionReason.EXHAUSTED,
  [DecisionReason.fullyReserved]: BudgetDecisionReason.FULLY_RESERVED,
} as const;

export const windowToProto = {
  [Window.lifetime]: BudgetWindow.LIFETIME,
  [Window.day]: BudgetWindow.DAY,
  [Window.month]: BudgetWindow.MONTH,
} as const;

export const dimensionFromProto: Partial<Record<BreakdownDimension, Dimension>> = {
  [BreakdownDimension.AGENT]: Dimension.agent,
  [BreakdownDimension.MODEL]: Dimension.model,
  [BreakdownDimension.CHILD]: Dimension.child,
};
export const dimensionToProto = {
  [Dimension.agent]: BreakdownDimension.AGENT,
  [Dimension.model]: BreakdownDimension.MODEL,
  [Dimension.child]: BreakdownDimension.CHILD,
} as const;

export function orderFromProto(order: ProjectOrderProto): ProjectOrder {
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

/** One set limit as a decision saw it, with how much of it is spent. */
export function limitStatusMessage(limit: LimitDecision): LimitStatus {
  return create(LimitStatusSchema, {
    window: windowToProto[limit.window],
    period: limit.period,
    limitNanos: limit.limitNanos,
    spentNanos: limit.spentNanos,
    reservedNanos: limit.reservedNanos,
    remainingNanos: limit.remainingNanos,
    allowed: limit.allowed,
    reason: reasonToProto[limit.reason],
    usedBasisPoints: limitUsedBasisPoints(limit.spentNanos, limit.limitNanos),
  });
}
/** Lifetime totals; with `holds`, also the project's active holds. */
export function projectCostMessage(totals: ProjectTotals, holds?: Pick<BudgetState, "reservedNanos" | "activeHoldCount">): ProjectCost {
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

export function periodMessage(period: PeriodTotals): PeriodCost {
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

/** A crossing names its project (the written one or an ancestor); a
 * threshold reached is of the project asked about ("" there). */
export function thresholdMessage(t: ThresholdReached & { projectId?: string }): BudgetThreshold {
  return create(BudgetThresholdSchema, {
    projectId: t.projectId ?? "",
    window: windowToProto[t.window],
    period: t.period,
    thresholdBps: t.thresholdBps,
    limitNanos: t.limitNanos,
    spentNanos: t.spentNanos,
  });
}

export function eventMessage(event: BudgetEvent): BudgetEventMessage {
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

export function projectBudgetMessage(budget: Budget): ProjectBudget {
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
    parentId: budget.parentId,
    ...capFields(budget),
  });
}

const warningWindowText = {
  [Window.lifetime]: { limit: "lifetime limit", spend: () => "lifetime spend", until: "it is raised" },
  [Window.day]: { limit: "daily limit", spend: (period: string) => `today's (${period}) spend`, until: "the next day" },
  [Window.month]: { limit: "monthly limit", spend: (period: string) => `this month's (${period}) spend`, until: "the next month" },
} as const;

/** A limit set at or below its window's spend, with one line saying so. */
export function budgetWarningMessage(warning: LimitWarning, currency: string): BudgetWarning {
  const text = warningWindowText[warning.window];
  return create(BudgetWarningSchema, {
    window: windowToProto[warning.window],
    period: warning.period,
    limitNanos: warning.limitNanos,
    spentNanos: warning.spentNanos,
    message: `the ${text.limit} ${formatNanos(warning.limitNanos)} ${currency} is at or below ${text.spend(warning.period)} ${formatNanos(warning.spentNanos)} ${currency}: CheckBudget refuses until ${text.until}`,
  });
}
