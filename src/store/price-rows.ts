// model_prices rows <-> PriceEntry, shared by both drivers.
import type { PriceEntry } from "../ledger/pricing.ts";

export interface PriceRow {
  price_id: bigint | number | string;
  model: string;
  project_id: string;
  currency: string;
  input_nanos_per_million: bigint | number | string;
  cached_input_nanos_per_million: bigint | number | string;
  cache_write_nanos_per_million: bigint | number | string;
  output_nanos_per_million: bigint | number | string;
  effective_from_ms: bigint | number | string;
  source: string;
  created_at_ms: bigint | number | string;
}

export const priceColumns =
  "price_id, model, project_id, currency, input_nanos_per_million, cached_input_nanos_per_million, cache_write_nanos_per_million, output_nanos_per_million, effective_from_ms, source, created_at_ms";

export function priceOfRow(row: PriceRow): PriceEntry {
  return {
    priceId: String(row.price_id),
    model: row.model,
    projectId: row.project_id,
    currency: row.currency,
    inputNanosPerMillion: BigInt(row.input_nanos_per_million),
    cachedInputNanosPerMillion: BigInt(row.cached_input_nanos_per_million),
    cacheWriteNanosPerMillion: BigInt(row.cache_write_nanos_per_million),
    outputNanosPerMillion: BigInt(row.output_nanos_per_million),
    effectiveFromMs: Number(row.effective_from_ms),
    source: row.source,
    createdAtMs: Number(row.created_at_ms),
  };
}
