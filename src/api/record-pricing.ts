// RecordCost's catalog fields (cached_input_tokens, cache_write_tokens,
// cost_source, occurred_at), validated, and the pricing fields of its answer.
import { CostSource, type RecordCostRequest } from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { CostEntry, CostRecordView, RecordOutcome } from "../ledger/types.ts";
import { invalidArgument, nonNegative, optionalTimestampMs } from "./validate.ts";

export function recordPricingFields(
  req: RecordCostRequest,
): Pick<CostEntry, "cachedInputTokens" | "cacheWriteTokens" | "costSource" | "occurredAtMs"> {
  let costSource: CostEntry["costSource"];
  switch (req.costSource) {
    case CostSource.UNSPECIFIED:
    case CostSource.REPORTED:
      costSource = "reported";
      break;
    case CostSource.CATALOG:
      costSource = "catalog";
      if (req.model === "") throw invalidArgument("cost_source CATALOG needs model: the catalog prices a call by its model");
      if (req.costNanos !== 0n)
        throw invalidArgument(`cost_source CATALOG: Tally prices the call, so cost_nanos must be 0, got ${req.costNanos}`);
      break;
    default:
      throw invalidArgument(`cost_source ${req.costSource} is not a CostSource (use COST_SOURCE_REPORTED or COST_SOURCE_CATALOG)`);
  }
  return {
    cachedInputTokens: nonNegative("cached_input_tokens", req.cachedInputTokens),
    cacheWriteTokens: nonNegative("cache_write_tokens", req.cacheWriteTokens),
    costSource,
    occurredAtMs: optionalTimestampMs("occurred_at", req.occurredAt),
  };
}

/** cost_nanos, catalog_cost_nanos and price_id of RecordCostResponse: the
 * original's for a duplicate, else the record just written. */
export function recordPricingAnswer(outcome: RecordOutcome): { costNanos: bigint; catalogCostNanos?: bigint; priceId: string } {
  const priced = outcome.pricing;
  if (priced === undefined) throw new Error("invariant: the ledger answers every RecordCost with its pricing");
  return {
    costNanos: priced.costNanos,
    ...(priced.catalogCostNanos === null ? {} : { catalogCostNanos: priced.catalogCostNanos }),
    priceId: priced.priceId,
  };
}

/** CostRecord's pricing fields: token kinds, source, the catalog cost beside
 * the recorded one and the entry that priced it. */
export function costRecordPricing(r: CostRecordView) {
  return {
    cachedInputTokens: r.cachedInputTokens,
    cacheWriteTokens: r.cacheWriteTokens,
    costSource: r.costSource === "catalog" ? CostSource.CATALOG : CostSource.REPORTED,
    ...(r.catalogCostNanos === null ? {} : { catalogCostNanos: r.catalogCostNanos }),
    priceId: r.priceId,
    occurredAt: timestampFromMs(r.occurredAtMs ?? r.recordedAtMs),
  };
}
