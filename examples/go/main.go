// A minimal agent loop with Tally: reserve the worst case of the next call,
// call the model, record what the call actually cost (settling the
// reservation).
//
// Reserving (CheckBudget with Reserve) rather than only checking is what keeps
// many agents of one project from together spending past its limit: each
// allowed call holds its estimate until it records. Both writes carry the
// call's request_id, so either can be retried after a timeout without counting
// or holding twice.
//
// The model call is simulated (deterministic token counts, no network) so the
// example runs anywhere; replace callModel with your LLM client. Run it
// against a local Tally (`npm start`):
//
//	go -C examples/go run .
//
// Environment: TALLY_URL (default http://127.0.0.1:8080; https://... for a
// Tally with TLS, verified against the system's CA certificates or
// SSL_CERT_FILE); TALLY_API_KEY (sent as "Authorization: Bearer <key>" on
// every call; needed when the server has API keys: an admin key, or a project
// key covering TALLY_PROJECT); TALLY_PROJECT (default: a new project with a
// $0.005 budget, so you see the budget refuse a call).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
	"tally.local/gen/go/tally/budget/v1/budgetv1connect"
)

// gpt-4o-mini list prices, in nano-USD per token ($0.15 and $0.60 per million).
const (
	inputNanosPerToken  = 150
	outputNanosPerToken = 600
	maxOutputTokens     = 500
	maxSteps            = 50 // the loop is bounded even without a budget
)

type modelResult struct {
	text                      string
	inputTokens, outputTokens int64
}

// callModel stands in for a real LLM call: a deterministic answer and token counts.
func callModel(prompt string, step int) modelResult {
	return modelResult{
		text:         fmt.Sprintf("answer %d", step),
		inputTokens:  int64(1_500 + 10*len(prompt)),
		outputTokens: int64(200 + (step*37)%300), // never above maxOutputTokens
	}
}

// estimateNanos is the worst case for the next call: its input plus the most output we allow.
func estimateNanos(prompt string) int64 {
	return int64(1_500+10*len(prompt))*inputNanosPerToken + maxOutputTokens*outputNanosPerToken
}

// withRetry retries a call that carries a request_id: Tally answers a repeated
// RecordCost or reservation with the first answer, never counting twice.
func withRetry[T any](call func() (*connect.Response[T], error)) (*T, error) {
	for attempt := 0; ; attempt++ {
		res, err := call()
		if err == nil {
			return res.Msg, nil
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeDeadlineExceeded:
			if attempt < 4 {
				time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
				continue
			}
		}
		return nil, err
	}
}

// bearer sends the API key on every call: Tally with keys configured answers
// UNAUTHENTICATED without it.
func bearer(key string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+key)
			return next(ctx, req)
		}
	}
}

// usd formats nanos as exact decimal dollars: money never goes through a float.
func usd(nanos int64) string {
	sign := ""
	if nanos < 0 {
		sign, nanos = "-", -nanos
	}
	return fmt.Sprintf("%s$%d.%09d", sign, nanos/1_000_000_000, nanos%1_000_000_000)
}

func main() {
	baseURL := os.Getenv("TALLY_URL")
	if baseURL == "" {
		baseURL = "http://127.0.0.1:8080"
	}
	var options []connect.ClientOption
	if key := os.Getenv("TALLY_API_KEY"); key != "" {
		options = append(options, connect.WithInterceptors(bearer(key)))
	}
	// Connect protocol over HTTP/1.1 (over TLS for an https:// URL); add
	// connect.WithGRPC() and an h2c transport (see README.md) to speak gRPC instead.
	tally := budgetv1connect.NewBudgetServiceClient(&http.Client{Timeout: 5 * time.Second}, baseURL, options...)
	ctx := context.Background()

	runID := make([]byte, 6)
	if _, err := rand.Read(runID); err != nil {
		log.Fatal(err)
	}
	run := hex.EncodeToString(runID)
	project := os.Getenv("TALLY_PROJECT")
	if project == "" {
		project = "example-go-" + run
		if _, err := tally.SetProjectBudget(ctx, connect.NewRequest(&budgetv1.SetProjectBudgetRequest{ProjectId: project, LimitNanos: 5_000_000})); err != nil {
			log.Fatalf("SetProjectBudget: %v", err)
		}
		fmt.Printf("project %s: budget $0.005\n", project)
	}

	recorded := 0
	for step := 1; step <= maxSteps; step++ {
		prompt := fmt.Sprintf("step %d: summarise the previous answer", step)
		requestID := fmt.Sprintf("%s-step-%d", run, step)
		// 1. Reserve the worst case before spending (held for 2 minutes at most).
		reserve := &budgetv1.CheckBudgetRequest{
			ProjectId: project, EstimatedCostNanos: estimateNanos(prompt),
			Reserve: true, HoldTtl: durationpb.New(2 * time.Minute), RequestId: requestID,
		}
		check, err := withRetry(func() (*connect.Response[budgetv1.CheckBudgetResponse], error) {
			return tally.CheckBudget(ctx, connect.NewRequest(reserve))
		})
		if err != nil {
			log.Fatalf("CheckBudget: %v", err)
		}
		if !check.GetAllowed() {
			fmt.Printf("budget refused step %d: %s, %d nanos left\n", step, check.GetReason(), check.GetRemainingNanos())
			break
		}
		// 2. Call the model.
		result := callModel(prompt, step)
		// 3. Record what it actually cost, settling the hold.
		cost := result.inputTokens*inputNanosPerToken + result.outputTokens*outputNanosPerToken
		record := &budgetv1.RecordCostRequest{
			ProjectId: project, CostNanos: cost, InputTokens: result.inputTokens, OutputTokens: result.outputTokens,
			Model: "gpt-4o-mini", AgentId: "example-go", RequestId: requestID, HoldId: check.GetHoldId(),
		}
		recordCost := func() (*connect.Response[budgetv1.RecordCostResponse], error) {
			return tally.RecordCost(ctx, connect.NewRequest(record))
		}
		res, err := withRetry(recordCost)
		if connect.CodeOf(err) == connect.CodeFailedPrecondition {
			// The hold expired before the call ended (or was released): the
			// cost is real all the same, so record it without the hold.
			record.HoldId = ""
			res, err = withRetry(recordCost)
		}
		if err != nil {
			var connectErr *connect.Error
			if errors.As(err, &connectErr) {
				log.Fatalf("RecordCost: %s: %s", connectErr.Code(), connectErr.Message())
			}
			log.Fatalf("RecordCost: %v", err)
		}
		recorded++
		fmt.Printf("step %d: %q cost %d nanos, project total %d\n", step, result.text, cost, res.GetProjectCost().GetTotalCostNanos())
	}

	totals, err := tally.GetProjectCost(ctx, connect.NewRequest(&budgetv1.GetProjectCostRequest{ProjectId: project}))
	if err != nil {
		log.Fatalf("GetProjectCost: %v", err)
	}
	fmt.Printf("recorded %d calls; project %s spent %s over %d calls\n", recorded, project, usd(totals.Msg.GetProjectCost().GetTotalCostNanos()), totals.Msg.GetProjectCost().GetRecordCount())
}
