package guard

// The failure policies and the bounded outbox, against a Tally that cannot be
// reached: loopback port 1 refuses every connection, so no server is needed
// and every call fails the way a dead Tally makes it fail (UNAVAILABLE).

import (
	"context"
	"errors"
	"testing"
	"time"
)

const unreachable = "http://127.0.0.1:1"

var quick = Retry{AttemptsMax: 3, Total: 300 * time.Millisecond, BaseDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond, CallTimeout: 100 * time.Millisecond}

func TestFailClosedRefusesWhenTallyIsUnreachable(t *testing.T) {
	tally, err := New(Options{URL: unreachable, Retry: quick})
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	_, err = tally.Guard(context.Background(), GuardOptions{Project: "p", EstimateNanos: 1}, func(context.Context, *Call) error { ran = true; return nil })
	var te *TallyError
	if !errors.Is(err, ErrTallyUnavailable) || !errors.As(err, &te) || te.Attempts < 2 || ran {
		t.Fatalf("err %v, ran %v", err, ran)
	}
	if s := tally.Stats(); s.Retries != int64(te.Attempts-1) || s.Unchecked != 0 {
		t.Fatalf("stats %+v for %d attempts", s, te.Attempts)
	}
}

func TestFailOpenRunsUncheckedAndKeepsRecordsInTheBoundedOutbox(t *testing.T) {
	// FlushInterval an hour: nothing is flushed behind the test's back.
	tally, err := New(Options{URL: unreachable, Retry: quick, FailurePolicy: FailOpen, FailOpenAfter: 100 * time.Millisecond, FlushInterval: time.Hour, OutboxMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	var queued []string
	for i := range 3 {
		call, err := tally.Guard(context.Background(), GuardOptions{Project: "p", EstimateNanos: 1}, func(_ context.Context, call *Call) error {
			if call.Decision != Unchecked || call.HoldID != "" {
				t.Errorf("call %d: decision %s, hold %q", i, call.Decision, call.HoldID)
			}
			return call.ReportCost(int64(100+i), Tokens{})
		})
		if i < 2 {
			if err != nil || call.Outcome != Queued {
				t.Fatalf("call %d: %v, outcome %s", i, err, call.Outcome)
			}
			queued = append(queued, call.RequestID)
			continue
		}
		// The third does not fit: it comes back to the caller, never dropped silently.
		var full *OutboxFullError
		if !errors.As(err, &full) || full.Record.GetCostNanos() != 102 || full.Record.GetRequestId() != call.RequestID {
			t.Fatalf("the third record: %v, want an OutboxFullError carrying it", err)
		}
	}
	if tally.OutboxSize() != 2 {
		t.Fatalf("outbox holds %d, want 2", tally.OutboxSize())
	}
	// Close cannot deliver them: they come back in order, with their request ids.
	var left *OutboxNotEmptyError
	err = tally.Close(context.Background(), 50*time.Millisecond)
	if !errors.As(err, &left) || len(left.Records) != 2 || left.Records[0].GetRequestId() != queued[0] || left.Records[1].GetRequestId() != queued[1] {
		t.Fatalf("Close: %v", err)
	}
	if s := tally.Stats(); s.Unchecked != 3 || s.Queued != 2 || s.Flushed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAFailedFuncsReportThatCannotBeQueuedIsNotLost(t *testing.T) {
	tally, err := New(Options{URL: unreachable, Retry: quick, FailurePolicy: FailOpen, FailOpenAfter: 100 * time.Millisecond, FlushInterval: time.Hour, OutboxMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	report := func(_ context.Context, call *Call) error { return call.ReportCost(7, Tokens{}) }
	if _, err := tally.Guard(context.Background(), GuardOptions{Project: "p", EstimateNanos: 1}, report); err != nil {
		t.Fatal(err)
	}
	// Spent, then failed: the cost is owed, the outbox is full, the caller must hear both.
	failed := errors.New("the stream broke after the usage arrived")
	_, err = tally.Guard(context.Background(), GuardOptions{Project: "p", EstimateNanos: 1}, func(ctx context.Context, call *Call) error {
		_ = report(ctx, call)
		return failed
	})
	var full *OutboxFullError
	if !errors.Is(err, failed) || !errors.As(err, &full) || full.Record.GetCostNanos() != 7 {
		t.Fatalf("got %v, want the func's error and the OutboxFullError", err)
	}
}

func TestAPanicInTheFuncPanicsOnAndRecordsNothing(t *testing.T) {
	tally, err := New(Options{URL: unreachable, Retry: quick, FailurePolicy: FailOpen, FailOpenAfter: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v, want the func's panic", r)
		}
		if tally.OutboxSize() != 0 {
			t.Fatal("a call that reported nothing left a record")
		}
	}()
	_, _ = tally.Guard(context.Background(), GuardOptions{Project: "p", EstimateNanos: 1}, func(context.Context, *Call) error { panic("boom") })
	t.Fatal("the panic was swallowed")
}

func TestBadOptionsFailBeforeAnyCall(t *testing.T) {
	for name, o := range map[string]Options{
		"policy":         {FailurePolicy: "fail_sometimes"},
		"scheme":         {URL: "tcp://127.0.0.1:1"},
		"CA without PEM": {URL: "https://127.0.0.1:1", CAPEM: []byte("not a certificate")},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New: %s accepted", name)
		}
	}
	tally, err := New(Options{URL: unreachable, Retry: quick})
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]GuardOptions{
		"no project":         {EstimateNanos: 1},
		"estimate and model": {Project: "p", EstimateNanos: 1, Model: "m"},
		"negative estimate":  {Project: "p", EstimateNanos: -1},
		"TTL under 1 s":      {Project: "p", EstimateNanos: 1, TTL: time.Millisecond},
	} {
		ran := false
		if _, err := tally.Guard(context.Background(), o, func(context.Context, *Call) error { ran = true; return nil }); err == nil || ran {
			t.Errorf("Guard: %s: err %v, ran %v", name, err, ran)
		}
	}
	if s := tally.Stats(); s != (Stats{}) {
		t.Errorf("calls were made: %+v", s)
	}
}
