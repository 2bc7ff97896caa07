package guard

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
)

// Decision: "allowed" (Tally reserved the estimate) or "unchecked" (FailOpen:
// Tally could not decide; the call runs without a hold).
type Decision string

const (
	Allowed   Decision = "allowed"
	Unchecked Decision = "unchecked"
)

// Outcome of a guarded call once its func returned: settled (recorded with
// the hold), recorded (without one: it expired, or the call was unchecked),
// queued (in the outbox, Tally unreachable), released (nothing reported),
// skipped.
type Outcome string

const (
	Settled  Outcome = "settled"
	Recorded Outcome = "recorded"
	Queued   Outcome = "queued"
	Released Outcome = "released"
	Skipped  Outcome = "skipped"
)

// Tokens labels a cost reported with ReportCost.
type Tokens struct {
	InputTokens, OutputTokens, CachedInputTokens, CacheWriteTokens int64
}

// Call is the guarded call inside Guard: report what it used, then return.
// Returning nil records the report (settling the hold, or without it if it
// expired); returning an error (or panicking, or a cancelled context) before a
// report releases the hold and records nothing. A report made before an error
// is recorded all the same: that money was spent. Safe for use by the func's
// goroutines (a stream read elsewhere may Observe).
type Call struct {
	Project       string
	RequestID     string
	Model         string
	Agent         string
	Decision      Decision
	Check         *budgetv1.CheckBudgetResponse
	HoldID        string
	HoldExpiresAt time.Time
	EstimateNanos int64
	// Outcome and Recorded (Tally's answer; nil when queued or nothing
	// recorded) are set once Guard returns.
	Outcome  Outcome
	Recorded *budgetv1.RecordCostResponse

	mu         sync.Mutex
	usage      *Usage
	costNanos  *int64
	stream     *StreamUsage
	occurredAt time.Time
	skipped    bool
}

func (c *Call) accept(check *budgetv1.CheckBudgetResponse) {
	c.Check = check
	c.HoldID = check.GetHoldId()
	c.EstimateNanos = check.GetEstimatedCostNanos()
	if check.GetHoldExpiresAt() != nil {
		c.HoldExpiresAt = check.GetHoldExpiresAt().AsTime()
	}
}

// Report takes the provider's response or its usage (OpenAI or Anthropic
// style; a map, an SDK struct or JSON bytes): its tokens are recorded and
// Tally prices them from its catalog.
func (c *Call) Report(response any) error {
	u, err := UsageFrom(response)
	if err != nil {
		return err
	}
	c.ReportUsage(u, nil)
	return nil
}

// ReportUsage records these tokens; with costNanos non-nil, that cost as
// you computed it (else Tally prices the tokens).
func (c *Call) ReportUsage(u Usage, costNanos *int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.usage = &u
	c.costNanos = costNanos
	c.occurredAt = time.Now()
}

// ReportCost records the call's cost as you computed it, its tokens as labels.
func (c *Call) ReportCost(costNanos int64, tokens Tokens) error {
	if costNanos < 0 {
		return fmt.Errorf("costNanos must be >= 0, got %d", costNanos)
	}
	c.ReportUsage(Usage{InputTokens: tokens.InputTokens, OutputTokens: tokens.OutputTokens, CachedInputTokens: tokens.CachedInputTokens, CacheWriteTokens: tokens.CacheWriteTokens}, &costNanos)
	return nil
}

// Observe takes one chunk/event of a streamed response; its final usage is recorded.
func (c *Call) Observe(chunk any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == nil {
		c.stream = &StreamUsage{}
	}
	if err := c.stream.Observe(chunk); err != nil {
		return err
	}
	if c.stream.Usage != nil {
		u := *c.stream.Usage
		c.usage = &u
		c.costNanos = nil
		c.occurredAt = time.Now()
	}
	return nil
}

// Skip: no LLM call was made after all: release the hold, record nothing.
func (c *Call) Skip() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skipped = true
}

func (c *Call) reported() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usage != nil
}

func (c *Call) missingUsage() error {
	if c.stream != nil {
		return fmt.Errorf("%w: the stream ended without its final usage (OpenAI: stream_options include_usage)", ErrUsageNotReported)
	}
	return ErrUsageNotReported
}

// recordRequest is the record of what was reported (the same request id as
// the reservation: a retry or a late flush is the same record).
func (c *Call) recordRequest() (*budgetv1.RecordCostRequest, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.usage == nil {
		return nil, c.missingUsage()
	}
	model := c.Model
	if model == "" {
		model = c.usage.Model
	}
	catalog := c.costNanos == nil
	if catalog && model == "" {
		return nil, fmt.Errorf("%w: usage without a cost needs a model for Tally to price it (GuardOptions.Model or the response's model)", ErrUsageNotReported)
	}
	source := budgetv1.CostSource_COST_SOURCE_REPORTED
	var cost int64
	if catalog {
		source = budgetv1.CostSource_COST_SOURCE_CATALOG
	} else {
		cost = *c.costNanos
	}
	return &budgetv1.RecordCostRequest{
		ProjectId:         c.Project,
		RequestId:         c.RequestID,
		InputTokens:       c.usage.InputTokens,
		CachedInputTokens: c.usage.CachedInputTokens,
		CacheWriteTokens:  c.usage.CacheWriteTokens,
		OutputTokens:      c.usage.OutputTokens,
		Model:             model,
		AgentId:           c.Agent,
		HoldId:            c.HoldID,
		CostNanos:         cost,
		CostSource:        source,
		// Part of the payload: a retry or a late flush is the same record, priced at its time.
		OccurredAt: timestamppb.New(c.occurredAt),
	}, nil
}

var errPanicked = errors.New("the guarded func panicked")
