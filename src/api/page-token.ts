// AIP-158 page tokens for ListProjects: an opaque (to clients) base64url cursor
// that names the order it belongs to and where the previous page ended. Not a
// secret and not signed: a forged token can only start a listing at another
// position, which any client can do anyway. Anything that does not decode to a
// cursor we could have issued is INVALID_ARGUMENT.
import { Code, ConnectError } from "@connectrpc/connect";
import { idLengthMax, idPattern, pageTokenLengthMax } from "../limits.ts";
import { int64Max } from "../ledger/money.ts";
import type { ProjectOrder, ProjectCursor } from "../ledger/projects.ts";

interface TokenBody {
  /** Format version, so the encoding can change without misreading old tokens. */
  v: 1;
  o: ProjectOrder;
  id: string;
  /** Spend of the last project, a decimal int64 (JSON numbers would lose digits). */
  s: string;
}

export function encodePageToken(order: ProjectOrder, cursor: ProjectCursor): string {
  const body: TokenBody = { v: 1, o: order, id: cursor.projectId, s: cursor.spentNanos.toString() };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

function invalid(detail: string): ConnectError {
  return new ConnectError(
    `page_token is not valid: ${detail}; pass the next_page_token of the previous response unchanged, or an empty token for the first page`,
    Code.InvalidArgument,
  );
}

/** The cursor in `token`, or null for an empty token (first page). */
export function decodePageToken(token: string, order: ProjectOrder): ProjectCursor | null {
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
  if (body.o !== order) throw invalid(`it continues a listing in order ${String(body.o)}, but this request asks for ${order}`);
  if (typeof body.id !== "string" || body.id.length === 0 || body.id.length > idLengthMax || !idPattern.test(body.id))
    throw invalid("bad project id");
  if (typeof body.s !== "string" || !/^\d{1,19}$/.test(body.s) || BigInt(body.s) > int64Max) throw invalid("bad spend");
  return { projectId: body.id, spentNanos: BigInt(body.s) };
}
