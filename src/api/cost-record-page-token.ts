// AIP-158 page tokens for ListCostRecords: opaque to clients (base64url of a
// small JSON document), carrying the keyset position of the last record
// returned and the query it belongs to, so a token reused with another query
// is refused with INVALID_ARGUMENT instead of silently returning a wrong page.
import { Code, ConnectError } from "@connectrpc/connect";
import { costRecordPageTokenLengthMax } from "../limits.ts";

export interface PageQuery {
  projectId: string;
  startMs: number | null;
  endMs: number | null;
}

export interface PagePosition {
  recordedAtMs: number;
  id: bigint;
}

interface TokenV1 {
  v: 1;
  p: string;
  s: number | null;
  e: number | null;
  t: number;
  i: string;
}

export function encodePageToken(query: PageQuery, after: PagePosition): string {
  const token: TokenV1 = { v: 1, p: query.projectId, s: query.startMs, e: query.endMs, t: after.recordedAtMs, i: after.id.toString() };
  return Buffer.from(JSON.stringify(token)).toString("base64url");
}

/** Record ids are int64 (both databases). */
const recordIdMax = 2n ** 63n - 1n;
/** Record times are google.protobuf.Timestamp values: years 0001 to 9999
 * (both databases store any of them; a time outside is no record's). */
const recordedAtMsMin = -62_135_596_800_000; // 0001-01-01T00:00:00Z
const recordedAtMsMax = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/** The position a token continues after; null for an empty token (first page). */
export function decodePageToken(field: string, token: string, query: PageQuery): PagePosition | null {
  if (token === "") return null;
  const bad = (why: string) =>
    new ConnectError(`${field} is not valid for this request (${why}); start again with an empty page_token`, Code.InvalidArgument);
  if (token.length > costRecordPageTokenLengthMax || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad("not a token this server issued");
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad("not a token this server issued");
  }
  const t = parsed as Partial<TokenV1>;
  const msOrNull = (x: unknown) => x === null || Number.isSafeInteger(x);
  if (
    typeof parsed !== "object" ||
    parsed === null ||
    t.v !== 1 ||
    typeof t.p !== "string" ||
    !msOrNull(t.s) ||
    !msOrNull(t.e) ||
    !Number.isSafeInteger(t.t) ||
    typeof t.i !== "string" ||
    !/^\d{1,19}$/.test(t.i)
  ) {
    throw bad("not a token this server issued");
  }
  // In the format but out of range: forged (a database would fail on it).
  if ((t.t as number) < recordedAtMsMin || (t.t as number) > recordedAtMsMax || BigInt(t.i as string) > recordIdMax)
    throw bad("not a token this server issued");
  if (t.p !== query.projectId || t.s !== query.startMs || t.e !== query.endMs)
    throw bad("it belongs to a request with another project_id, start_time or end_time");
  return { recordedAtMs: t.t as number, id: BigInt(t.i) };
}
