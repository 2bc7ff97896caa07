package guard

import (
	"context"

	"iter"
	"time"

	"connectrpc.com/connect"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
)

// Codes a WatchBudget stream ends with that a reconnect cures.
var watchReconnectCodes = map[connect.Code]bool{
	connect.CodeUnavailable: true, connect.CodeResourceExhausted: true, connect.CodeDeadlineExceeded: true,
	connect.CodeInternal: true, connect.CodeUnknown: true, connect.CodeAborted: true,
}

// Watch yields WatchBudget's events for project, reconnecting with backoff
// when the stream breaks (each connection starts with a SNAPSHOT). An error a
// reconnect cannot cure is yielded once, as a *TallyError, and ends it; so
// does ctx ending (without an error).
//
//	for event, err := range tally.Watch(ctx, "team-a/chat") { ... }
func (t *Tally) Watch(ctx context.Context, project string) iter.Seq2[*budgetv1.BudgetEvent, error] {
	return func(yield func(*budgetv1.BudgetEvent, error) bool) {
		attempt := 0
		for {
			stream, err := t.Client.WatchBudget(ctx, connect.NewRequest(&budgetv1.WatchBudgetRequest{ProjectId: project}))
			if err == nil {
				for stream.Receive() {
					attempt = 0
					if event := stream.Msg().GetEvent(); event != nil && !yield(event, nil) {
						_ = stream.Close()
						return
					}
				}
				err = stream.Err()
				_ = stream.Close()
			}
			if ctx.Err() != nil {
				return // ours: the caller stopped watching
			}
			if err != nil {
				f := failureOf(ctx, err)
				if !watchReconnectCodes[f.code] {
					yield(nil, &TallyError{Method: "WatchBudget", Code: f.code, Message: f.message, Attempts: 1, Err: err})
					return
				}
			}
			t.stats.watchReconnects.Add(1)
			select {
			case <-time.After(t.retry.backoff(attempt)):
				attempt++
			case <-ctx.Done():
				return
			}
		}
	}
}
