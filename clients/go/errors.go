package guard

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
)

// TallyError is a call to Tally that failed: Code is the status Tally (or the
// transport) gave, Attempts how often the request was sent (same request id).
// Retryable means Tally could not decide (UNAVAILABLE, DEADLINE_EXCEEDED, or
// RESOURCE_EXHAUSTED with a retry time) rather than refused: what the failure
// policy and the outbox apply to; errors.Is(err, ErrTallyUnavailable) tests it.
type TallyError struct {
	Method    string
	Code      connect.Code
	Message   string
	Attempts  int
	Retryable bool
	Err       error
}

func (e *TallyError) Error() string {
	plural := "s"
	if e.Attempts == 1 {
		plural = ""
	}
	return fmt.Sprintf("%s: %s: %s (after %d attempt%s)", e.Method, e.Code, e.Message, e.Attempts, plural)
}

func (e *TallyError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrTallyUnavailable) true for a retryable failure.
func (e *TallyError) Is(target error) bool { return target == ErrTallyUnavailable && e.Retryable }

// ErrTallyUnavailable: Tally could not be reached (or kept answering
// UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED with a retry time)
// within the retry bounds. Under FailClosed the LLM call does not run.
var ErrTallyUnavailable = errors.New("tally unavailable")

// ErrUsageNotReported: the guarded func returned nil without reporting a cost
// or usage (nor Skip): the hold was released and nothing recorded. For a
// stream: the final usage never arrived (OpenAI: stream_options include_usage).
var ErrUsageNotReported = errors.New("the guarded call reported no usage or cost (call Report, ReportCost, ReportUsage, Observe or Skip); the hold was released, nothing recorded")

// BudgetRefusedError: the budget refused the call; the func never ran.
type BudgetRefusedError struct {
	Check *budgetv1.CheckBudgetResponse
	msg   string
}

func (e *BudgetRefusedError) Error() string { return e.msg }

// OutboxFullError: Tally is unreachable and the outbox already holds OutboxMax
// records; Record was not queued (never dropped silently).
type OutboxFullError struct {
	Record *budgetv1.RecordCostRequest
	Max    int
}

func (e *OutboxFullError) Error() string {
	return fmt.Sprintf("Tally is unreachable and the outbox holds %d records (OutboxMax); record %s was not queued", e.Max, e.Record.GetRequestId())
}

// OutboxNotEmptyError: Close could not deliver every queued record in time.
type OutboxNotEmptyError struct {
	Records []*budgetv1.RecordCostRequest
}

func (e *OutboxNotEmptyError) Error() string {
	return fmt.Sprintf("%d records could not be delivered to Tally before close", len(e.Records))
}
