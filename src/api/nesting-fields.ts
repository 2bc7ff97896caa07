// Nested budgets at the API edge: SetProjectBudget's parent, agent caps and
// rate limit validated; CheckBudget's agent_id; the nested decision (levels,
// decided_by_project_id, retry_at) and a budget's caps as messages.
//
// A store without trees (LedgerStore.treesStored false) refuses a parent
// with UNIMPLEMENTED and changes nothing, rather than storing it in part.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AgentLimitSchema,
  type ProjectBudget,
  BreakdownDimension,
  BudgetDecisionReason,
  BudgetLevelSchema,
  BudgetWindow,
  LimitStatusSchema,
  type BudgetLevel,
  type CheckBudgetRequest,
  type LimitStatus,
  type SetProjectBudgetRequest,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { agentLimitOverridesMax } from "../limits.ts";
import type { AgentLimitOverride } from "../ledger/agent-caps.ts";
import type { LimitDecision } from "../ledger/budget.ts";
import type { Budget, CapFieldName } from "../ledger/types.ts";
import { planReparent } from "../ledger/budget-tree.ts";
import { limitUsedBasisPoints } from "../ledger/projects.ts";
import { NestedReason, type LevelWindow, type NestedDecision } from "../ledger/nested-decision.ts";
import type { RateDecision } from "../ledger/rate-guard.ts";
import { invalidArgument, nonNegative, optionalId, optionalNonNegative } from "./validate.ts";

/** SetProjectBudget's nesting fields, validated; null keeps the current value. */
export interface NestingChange {
  /** null: keep; "": no parent; else the parent's id. */
  parentId: string | null;
  agentLimitNanos: bigint | null;
  agentDailyLimitNanos: bigint | null;
  agentMonthlyLimitNanos: bigint | null;
  agentRateLimitNanosPerMinute: bigint | null;
  /** null: keep; else the whole new list, ascending by agentId. */
  agentLimitOverrides: AgentLimitOverride[] | null;
  rateLimitNanosPerMinute: bigint | null;
}

export function nestingChangeOf(projectId: string, req: SetProjectBudgetRequest): NestingChange {
  const parentId = req.parentId === undefined ? null : optionalId("parent_id", req.parentId);
  // Its own parent is a cycle whatever is stored: refused before anything is read.
  if (parentId === projectId) {
    planReparent(projectId, parentId, () => null, [projectId]);
  }
  let overrides: AgentLimitOverride[] | null = null;
  if (req.agentLimitOverrides !== undefined) {
    const entries = req.agentLimitOverrides.agentLimits;
    if (entries.length > agentLimitOverridesMax)
      throw invalidArgument(`agent_limit_overrides has ${entries.length} entries; the maximum is ${agentLimitOverridesMax}`);
    overrides = entries.map((entry, i) => {
      const field = `agent_limit_overrides[${i}]`;
      if (entry.agentId === "") throw invalidArgument(`${field}.agent_id is required (1..128 characters of [A-Za-z0-9._:/-])`);
      return {
        agentId: optionalId(`${field}.agent_id`, entry.agentId),
        limitNanos: nonNegative(`${field}.limit_nanos`, entry.limitNanos),
        dailyLimitNanos: nonNegative(`${field}.daily_limit_nanos`, entry.dailyLimitNanos),
        monthlyLimitNanos: nonNegative(`${field}.monthly_limit_nanos`, entry.monthlyLimitNanos),
        rateLimitNanosPerMinute: nonNegative(`${field}.rate_limit_nanos_per_minute`, entry.rateLimitNanosPerMinute),
      };
    });
    overrides.sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0));
    for (let i = 1; i < overrides.length; i++) {
      if (overrides[i]!.agentId === overrides[i - 1]!.agentId)
        throw invalidArgument(`agent_limit_overrides names agent "${overrides[i]!.agentId}" twice`);
    }
  }
  return {
    parentId,
    agentLimitNanos: optionalNonNegative("agent_limit_nanos", req.agentLimitNanos),
    agentDailyLimitNanos: optionalNonNegative("agent_daily_limit_nanos", req.agentDailyLimitNanos),
    agentMonthlyLimitNanos: optionalNonNegative("agent_monthly_limit_nanos", req.agentMonthlyLimitNanos),
    agentRateLimitNanosPerMinute: optionalNonNegative("agent_rate_limit_nanos_per_minute", req.agentRateLimitNanosPerMinute),
    agentLimitOverrides: overrides,
    rateLimitNanosPerMinute: optionalNonNegative("rate_limit_nanos_per_minute", req.rateLimitNanosPerMinute),
  };
}

function notStoredYet(what: string): ConnectError {
  return new ConnectError(`${what}: this server's store does not keep trees of budgets (parents); nothing was changed`, Code.Unimplemented);
}

/** UNIMPLEMENTED for a parent on a store without trees (`treesStored`
 * false); nothing else is refused. */
export function refuseUnstoredNesting(change: NestingChange, treesStored: boolean): void {
  if (!treesStored && change.parentId !== null && change.parentId !== "") throw notStoredYet(`parent_id "${change.parentId}"`);
}

/** CheckBudget's agent_id, validated ("" for none): its cap in the project
 * is one more level of the decision, and a hold remembers it. */
export function checkAgentIdOf(req: CheckBudgetRequest): string {
  return optionalId("agent_id", req.agentId);
}

/** A budget's agent caps and rate limit as ProjectBudget's fields. */
export function capFields(budget: Budget): Pick<ProjectBudget, CapFieldName> {
  const { defaults, overrides } = budget.agentCaps;
  return {
    agentLimitNanos: defaults.limitNanos,
    agentDailyLimitNanos: defaults.dailyLimitNanos,
    agentMonthlyLimitNanos: defaults.monthlyLimitNanos,
    agentRateLimitNanosPerMinute: defaults.rateLimitNanosPerMinute,
    agentLimitOverrides: overrides.map((o) =>
      create(AgentLimitSchema, {
        agentId: o.agentId,
        limitNanos: o.limitNanos,
        dailyLimitNanos: o.dailyLimitNanos,
        monthlyLimitNanos: o.monthlyLimitNanos,
        rateLimitNanosPerMinute: o.rateLimitNanosPerMinute,
      }),
    ),
    rateLimitNanosPerMinute: budget.rateLimitNanosPerMinute,
  };
}

/** GetProjectCost's breakdown by child needs the tree. */
export function refuseUnstoredDimension(value: BreakdownDimension): void {
  if (value === BreakdownDimension.CHILD) throw notStoredYet("breakdown_by BREAKDOWN_DIMENSION_CHILD");
}

export const nestedReasonToProto: Record<NestedReason, BudgetDecisionReason> = {
  [NestedReason.noLimit]: BudgetDecisionReason.NO_LIMIT,
  [NestedReason.withinBudget]: BudgetDecisionReason.WITHIN_BUDGET,
  [NestedReason.exceedsRemaining]: BudgetDecisionReason.EXCEEDS_REMAINING,
  [NestedReason.exhausted]: BudgetDecisionReason.EXHAUSTED,
  [NestedReason.fullyReserved]: BudgetDecisionReason.FULLY_RESERVED,
  [NestedReason.agentLimit]: BudgetDecisionReason.AGENT_LIMIT,
  [NestedReason.rateLimited]: BudgetDecisionReason.RATE_LIMITED,
};

export const levelWindowToProto: Record<LevelWindow, BudgetWindow> = {
  lifetime: BudgetWindow.LIFETIME,
  day: BudgetWindow.DAY,
  month: BudgetWindow.MONTH,
  rolling_minute: BudgetWindow.ROLLING_MINUTE,
};

/** One limit of one level, naming its project (and agent, for a cap). */
export function levelLimitMessage(limit: LimitDecision | RateDecision, projectId: string, agentId: string): LimitStatus {
  return create(LimitStatusSchema, {
    window: levelWindowToProto[limit.window],
    period: limit.period,
    limitNanos: limit.limitNanos,
    spentNanos: limit.spentNanos,
    reservedNanos: limit.reservedNanos,
    remainingNanos: limit.remainingNanos,
    allowed: limit.allowed,
    reason: nestedReasonToProto[limit.reason],
    usedBasisPoints: limitUsedBasisPoints(limit.spentNanos, limit.limitNanos),
    projectId,
    agentId,
  });
}

/** CheckBudgetResponse's nesting fields. */
export function nestedDecisionFields(decision: NestedDecision): {
  decidedByProjectId: string;
  decidedByAgentId: string;
  levels: BudgetLevel[];
  retryAt?: ReturnType<typeof timestampFromMs>;
} {
  return {
    decidedByProjectId: decision.decidedByProjectId,
    decidedByAgentId: decision.decidedByAgentId,
    levels: decision.levels.map((level) =>
      create(BudgetLevelSchema, {
        projectId: level.projectId,
        agentId: level.agentId,
        allowed: level.allowed,
        reason: nestedReasonToProto[level.reason],
        decidedBy: level.decidedBy === null ? BudgetWindow.UNSPECIFIED : levelWindowToProto[level.decidedBy],
        limits: [...level.limits, ...(level.rate === null ? [] : [level.rate])].map((limit) =>
          levelLimitMessage(limit, level.projectId, level.agentId),
        ),
      }),
    ),
    ...(decision.retryAtMs === null ? {} : { retryAt: timestampFromMs(decision.retryAtMs) }),
  };
}
