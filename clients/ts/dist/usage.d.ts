/** One call's tokens as Tally records them, and the model that served it. */
export interface Usage {
    inputTokens: bigint;
    cachedInputTokens: bigint;
    cacheWriteTokens: bigint;
    outputTokens: bigint;
    model: string;
}
/** An OpenAI Chat Completions or Responses response, or its `usage`. */
export declare function fromOpenAI(response: unknown): Usage;
/** An Anthropic Messages response, or its `usage`. */
export declare function fromAnthropic(response: unknown): Usage;
/** A response or usage object of either provider, told apart by its fields. */
export declare function usageFrom(response: unknown): Usage;
/** Collects the final usage of a streamed response from its chunks/events:
 * OpenAI Chat Completions' last chunk (with stream_options include_usage),
 * OpenAI Responses' "response.completed", Anthropic's "message_start" plus the
 * cumulative "message_delta" usage. `usage` stays undefined until one was seen:
 * a stream without one must not be recorded as free. */
export declare class StreamUsage {
    usage: Usage | undefined;
    model: string;
    observe(chunk: unknown): void;
}
