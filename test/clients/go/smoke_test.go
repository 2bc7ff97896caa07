// Smoke test of the generated Go client (gen/go: protoc-gen-go messages and
// protoc-gen-connect-go clients) against a running Tally. It starts nothing
// itself: test/clients/go.test.ts starts Tally on an ephemeral port and runs
// `go test` with TALLY_URL set.
//
//	TALLY_URL=http://127.0.0.1:8080 go test ./...   (in test/clients/go)
package clienttest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
	"tally.local/gen/go/tally/budget/v1/budgetv1connect"
)

const usd = int64(1_000_000_000) // nanos

func baseURL(t *testing.T) string {
	url := os.Getenv("TALLY_URL")
	if url == "" {
		t.Fatal("TALLY_URL is not set: point it at a running Tally, e.g. http://127.0.0.1:8080")
	}
	return url
}

// h2c: HTTP/2 without TLS, which gRPC needs on a cleartext port.
func h2cClient() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: protocols}, Timeout: 10 * time.Second}
}

// The same client speaks Connect (over HTTP/1.1 here) and gRPC (over h2c).
func clients(t *testing.T) map[string]budgetv1connect.BudgetServiceClient {
	url := baseURL(t)
	return map[string]budgetv1connect.BudgetServiceClient{
		"connect": budgetv1connect.NewBudgetServiceClient(&http.Client{Timeout: 10 * time.Second}, url),
		"grpc":    budgetv1connect.NewBudgetServiceClient(h2cClient(), url, connect.WithGRPC()),
	}
}

func project(t *testing.T, protocol string) string {
	// Unique per run, so the test also passes against a long-lived Tally.
	return fmt.Sprintf("go-smoke-%s-%d", protocol, time.Now().UnixNano())
}

func TestBudgetCheckRecordRetryRead(t *testing.T) {
	for protocol, client := range clients(t) {
		t.Run(protocol, func(t *testing.T) {
			ctx := context.Background()
			p := project(t, protocol)

			budget, err := client.SetProjectBudget(ctx, connect.NewRequest(&budgetv1.SetProjectBudgetRequest{ProjectId: p, LimitNanos: 10 * usd}))
			if err != nil {
				t.Fatalf("SetProjectBudget: %v", err)
			}
			if b := budget.Msg.GetBudget(); !b.GetConfigured() || b.GetLimitNanos() != 10*usd || b.GetCurrency() != "USD" {
				t.Fatalf("budget = %v", b)
			}

			check, err := client.CheckBudget(ctx, connect.NewRequest(&budgetv1.CheckBudgetRequest{ProjectId: p, EstimatedCostNanos: 2 * usd}))
			if err != nil {
				t.Fatalf("CheckBudget: %v", err)
			}
			if !check.Msg.GetAllowed() || check.Msg.GetReason() != budgetv1.BudgetDecisionReason_BUDGET_DECISION_REASON_WITHIN_BUDGET || check.Msg.GetRemainingNanos() != 10*usd {
				t.Fatalf("check = %v", check.Msg)
			}

			record := &budgetv1.RecordCostRequest{
				ProjectId: p, CostNanos: 1_500_000_000, InputTokens: 1200, OutputTokens: 300,
				Model: "gpt-4o-mini", AgentId: "go-smoke", RequestId: "call-0001",
			}
			first, err := client.RecordCost(ctx, connect.NewRequest(record))
			if err != nil {
				t.Fatalf("RecordCost: %v", err)
			}
			if first.Msg.GetDuplicate() || first.Msg.GetRequestId() != "call-0001" || first.Msg.GetProjectCost().GetTotalCostNanos() != 1_500_000_000 || first.Msg.GetProjectCost().GetRecordCount() != 1 {
				t.Fatalf("first record = %v", first.Msg)
			}

			// A retry (same request_id, same payload) is counted once.
			retry, err := client.RecordCost(ctx, connect.NewRequest(record))
			if err != nil {
				t.Fatalf("RecordCost retry: %v", err)
			}
			if !retry.Msg.GetDuplicate() || retry.Msg.GetProjectCost().GetTotalCostNanos() != 1_500_000_000 {
				t.Fatalf("retry = %v", retry.Msg)
			}

			read, err := client.GetProjectCost(ctx, connect.NewRequest(&budgetv1.GetProjectCostRequest{ProjectId: p}))
			if err != nil {
				t.Fatalf("GetProjectCost: %v", err)
			}
			totals := read.Msg.GetProjectCost()
			if totals.GetTotalCostNanos() != 1_500_000_000 || totals.GetInputTokens() != 1200 || totals.GetOutputTokens() != 300 || totals.GetRecordCount() != 1 || totals.GetUpdatedAt() == nil {
				t.Fatalf("totals = %v", totals)
			}

			after, err := client.CheckBudget(ctx, connect.NewRequest(&budgetv1.CheckBudgetRequest{ProjectId: p, EstimatedCostNanos: 9 * usd}))
			if err != nil {
				t.Fatalf("CheckBudget after: %v", err)
			}
			if after.Msg.GetAllowed() || after.Msg.GetReason() != budgetv1.BudgetDecisionReason_BUDGET_DECISION_REASON_EXCEEDS_REMAINING || after.Msg.GetRemainingNanos() != 8_500_000_000 {
				t.Fatalf("check after = %v", after.Msg)
			}
		})
	}
}

func TestInvalidArgumentIsAConnectError(t *testing.T) {
	for protocol, client := range clients(t) {
		t.Run(protocol, func(t *testing.T) {
			ctx := context.Background()
			p := project(t, protocol)
			_, err := client.RecordCost(ctx, connect.NewRequest(&budgetv1.RecordCostRequest{ProjectId: p, CostNanos: -1, RequestId: "bad"}))
			var connectErr *connect.Error
			if !errors.As(err, &connectErr) {
				t.Fatalf("want a *connect.Error, got %T: %v", err, err)
			}
			if connectErr.Code() != connect.CodeInvalidArgument {
				t.Fatalf("code = %v, want invalid_argument", connectErr.Code())
			}
			if !strings.Contains(connectErr.Message(), "cost_nanos must be >= 0") {
				t.Fatalf("message = %q", connectErr.Message())
			}
			read, err := client.GetProjectCost(ctx, connect.NewRequest(&budgetv1.GetProjectCostRequest{ProjectId: p}))
			if err != nil {
				t.Fatalf("GetProjectCost: %v", err)
			}
			if n := read.Msg.GetProjectCost().GetRecordCount(); n != 0 {
				t.Fatalf("record_count = %d after a refused write, want 0", n)
			}
		})
	}
}
