// One guarded LLM call with tally.local/guard (clients/go): Guard reserves
// the estimate, runs the func, and settles the hold with what it reported
// (README.md shows the middle of this file). The model call is simulated so
// it runs anywhere; against a local Tally (`npm start`):
//
//	go -C examples/guard-go run .
//
// Environment: TALLY_URL (default http://127.0.0.1:8080), TALLY_API_KEY.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"tally.local/guard"
)

func main() {
	ctx := context.Background()
	tally, err := guard.New(guard.Options{URL: os.Getenv("TALLY_URL"), APIKey: os.Getenv("TALLY_API_KEY")})
	if err != nil {
		panic(err)
	}
	defer tally.Close(ctx, 30*time.Second)
	call, err := tally.Guard(ctx, guard.GuardOptions{Project: "demo", EstimateNanos: 2_000_000, Agent: "readme", TTL: 2 * time.Minute},
		func(ctx context.Context, call *guard.Call) error {
			// response, err := client.Chat.Completions.New(ctx, ...); here its usage as the API returns it:
			response := map[string]any{"model": "gpt-4o-mini", "usage": map[string]any{"prompt_tokens": 1200, "completion_tokens": 300}}
			usage, err := guard.UsageFrom(response)
			cost := int64(1_234_567) // or call.Report(response): Tally prices the tokens
			call.ReportUsage(usage, &cost)
			return err
		})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(call.Outcome, call.Recorded.GetProjectCost().GetTotalCostNanos())
}
