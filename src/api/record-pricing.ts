// RecordCost's catalog fields (cached_input_tokens, cache_write_tokens,
// cost_source, occurred_at). Until the stores keep them with the record (the
// record's price entry, its catalog cost, its token kinds), a request that
// uses them is refused, never half-served: accepting cost_source = CATALOG
// without pricing it would record 0, and dropping cached tokens would lose
// what the caller sent.
import { Code, ConnectError } from "@connectrpc/connect";
import { CostSource, type RecordCostRequest } from "../../gen/ts/tally/budget/v1/budget_pb.ts";

export function refuseUnservedPricing(req: RecordCostRequest): void {
  const used = [
    req.cachedInputTokens !== 0n ? "cached_input_tokens" : "",
    req.cacheWriteTokens !== 0n ? "cache_write_tokens" : "",
    req.costSource !== CostSource.UNSPECIFIED && req.costSource !== CostSource.REPORTED ? "cost_source" : "",
    req.occurredAt !== undefined ? "occurred_at" : "",
  ].filter((field) => field !== "");
  if (used.length > 0) {
    throw new ConnectError(`${used.join(", ")}: not served by this server version yet; nothing was recorded (report cost_nanos with cost_source REPORTED)`, Code.Unimplemented);
  }
}
