// AIP-158 page tokens for ListModelPrices: base64url JSON naming the filter it
// belongs to and the last entry's key (model, project_id, effective_from). Not
// signed: a forged token only starts the listing elsewhere, which any caller
// can do anyway. Anything we could not have issued is INVALID_ARGUMENT.
import { Code, ConnectError } from "@connectrpc/connect";
import { idLengthMax, modelLengthMax, pageTokenLengthMax } from "../limits.ts";
import type { PriceListQuery } from "../ledger/price-catalog.ts";

interface TokenBody {
  v: 1;
  /** The filter of the listing (model, project_id). */
  fm: string;
  fp: string;
  /** The last entry's key. */
  m: string;
  p: string;
  t: number;
}

export function encodePriceToken(
  filter: { model: string; projectId: string },
  last: { model: string; projectId: string; effectiveFromMs: number },
): string {
  const body: TokenBody = { v: 1, fm: filter.model, fp: filter.projectId, m: last.model, p: last.projectId, t: last.effectiveFromMs };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

function invalid(detail: string): ConnectError {
  return new ConnectError(
    `page_token is not valid: ${detail}; pass the next_page_token of the previous response unchanged, with the same model and project_id`,
    Code.InvalidArgument,
  );
}

export function decodePriceToken(token: string, filter: { model: string; projectId: string }): PriceListQuery["after"] {
  if (token === "") return null;
  if (token.length > pageTokenLengthMax)
    throw invalid(`it is ${token.length} characters long; tokens we issue are under ${pageTokenLengthMax}`);
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw invalid("it is not base64url");
  let body: Partial<TokenBody>;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<TokenBody>;
  } catch {
    throw invalid("it does not decode");
  }
  if (body === null || typeof body !== "object" || body.v !== 1) throw invalid("unknown format");
  if (body.fm !== filter.model || body.fp !== filter.projectId)
    throw invalid("it continues a listing with another model or project_id filter");
  if (typeof body.m !== "string" || body.m.length === 0 || body.m.length > modelLengthMax) throw invalid("bad model");
  if (typeof body.p !== "string" || body.p.length > idLengthMax) throw invalid("bad project_id");
  if (typeof body.t !== "number" || !Number.isSafeInteger(body.t)) throw invalid("bad effective_from");
  return { model: body.m, projectId: body.p, effectiveFromMs: body.t };
}
