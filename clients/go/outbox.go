package guard

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
)

// The outbox: records Tally could not take (unreachable), kept in order and
// delivered with their own request ids when it is back, so nothing is dropped
// silently and a record that did arrive before is answered as a duplicate.

func (t *Tally) enqueue(record *budgetv1.RecordCostRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.outbox) >= t.outboxMax {
		return &OutboxFullError{Record: record, Max: t.outboxMax}
	}
	t.outbox = append(t.outbox, record)
	if !t.flusherOn && !t.closed {
		t.flusherOn = true
		go t.flusher()
	}
	return nil
}

// flusher flushes every FlushInterval while the outbox holds records.
func (t *Tally) flusher() {
	ticker := time.NewTicker(t.flushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-ticker.C:
		}
		t.flushRound(context.Background())
		t.mu.Lock()
		if len(t.outbox) == 0 {
			t.flusherOn = false
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
}

// flushRound delivers queued records in order until one fails retryably.
func (t *Tally) flushRound(ctx context.Context) {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	for {
		t.mu.Lock()
		if len(t.outbox) == 0 {
			t.mu.Unlock()
			return
		}
		record := t.outbox[0]
		t.mu.Unlock()
		res, err := t.deliver(ctx, record)
		if err != nil && errors.Is(err, ErrTallyUnavailable) {
			return
		}
		t.mu.Lock()
		t.outbox = t.outbox[1:]
		if err != nil {
			t.outboxFailed = append(t.outboxFailed, OutboxFailure{Record: record, Err: err})
		}
		t.mu.Unlock()
		if err != nil {
			t.stats.outboxFailed.Add(1)
			if t.onOutboxError != nil {
				t.onOutboxError(record, err)
			}
			continue
		}
		t.stats.flushed.Add(1)
		if res.GetDuplicate() {
			t.stats.duplicates.Add(1)
		}
	}
}

// deliver is one attempt at a queued record (the flush rounds are the retries).
func (t *Tally) deliver(ctx context.Context, record *budgetv1.RecordCostRequest) (*budgetv1.RecordCostResponse, error) {
	for {
		res, err := send(t, ctx, "RecordCost", t.Client.RecordCost, record, t.retry.CallTimeout, 1)
		if _, ok := codeIs(err, connect.CodeFailedPrecondition); ok && record.GetHoldId() != "" {
			record.HoldId = ""
			continue
		}
		return res, err
	}
}

// Flush delivers the outbox (same request ids) until it is empty or timeout
// passed; it returns how many records are still queued.
func (t *Tally) Flush(ctx context.Context, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		t.flushRound(ctx)
		left := time.Until(deadline)
		n := t.OutboxSize()
		if n == 0 || left <= 0 || ctx.Err() != nil {
			return n
		}
		select {
		case <-time.After(min(t.flushInterval, left)):
		case <-ctx.Done():
		}
	}
}

// Close flushes the outbox (at most timeout) and stops the flusher; records
// still queued are returned in an *OutboxNotEmptyError.
func (t *Tally) Close(ctx context.Context, timeout time.Duration) error {
	left := t.Flush(ctx, timeout)
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.stop)
	}
	var rest []*budgetv1.RecordCostRequest
	if left > 0 {
		rest, t.outbox = t.outbox, nil
	}
	t.mu.Unlock()
	if len(rest) > 0 {
		return &OutboxNotEmptyError{Records: rest}
	}
	return nil
}
