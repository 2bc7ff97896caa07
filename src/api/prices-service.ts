// The price RPCs (SetModelPrice, ListModelPrices) and CheckBudget's estimate
// from tokens: validate, call the ledger's Prices, map results and errors.
// BudgetServiceHandler delegates here to stay one module of one size.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ListModelPricesResponseSchema,
  ModelEstimateSchema,
  ModelPriceSchema,
  SetModelPriceResponseSchema,
  type CheckBudgetRequest,
  type ListModelPricesRequest,
  type ListModelPricesResponse,
  type ModelEstimate as ModelEstimateMessage,
  type ModelPrice,
  type SetModelPriceRequest,
  type SetModelPriceResponse,
} from "../../gen/ts/tally/budget/v1/budget_pb.ts";
import {
  candidateModelsMax,
  currencyDefault,
  modelPricesPageSizeDefault,
  modelPricesPageSizeMax,
  priceSourceLengthMax,
} from "../limits.ts";
import type { Ledger } from "../ledger/ledger.ts";
import type { PriceEntry } from "../ledger/pricing.ts";
import { advisedModel, fitsEveryLimit, type ModelEstimate, type Prices } from "../ledger/prices.ts";
import type { BudgetState } from "../ledger/types.ts";
import { decodePriceToken, encodePriceToken } from "./price-page-token.ts";
import { invalidArgument, nonNegative, optionalCurrency, optionalId, optionalModel, optionalTimestampMs } from "./validate.ts";

function pricesOf(ledger: Ledger): Prices {
  if (ledger.prices === null) throw new ConnectError("this server was started without a price catalog", Code.FailedPrecondition);
  return ledger.prices;
}

export function modelPriceMessage(price: PriceEntry): ModelPrice {
  return create(ModelPriceSchema, {
    priceId: price.priceId,
    model: price.model,
    projectId: price.projectId,
    currency: price.currency,
    inputNanosPerMillion: price.inputNanosPerMillion,
    cachedInputNanosPerMillion: price.cachedInputNanosPerMillion,
    cacheWriteNanosPerMillion: price.cacheWriteNanosPerMillion,
    outputNanosPerMillion: price.outputNanosPerMillion,
    effectiveFrom: timestampFromMs(price.effectiveFromMs),
    source: price.source,
    createdAt: timestampFromMs(price.createdAtMs),
  });
}

function requireModel(field: string, value: string): string {
  if (value === "") throw invalidArgument(`${field} is required (the model name exactly as agents send it, e.g. "gpt-4o-mini")`);
  return optionalModel(field, value);
}

export async function setModelPrice(ledger: Ledger, req: SetModelPriceRequest): Promise<SetModelPriceResponse> {
  const model = requireModel("model", req.model);
  const projectId = optionalId("project_id", req.projectId);
  const currency = optionalCurrency("currency", req.currency) ?? currencyDefault;
  const effectiveFromMs = optionalTimestampMs("effective_from", req.effectiveFrom);
  if (effectiveFromMs === null)
    throw invalidArgument(
      "effective_from is required: the instant from which this price applies (entries are never edited; a later entry replaces it)",
    );
  const source = req.source.trim();
  if (source === "") throw invalidArgument("source is required: where this price comes from (a pricing page URL, a contract reference)");
  if (source.length > priceSourceLengthMax || !/^[\x20-\x7e]+$/.test(source))
    throw invalidArgument(`source must be 1..${priceSourceLengthMax} printable ASCII characters`);
  const price = {
    model,
    projectId,
    currency,
    inputNanosPerMillion: nonNegative("input_nanos_per_million", req.inputNanosPerMillion),
    cachedInputNanosPerMillion: nonNegative("cached_input_nanos_per_million", req.cachedInputNanosPerMillion),
    cacheWriteNanosPerMillion: nonNegative("cache_write_nanos_per_million", req.cacheWriteNanosPerMillion),
    outputNanosPerMillion: nonNegative("output_nanos_per_million", req.outputNanosPerMillion),
    effectiveFromMs,
    source,
  };
  const stored = await pricesOf(ledger).setPrice(price);
  return create(SetModelPriceResponseSchema, { price: modelPriceMessage(stored.price), duplicate: stored.duplicate });
}

export async function listModelPrices(ledger: Ledger, req: ListModelPricesRequest): Promise<ListModelPricesResponse> {
  const filter = { model: optionalModel("model", req.model), projectId: optionalId("project_id", req.projectId) };
  if (req.pageSize < 0) throw invalidArgument(`page_size must be >= 0, got ${req.pageSize}`);
  const limit = req.pageSize === 0 ? modelPricesPageSizeDefault : Math.min(req.pageSize, modelPricesPageSizeMax);
  const after = decodePriceToken(req.pageToken, filter);
  const page = await pricesOf(ledger).listPrices({ ...filter, after, limit });
  const last = page.prices.at(-1);
  return create(ListModelPricesResponseSchema, {
    prices: page.prices.map(modelPriceMessage),
    nextPageToken: page.more && last !== undefined ? encodePriceToken(filter, last) : "",
  });
}

/** CheckBudget's token fields, validated: null when the request gives an
 * estimate in nanos instead (then none of them may be set). */
export interface TokenCheck {
  models: string[];
  inputTokens: bigint;
  maxOutputTokens: bigint;
}

export function tokenCheckOf(req: CheckBudgetRequest): TokenCheck | null {
  if (req.model === "") {
    if (req.inputTokens !== 0n || req.maxOutputTokens !== 0n || req.candidateModels.length > 0) {
      throw invalidArgument(
        "input_tokens, max_output_tokens and candidate_models apply only with model (the model the estimate is priced for)",
      );
    }
    return null;
  }
  const model = optionalModel("model", req.model);
  if (req.estimatedCostNanos !== 0n)
    throw invalidArgument("give either estimated_cost_nanos or model with input_tokens and max_output_tokens, not both");
  if (req.candidateModels.length > candidateModelsMax)
    throw invalidArgument(`candidate_models has ${req.candidateModels.length} models; the maximum is ${candidateModelsMax}`);
  const models = [model];
  req.candidateModels.forEach((candidate, i) => {
    if (candidate === "") throw invalidArgument(`candidate_models[${i}] is empty`);
    optionalModel(`candidate_models[${i}]`, candidate);
    if (models.includes(candidate)) throw invalidArgument(`candidate_models[${i}] "${candidate}" is listed twice (or is model itself)`);
    models.push(candidate);
  });
  return {
    models,
    inputTokens: nonNegative("input_tokens", req.inputTokens),
    maxOutputTokens: nonNegative("max_output_tokens", req.maxOutputTokens),
  };
}

/** What a reservation by tokens asked for, as reserve_keys stores it: a retry
 * with the same request_id must ask for the same ("" for an estimate in nanos). */
export function tokenFingerprint(check: TokenCheck | null): string {
  return check === null
    ? ""
    : JSON.stringify({ models: check.models, inputTokens: String(check.inputTokens), maxOutputTokens: String(check.maxOutputTokens) });
}

/** The worst-case estimate of every model (model first), from the catalog. */
export async function tokenEstimates(ledger: Ledger, projectId: string, check: TokenCheck): Promise<ModelEstimate[]> {
  const { currency } = await ledger.getProjectBudget(projectId);
  return await pricesOf(ledger).estimates(check.models, projectId, currency, check.inputTokens, check.maxOutputTokens);
}

/** The advice fields of CheckBudgetResponse, on the state the decision saw. */
export function adviceFields(
  state: BudgetState,
  estimates: readonly ModelEstimate[],
): { advisedModel: string; candidateEstimates: ModelEstimateMessage[]; priceId: string } {
  return {
    advisedModel: advisedModel(state, estimates),
    candidateEstimates: estimates.map((estimate) =>
      create(ModelEstimateSchema, {
        model: estimate.model,
        estimatedCostNanos: estimate.estimatedCostNanos,
        fits: fitsEveryLimit(state, estimate.estimatedCostNanos),
        priceId: estimate.price.priceId,
      }),
    ),
    priceId: estimates[0]?.price.priceId ?? "",
  };
}
