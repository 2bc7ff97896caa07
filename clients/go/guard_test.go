package guard

import (
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestUsageAdapters(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want Usage
	}{
		{"openai chat with cache", `{"model":"gpt-x","usage":{"prompt_tokens":1200,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1024}}}`,
			Usage{InputTokens: 176, CachedInputTokens: 1024, OutputTokens: 300, Model: "gpt-x"}},
		{"openai responses", `{"model":"gpt-y","usage":{"input_tokens":800,"input_tokens_details":{"cached_tokens":512},"output_tokens":100,"output_tokens_details":{"reasoning_tokens":40}}}`,
			Usage{InputTokens: 288, CachedInputTokens: 512, OutputTokens: 100, Model: "gpt-y"}},
		{"anthropic with cache writes", `{"model":"claude-z","usage":{"input_tokens":50,"cache_read_input_tokens":2000,"cache_creation_input_tokens":1000,"output_tokens":400}}`,
			Usage{InputTokens: 50, CachedInputTokens: 2000, CacheWriteTokens: 1000, OutputTokens: 400, Model: "claude-z"}},
		{"a bare usage", `{"prompt_tokens":7,"completion_tokens":3}`, Usage{InputTokens: 7, OutputTokens: 3}},
	}
	for _, c := range cases {
		got, err := UsageFrom([]byte(c.in))
		if err != nil || got != c.want {
			t.Errorf("%s: UsageFrom = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{`{"usage":{"prompt_tokens":-1}}`, `{"usage":{"prompt_tokens":1.5}}`, `{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":6}}}`, `{"usage":{"foo":1}}`, `not json`} {
		if _, err := UsageFrom([]byte(bad)); err == nil {
			t.Errorf("UsageFrom(%s) accepted it", bad)
		}
	}
	// An SDK-like struct reads the same as its JSON.
	type details struct {
		CachedTokens int64 `json:"cached_tokens"`
	}
	type usage struct {
		PromptTokens        int64   `json:"prompt_tokens"`
		CompletionTokens    int64   `json:"completion_tokens"`
		PromptTokensDetails details `json:"prompt_tokens_details"`
	}
	got, err := UsageFrom(struct {
		Model string `json:"model"`
		Usage usage  `json:"usage"`
	}{"m", usage{10, 2, details{4}}})
	if err != nil || got != (Usage{InputTokens: 6, CachedInputTokens: 4, OutputTokens: 2, Model: "m"}) {
		t.Errorf("struct: %+v, %v", got, err)
	}
}

func TestStreamUsage(t *testing.T) {
	var anthropic StreamUsage
	for _, ev := range []string{
		`{"type":"message_start","message":{"model":"claude-z","usage":{"input_tokens":20,"cache_read_input_tokens":3000,"output_tokens":1}}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":250}}`,
	} {
		if err := anthropic.Observe([]byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if anthropic.Usage == nil || *anthropic.Usage != (Usage{InputTokens: 20, CachedInputTokens: 3000, OutputTokens: 250, Model: "claude-z"}) {
		t.Errorf("anthropic stream: %+v", anthropic.Usage)
	}
	var openai StreamUsage
	_ = openai.Observe([]byte(`{"model":"gpt-x","choices":[{"delta":{"content":"Hi"}}],"usage":null}`))
	if openai.Usage != nil {
		t.Errorf("usage before the final chunk: %+v", openai.Usage)
	}
	_ = openai.Observe([]byte(`{"model":"gpt-x","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":250}}`))
	if openai.Usage == nil || *openai.Usage != (Usage{InputTokens: 1000, OutputTokens: 250, Model: "gpt-x"}) {
		t.Errorf("openai stream: %+v", openai.Usage)
	}
}

func TestRetryPolicy(t *testing.T) {
	r := Retry{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}.withDefaults()
	for attempt := range 8 {
		d := r.backoff(attempt)
		ceiling := min(r.MaxDelay, r.BaseDelay<<attempt)
		if d < ceiling/2 || d > ceiling {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", attempt, d, ceiling/2, ceiling)
		}
	}
	if _, ok := r.delay(failure{code: connect.CodeResourceExhausted}, 0); ok {
		t.Error("RESOURCE_EXHAUSTED without RetryInfo is retried")
	}
	if d, ok := r.delay(failure{code: connect.CodeResourceExhausted, hasRetry: true, retryInfo: 700 * time.Millisecond}, 0); !ok || d < 700*time.Millisecond {
		t.Errorf("RESOURCE_EXHAUSTED with RetryInfo 700ms: %v %v", d, ok)
	}
	for _, code := range []connect.Code{connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeFailedPrecondition, connect.CodeUnauthenticated} {
		if _, ok := r.delay(failure{code: code}, 0); ok {
			t.Errorf("%v is retried", code)
		}
	}
	// google.rpc.RetryInfo { retry_delay: { seconds: 1, nanos: 500000000 } }
	inner := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	inner = protowire.AppendVarint(protowire.AppendTag(inner, 2, protowire.VarintType), 500_000_000)
	msg := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), inner)
	if d, ok := parseRetryInfo(msg); !ok || d != 1500*time.Millisecond {
		t.Errorf("parseRetryInfo = %v %v", d, ok)
	}
}

func TestErrors(t *testing.T) {
	retryable := &TallyError{Method: "RecordCost", Code: connect.CodeUnavailable, Attempts: 3, Retryable: true}
	if !errors.Is(retryable, ErrTallyUnavailable) {
		t.Error("a retryable failure is not ErrTallyUnavailable")
	}
	final := &TallyError{Method: "CheckBudget", Code: connect.CodeUnauthenticated, Attempts: 1}
	if errors.Is(final, ErrTallyUnavailable) {
		t.Error("UNAUTHENTICATED counts as unavailable")
	}
}
