// Usage adapters: an OpenAI-style or Anthropic-style response (or its `usage`,
// or the chunks/events of a stream) -> the token counts Tally records and
// prices. Tally splits input by price: inputTokens at the full input price,
// cachedInputTokens at the cache-read price, cacheWriteTokens at the
// cache-write price.
// - OpenAI Chat Completions: prompt_tokens includes prompt_tokens_details.cached_tokens.
// - OpenAI Responses: input_tokens includes input_tokens_details.cached_tokens.
// - Anthropic Messages: input_tokens excludes the cache; cache_read_input_tokens
//   and cache_creation_input_tokens are separate.

/** One call's tokens as Tally records them, and the model that served it. */
export interface Usage {
  inputTokens: bigint;
  cachedInputTokens: bigint;
  cacheWriteTokens: bigint;
  outputTokens: bigint;
  model: string;
}

type Json = Record<string, unknown>;

const get = (obj: unknown, name: string): unknown => (obj !== null && typeof obj === "object" ? (obj as Json)[name] : undefined);
const has = (obj: unknown, name: string): boolean => get(obj, name) !== undefined && get(obj, name) !== null;

function tokens(obj: unknown, name: string): bigint {
  const value = get(obj, name);
  if (value === undefined || value === null) return 0n;
  if ((typeof value === "number" && Number.isSafeInteger(value) && value >= 0) || (typeof value === "bigint" && value >= 0n))
    return BigInt(value);
  throw new RangeError(`usage field ${name} must be a whole number >= 0, got ${String(value)}`);
}

function usageOf(obj: unknown): [unknown, string] {
  const usage = get(obj, "usage");
  const model = get(obj, "model");
  return usage === undefined || usage === null ? [obj, ""] : [usage, typeof model === "string" ? model : ""];
}

/** An OpenAI Chat Completions or Responses response, or its `usage`. */
export function fromOpenAI(response: unknown): Usage {
  const [usage, model] = usageOf(response);
  if (has(usage, "prompt_tokens") || has(usage, "completion_tokens")) {
    const cached = tokens(get(usage, "prompt_tokens_details"), "cached_tokens");
    const prompt = tokens(usage, "prompt_tokens");
    if (cached > prompt) throw new RangeError(`cached_tokens ${cached} exceeds prompt_tokens ${prompt}`);
    return {
      inputTokens: prompt - cached,
      cachedInputTokens: cached,
      cacheWriteTokens: 0n,
      outputTokens: tokens(usage, "completion_tokens"),
      model,
    };
  }
  const cached = tokens(get(usage, "input_tokens_details"), "cached_tokens");
  const input = tokens(usage, "input_tokens");
  if (cached > input) throw new RangeError(`cached_tokens ${cached} exceeds input_tokens ${input}`);
  return {
    inputTokens: input - cached,
    cachedInputTokens: cached,
    cacheWriteTokens: 0n,
    outputTokens: tokens(usage, "output_tokens"),
    model,
  };
}

/** An Anthropic Messages response, or its `usage`. */
export function fromAnthropic(response: unknown): Usage {
  const [usage, model] = usageOf(response);
  return {
    inputTokens: tokens(usage, "input_tokens"),
    cachedInputTokens: tokens(usage, "cache_read_input_tokens"),
    cacheWriteTokens: tokens(usage, "cache_creation_input_tokens"),
    outputTokens: tokens(usage, "output_tokens"),
    model,
  };
}

/** A response or usage object of either provider, told apart by its fields. */
export function usageFrom(response: unknown): Usage {
  const [usage] = usageOf(response);
  if (usage === undefined || usage === null) throw new TypeError("no usage in the response");
  if (["prompt_tokens", "completion_tokens", "input_tokens_details", "output_tokens_details"].some((f) => has(usage, f)))
    return fromOpenAI(response);
  if (["input_tokens", "output_tokens", "cache_read_input_tokens"].some((f) => has(usage, f))) return fromAnthropic(response);
  throw new TypeError(`not an OpenAI or Anthropic usage object: ${JSON.stringify(usage)}`);
}

/** Collects the final usage of a streamed response from its chunks/events:
 * OpenAI Chat Completions' last chunk (with stream_options include_usage),
 * OpenAI Responses' "response.completed", Anthropic's "message_start" plus the
 * cumulative "message_delta" usage. `usage` stays undefined until one was seen:
 * a stream without one must not be recorded as free. */
export class StreamUsage {
  usage: Usage | undefined;
  model = "";

  observe(chunk: unknown): void {
    const kind = get(chunk, "type");
    const model = get(chunk, "model");
    if (typeof model === "string" && model !== "") this.model = model;
    if (kind === "message_start") {
      const message = get(chunk, "message");
      const messageModel = get(message, "model");
      if (typeof messageModel === "string" && messageModel !== "") this.model = messageModel;
      if (has(message, "usage")) this.usage = { ...fromAnthropic(get(message, "usage")), model: this.model };
      return;
    }
    if (kind === "message_delta") {
      const delta = get(chunk, "usage");
      if (delta === undefined || delta === null) return;
      const base = this.usage ?? { inputTokens: 0n, cachedInputTokens: 0n, cacheWriteTokens: 0n, outputTokens: 0n, model: this.model };
      // Cumulative counts: a field present in the delta replaces the earlier one.
      this.usage = {
        inputTokens: has(delta, "input_tokens") ? tokens(delta, "input_tokens") : base.inputTokens,
        cachedInputTokens: has(delta, "cache_read_input_tokens") ? tokens(delta, "cache_read_input_tokens") : base.cachedInputTokens,
        cacheWriteTokens: has(delta, "cache_creation_input_tokens") ? tokens(delta, "cache_creation_input_tokens") : base.cacheWriteTokens,
        outputTokens: has(delta, "output_tokens") ? tokens(delta, "output_tokens") : base.outputTokens,
        model: this.model,
      };
      return;
    }
    if (kind === "response.completed") {
      const response = get(chunk, "response");
      const responseModel = get(response, "model");
      if (has(response, "usage"))
        this.usage = { ...fromOpenAI(response), model: this.model || (typeof responseModel === "string" ? responseModel : "") };
      return;
    }
    const usage = get(chunk, "usage");
    if (has(usage, "prompt_tokens") || has(usage, "completion_tokens")) this.usage = { ...fromOpenAI(usage), model: this.model };
  }
}
