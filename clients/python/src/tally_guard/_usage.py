"""Usage adapters: an OpenAI-style or Anthropic-style response (or its `usage`,
or the events of a stream) -> the token counts Tally records and prices.

Tally's record splits input by price: input_tokens are billed at the full
input price, cached_input_tokens at the cache-read price, cache_write_tokens at
the cache-write price (see RecordCostRequest in the proto). Providers report
them differently:

- OpenAI Chat Completions: usage.prompt_tokens includes
  prompt_tokens_details.cached_tokens -> input = prompt - cached.
- OpenAI Responses: usage.input_tokens includes
  input_tokens_details.cached_tokens -> input = input_tokens - cached.
- Anthropic Messages: usage.input_tokens excludes the cache;
  cache_read_input_tokens and cache_creation_input_tokens are separate.

Objects may be dicts (parsed JSON) or SDK objects (attributes): both are read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional


@dataclass(frozen=True)
class Usage:
    """One call's tokens as Tally records them, and the model that served it."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    model: str = ""

    def __post_init__(self) -> None:
        for name in ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Usage.{name} must be an int >= 0, got {value!r}")


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(obj: Any, name: str) -> int:
    value = _get(obj, name)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"usage field {name} must be an int >= 0, got {value!r}")
    return value


def _has(obj: Any, name: str) -> bool:
    return _get(obj, name) is not None


def _usage_of(obj: Any) -> tuple[Any, str]:
    """(the usage object, the model) of a response, or of a usage object itself."""
    usage = _get(obj, "usage")
    model = _get(obj, "model")
    if usage is None:
        return obj, ""
    return usage, model if isinstance(model, str) else ""


def from_openai(obj: Any) -> Usage:
    """An OpenAI Chat Completions or Responses response, or its `usage`."""
    usage, model = _usage_of(obj)
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        cached = _int(_get(usage, "prompt_tokens_details"), "cached_tokens")
        prompt = _int(usage, "prompt_tokens")
        if cached > prompt:
            raise ValueError(f"cached_tokens {cached} exceeds prompt_tokens {prompt}")
        return Usage(input_tokens=prompt - cached, cached_input_tokens=cached, output_tokens=_int(usage, "completion_tokens"), model=model)
    cached = _int(_get(usage, "input_tokens_details"), "cached_tokens")
    total_input = _int(usage, "input_tokens")
    if cached > total_input:
        raise ValueError(f"cached_tokens {cached} exceeds input_tokens {total_input}")
    return Usage(input_tokens=total_input - cached, cached_input_tokens=cached, output_tokens=_int(usage, "output_tokens"), model=model)


def from_anthropic(obj: Any) -> Usage:
    """An Anthropic Messages response, or its `usage`."""
    usage, model = _usage_of(obj)
    return Usage(
        input_tokens=_int(usage, "input_tokens"),
        cached_input_tokens=_int(usage, "cache_read_input_tokens"),
        cache_write_tokens=_int(usage, "cache_creation_input_tokens"),
        output_tokens=_int(usage, "output_tokens"),
        model=model,
    )


def usage_from(obj: Any) -> Usage:
    """A Usage as it is, or a response / usage object of either provider,
    told apart by its fields (OpenAI's prompt_tokens or *_tokens_details,
    Anthropic's cache_* fields; plain input/output tokens read the same in both)."""
    if isinstance(obj, Usage):
        return obj
    usage, _ = _usage_of(obj)
    if usage is None:
        raise ValueError("no usage in the response")
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens") or _has(usage, "input_tokens_details") or _has(usage, "output_tokens_details"):
        return from_openai(obj)
    if _has(usage, "input_tokens") or _has(usage, "output_tokens") or _has(usage, "cache_read_input_tokens"):
        return from_anthropic(obj)
    raise ValueError(f"not an OpenAI or Anthropic usage object: {usage!r}")


class StreamUsage:
    """Collects the final usage of a streamed response from its chunks/events:

    - OpenAI Chat Completions: the last chunk carries `usage` (only with
      stream_options={"include_usage": True}; every other chunk has none).
    - OpenAI Responses: the "response.completed" event's response.usage.
    - Anthropic: "message_start" carries message.usage (input and cache
      counts), each "message_delta" the cumulative usage so far (output_tokens).

    `usage` stays None until a chunk with usage was seen: a stream that ends
    without one must not be recorded as free.
    """

    def __init__(self) -> None:
        self.usage: Optional[Usage] = None
        self.model = ""

    def observe(self, chunk: Any) -> None:
        kind = _get(chunk, "type")
        model = _get(chunk, "model")
        if isinstance(model, str) and model:
            self.model = model
        if kind == "message_start":
            message = _get(chunk, "message")
            message_model = _get(message, "model")
            if isinstance(message_model, str) and message_model:
                self.model = message_model
            if _get(message, "usage") is not None:
                self.usage = replace(from_anthropic(_get(message, "usage")), model=self.model)
            return
        if kind == "message_delta":
            delta = _get(chunk, "usage")
            if delta is None:
                return
            base = self.usage or Usage(model=self.model)
            # Cumulative counts: a field present in the delta replaces the one
            # from message_start, an absent one keeps it.
            self.usage = Usage(
                input_tokens=_int(delta, "input_tokens") if _has(delta, "input_tokens") else base.input_tokens,
                cached_input_tokens=_int(delta, "cache_read_input_tokens") if _has(delta, "cache_read_input_tokens") else base.cached_input_tokens,
                cache_write_tokens=_int(delta, "cache_creation_input_tokens") if _has(delta, "cache_creation_input_tokens") else base.cache_write_tokens,
                output_tokens=_int(delta, "output_tokens") if _has(delta, "output_tokens") else base.output_tokens,
                model=self.model,
            )
            return
        if kind == "response.completed":
            response = _get(chunk, "response")
            if _get(response, "usage") is not None:
                self.usage = replace(from_openai(response), model=self.model or _str(_get(response, "model")))
            return
        if _get(chunk, "usage") is not None and (_has(_get(chunk, "usage"), "prompt_tokens") or _has(_get(chunk, "usage"), "completion_tokens")):
            self.usage = replace(from_openai(_get(chunk, "usage")), model=self.model)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
