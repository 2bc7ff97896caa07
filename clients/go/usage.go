package guard

import (
	"encoding/json"
	"fmt"
)

// Usage is one call's tokens as Tally records and prices them, and the model
// that served it. Tally splits input by price: InputTokens at the full input
// price, CachedInputTokens at the cache-read price, CacheWriteTokens at the
// cache-write price.
//   - OpenAI Chat Completions: prompt_tokens includes prompt_tokens_details.cached_tokens.
//   - OpenAI Responses: input_tokens includes input_tokens_details.cached_tokens.
//   - Anthropic Messages: input_tokens excludes the cache; cache_read_input_tokens
//     and cache_creation_input_tokens are separate.
type Usage struct {
	InputTokens       int64
	CachedInputTokens int64
	CacheWriteTokens  int64
	OutputTokens      int64
	Model             string
}

type object = map[string]any

// asObject turns a response (a map, a struct from an SDK, or JSON bytes) into
// a generic JSON object, so one adapter reads every SDK's types.
func asObject(v any) (object, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case object:
		return x, nil
	case []byte:
		var o object
		if err := json.Unmarshal(x, &o); err != nil {
			return nil, fmt.Errorf("usage: not a JSON object: %w", err)
		}
		return o, nil
	case json.RawMessage:
		return asObject([]byte(x))
	case string:
		return asObject([]byte(x))
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("usage: cannot read %T: %w", v, err)
	}
	return asObject(b)
}

func field(o object, name string) object {
	if o == nil {
		return nil
	}
	m, _ := o[name].(object)
	return m
}

func has(o object, name string) bool {
	if o == nil {
		return false
	}
	v, ok := o[name]
	return ok && v != nil
}

func str(o object, name string) string {
	if o == nil {
		return ""
	}
	s, _ := o[name].(string)
	return s
}

// tokens reads a whole, non-negative token count (JSON numbers decode as
// float64: anything fractional, negative or beyond 2^53 is refused).
func tokens(o object, name string) (int64, error) {
	if !has(o, name) {
		return 0, nil
	}
	switch v := o[name].(type) {
	case float64:
		if v < 0 || v != float64(int64(v)) || v > 1<<53 {
			return 0, fmt.Errorf("usage field %s must be a whole number >= 0, got %v", name, v)
		}
		return int64(v), nil
	case int:
		if v >= 0 {
			return int64(v), nil
		}
	case int64:
		if v >= 0 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("usage field %s must be a whole number >= 0, got %v", name, o[name])
}

// usageOf: a response's usage and model, or the object itself when it is a usage.
func usageOf(o object) (object, string) {
	if u := field(o, "usage"); u != nil {
		return u, str(o, "model")
	}
	return o, ""
}

type tokenReader struct {
	err error
}

func (r *tokenReader) get(o object, name string) int64 {
	n, err := tokens(o, name)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n
}

// FromOpenAI reads an OpenAI Chat Completions or Responses response, or its usage.
func FromOpenAI(response any) (Usage, error) {
	o, err := asObject(response)
	if err != nil {
		return Usage{}, err
	}
	usage, model := usageOf(o)
	var r tokenReader
	if has(usage, "prompt_tokens") || has(usage, "completion_tokens") {
		cached := r.get(field(usage, "prompt_tokens_details"), "cached_tokens")
		prompt := r.get(usage, "prompt_tokens")
		if r.err == nil && cached > prompt {
			return Usage{}, fmt.Errorf("cached_tokens %d exceeds prompt_tokens %d", cached, prompt)
		}
		u := Usage{InputTokens: prompt - cached, CachedInputTokens: cached, OutputTokens: r.get(usage, "completion_tokens"), Model: model}
		return u, r.err
	}
	cached := r.get(field(usage, "input_tokens_details"), "cached_tokens")
	input := r.get(usage, "input_tokens")
	if r.err == nil && cached > input {
		return Usage{}, fmt.Errorf("cached_tokens %d exceeds input_tokens %d", cached, input)
	}
	u := Usage{InputTokens: input - cached, CachedInputTokens: cached, OutputTokens: r.get(usage, "output_tokens"), Model: model}
	return u, r.err
}

// FromAnthropic reads an Anthropic Messages response, or its usage.
func FromAnthropic(response any) (Usage, error) {
	o, err := asObject(response)
	if err != nil {
		return Usage{}, err
	}
	usage, model := usageOf(o)
	var r tokenReader
	u := Usage{
		InputTokens:       r.get(usage, "input_tokens"),
		CachedInputTokens: r.get(usage, "cache_read_input_tokens"),
		CacheWriteTokens:  r.get(usage, "cache_creation_input_tokens"),
		OutputTokens:      r.get(usage, "output_tokens"),
		Model:             model,
	}
	return u, r.err
}

// UsageFrom reads a response or usage object of either provider, told apart by its fields.
func UsageFrom(response any) (Usage, error) {
	o, err := asObject(response)
	if err != nil {
		return Usage{}, err
	}
	usage, _ := usageOf(o)
	if usage == nil {
		return Usage{}, fmt.Errorf("no usage in the response")
	}
	for _, f := range []string{"prompt_tokens", "completion_tokens", "input_tokens_details", "output_tokens_details"} {
		if has(usage, f) {
			return FromOpenAI(o)
		}
	}
	for _, f := range []string{"input_tokens", "output_tokens", "cache_read_input_tokens"} {
		if has(usage, f) {
			return FromAnthropic(o)
		}
	}
	b, _ := json.Marshal(usage)
	return Usage{}, fmt.Errorf("not an OpenAI or Anthropic usage object: %s", b)
}

// StreamUsage collects the final usage of a streamed response from its
// chunks/events: OpenAI Chat Completions' last chunk (with stream_options
// include_usage), OpenAI Responses' "response.completed", Anthropic's
// "message_start" plus the cumulative "message_delta" usage. Usage stays nil
// until one was seen: a stream without one must not be recorded as free.
type StreamUsage struct {
	Usage *Usage
	Model string
}

// Observe reads one chunk or event.
func (s *StreamUsage) Observe(chunk any) error {
	o, err := asObject(chunk)
	if err != nil {
		return err
	}
	kind := str(o, "type")
	if m := str(o, "model"); m != "" {
		s.Model = m
	}
	switch kind {
	case "message_start":
		message := field(o, "message")
		if m := str(message, "model"); m != "" {
			s.Model = m
		}
		if has(message, "usage") {
			u, err := FromAnthropic(field(message, "usage"))
			if err != nil {
				return err
			}
			u.Model = s.Model
			s.Usage = &u
		}
		return nil
	case "message_delta":
		delta := field(o, "usage")
		if delta == nil {
			return nil
		}
		base := Usage{Model: s.Model}
		if s.Usage != nil {
			base = *s.Usage
		}
		// Cumulative counts: a field present in the delta replaces the earlier one.
		var r tokenReader
		next := base
		if has(delta, "input_tokens") {
			next.InputTokens = r.get(delta, "input_tokens")
		}
		if has(delta, "cache_read_input_tokens") {
			next.CachedInputTokens = r.get(delta, "cache_read_input_tokens")
		}
		if has(delta, "cache_creation_input_tokens") {
			next.CacheWriteTokens = r.get(delta, "cache_creation_input_tokens")
		}
		if has(delta, "output_tokens") {
			next.OutputTokens = r.get(delta, "output_tokens")
		}
		if r.err != nil {
			return r.err
		}
		next.Model = s.Model
		s.Usage = &next
		return nil
	case "response.completed":
		response := field(o, "response")
		if has(response, "usage") {
			u, err := FromOpenAI(response)
			if err != nil {
				return err
			}
			if s.Model != "" {
				u.Model = s.Model
			} else {
				u.Model = str(response, "model")
			}
			s.Usage = &u
		}
		return nil
	}
	usage := field(o, "usage")
	if has(usage, "prompt_tokens") || has(usage, "completion_tokens") {
		u, err := FromOpenAI(usage)
		if err != nil {
			return err
		}
		u.Model = s.Model
		s.Usage = &u
	}
	return nil
}
