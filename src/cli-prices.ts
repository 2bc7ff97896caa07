// `tally prices set|list|import`: the price catalog (SetModelPrice,
// ListModelPrices). Prices are typed as people read them on pricing pages:
// decimal units of currency per 1 million tokens ("0.075"), converted to
// int64 nanos exactly (never through a float). `import` loads a catalog file
// (prices/<date>.json): every entry is checked before anything is sent, and
// every entry sent is reported (added, already present, or refused).
import { readFileSync } from "node:fs";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ListModelPricesResponseSchema,
  SetModelPriceResponseSchema,
  type BudgetService,
  type ModelPrice,
  type SetModelPriceRequestSchema,
} from "../gen/ts/tally/budget/v1/budget_pb.ts";
import { parseDecimalNanos } from "./ledger/decimal-amount.ts";
import { formatNanos } from "./ledger/money.ts";
import { printJson, UsageError, type Io } from "./cli-shared.ts";
import { modelPricesPageSizeMax } from "./limits.ts";

export const pricesUsage = `  prices set <model> --input P         add a price entry (never edits one): P are units of
             --cached-input P          currency per 1 million tokens ("0.075"), all four
             --cache-write P           required; --effective-from RFC 3339 time it applies
             --output P                from; --source where it comes from (URL, contract);
             --effective-from T        --project P makes it that project's negotiated price;
             --source S                --currency XXX (default USD)
             [--project P] [--currency XXX]
  prices list [--model M] [--project P]  the catalog with its history, per model
  prices import <file.json>            load a catalog file (e.g. prices/2026-12-05.json);
                                       each entry is reported: added, already present, refused`;

export interface PricesOptions {
  model?: string | undefined;
  project?: string | undefined;
  currency?: string | undefined;
  input?: string | undefined;
  "cached-input"?: string | undefined;
  "cache-write"?: string | undefined;
  output?: string | undefined;
  "effective-from"?: string | undefined;
  source?: string | undefined;
}

type Client_ = Client<typeof BudgetService>;

function perMillion(text: string | undefined, what: string): bigint {
  if (text === undefined) throw new UsageError(`${what} is required (units of currency per 1 million tokens, e.g. 0.075)`);
  const nanos = parseDecimalNanos(text);
  if (typeof nanos === "string") throw new UsageError(`${what}: ${nanos}`);
  return nanos;
}

function instant(text: string | undefined, what: string): number {
  if (text === undefined) throw new UsageError(`${what} is required (an RFC 3339 time, e.g. 2026-12-05T00:00:00Z)`);
  const ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(ms)) throw new UsageError(`${what} ${JSON.stringify(text)} must be an RFC 3339 time (2026-12-05T00:00:00Z)`);
  return ms;
}

/** "0.075/1M" of each kind, for people. */
export function priceLine(p: ModelPrice): string {
  const f = (nanos: bigint) => formatNanos(nanos);
  const scope = p.projectId === "" ? "global" : `project ${p.projectId}`;
  const from = p.effectiveFrom === undefined ? "?" : timestampDate(p.effectiveFrom).toISOString();
  return `${p.model}  ${scope}  from ${from}  ${p.currency} per 1M tokens: input ${f(p.inputNanosPerMillion)}, cached input ${f(p.cachedInputNanosPerMillion)}, cache write ${f(p.cacheWriteNanosPerMillion)}, output ${f(p.outputNanosPerMillion)}  [id ${p.priceId}; ${p.source}]`;
}

export async function prices(client: Client_, rest: readonly string[], options: PricesOptions, json: boolean, io: Io): Promise<number> {
  const [action, ...args] = rest;
  switch (action) {
    case "set": {
      if (args.length !== 1) throw new UsageError("prices set takes exactly one model name");
      const request: MessageInitShape<typeof SetModelPriceRequestSchema> = {
        model: args[0]!,
        projectId: options.project ?? "",
        currency: options.currency ?? "",
        inputNanosPerMillion: perMillion(options.input, "--input"),
        cachedInputNanosPerMillion: perMillion(options["cached-input"], "--cached-input"),
        cacheWriteNanosPerMillion: perMillion(options["cache-write"], "--cache-write"),
        outputNanosPerMillion: perMillion(options.output, "--output"),
        effectiveFrom: timestampFromMs(instant(options["effective-from"], "--effective-from")),
        source: options.source ?? "",
      };
      const response = await client.setModelPrice(request);
      if (json) printJson(io, SetModelPriceResponseSchema, response);
      else io.out(`${response.duplicate ? "already present" : "added"}: ${priceLine(response.price!)}`);
      return 0;
    }
    case "list": {
      if (args.length !== 0) throw new UsageError("prices list takes no arguments (filter with --model and --project)");
      const all: ModelPrice[] = [];
      let pageToken = "";
      do {
        const page = await client.listModelPrices({
          model: options.model ?? "",
          projectId: options.project ?? "",
          pageSize: modelPricesPageSizeMax,
          pageToken,
        });
        all.push(...page.prices);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (json)
        printJson(io, ListModelPricesResponseSchema, {
          $typeName: "tally.budget.v1.ListModelPricesResponse",
          prices: all,
          nextPageToken: "",
        });
      else if (all.length === 0) io.out("no prices in the catalog (load one: tally prices import prices/<file>.json)");
      else for (const p of all) io.out(priceLine(p));
      return 0;
    }
    case "import": {
      if (args.length !== 1) throw new UsageError("prices import takes exactly one catalog file");
      const entries = readCatalogFile(args[0]!);
      let refused = 0;
      for (const entry of entries) {
        try {
          const response = await client.setModelPrice(entry);
          io.out(`${response.duplicate ? "already present" : "added"}: ${priceLine(response.price!)}`);
        } catch (error) {
          const e = ConnectError.from(error);
          if (e.code !== Code.AlreadyExists && e.code !== Code.InvalidArgument) throw error;
          refused++;
          io.err(`refused: ${entry.model}: ${Code[e.code]}: ${e.rawMessage}`);
        }
      }
      io.out(`${entries.length - refused} of ${entries.length} entries in the catalog`);
      return refused === 0 ? 0 : 1;
    }
    default:
      throw new UsageError(`prices takes set, list or import, not ${JSON.stringify(action ?? "")}`);
  }
}

const entryKeys = new Set([
  "model",
  "project_id",
  "currency",
  "input",
  "cached_input",
  "cache_write",
  "output",
  "effective_from",
  "source",
  "checked_on",
]);

/** Reads and checks a whole catalog file; any fault is a usage error naming
 * the entry, and nothing is sent. */
export function readCatalogFile(path: string): Array<MessageInitShape<typeof SetModelPriceRequestSchema> & { model: string }> {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new UsageError(`cannot read catalog file ${path}: ${(error as Error).message}`);
  }
  const top = doc as { currency?: unknown; prices?: unknown };
  if (typeof doc !== "object" || doc === null || !Array.isArray(top.prices))
    throw new UsageError(`${path}: expected {"currency": "USD", "prices": [...]}`);
  const currency = top.currency === undefined ? "" : String(top.currency);
  return top.prices.map((raw: unknown, i: number) => {
    const where = `${path}: prices[${i}]`;
    if (typeof raw !== "object" || raw === null) throw new UsageError(`${where} is not an object`);
    const e = raw as Record<string, unknown>;
    for (const key of Object.keys(e)) if (!entryKeys.has(key)) throw new UsageError(`${where} has an unknown field "${key}"`);
    const text = (key: string, required = true): string => {
      const value = e[key];
      if (value === undefined && !required) return "";
      if (typeof value !== "string" || value === "") throw new UsageError(`${where}.${key} must be a non-empty string`);
      return value;
    };
    return {
      model: text("model"),
      projectId: text("project_id", false),
      currency: text("currency", false) || currency,
      inputNanosPerMillion: perMillion(text("input"), `${where}.input`),
      cachedInputNanosPerMillion: perMillion(text("cached_input"), `${where}.cached_input`),
      cacheWriteNanosPerMillion: perMillion(text("cache_write"), `${where}.cache_write`),
      outputNanosPerMillion: perMillion(text("output"), `${where}.output`),
      effectiveFrom: timestampFromMs(instant(text("effective_from"), `${where}.effective_from`)),
      source: text("source"),
    };
  });
}
