// The grpc-go stubs (gen/go budget_grpc.pb.go, protoc-gen-go-grpc) against a
// running Tally: a program built on google.golang.org/grpc uses Tally without
// connect-go. Same server and TALLY_URL as smoke_test.go.
package clienttest

import (
	"context"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
)

func grpcGoClient(t *testing.T) budgetv1.BudgetServiceClient {
	u, err := url.Parse(baseURL(t))
	if err != nil {
		t.Fatalf("TALLY_URL: %v", err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return budgetv1.NewBudgetServiceClient(conn)
}

func TestGrpcGoStubs(t *testing.T) {
	client := grpcGoClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := project(t, "grpc-go")

	if _, err := client.SetProjectBudget(ctx, &budgetv1.SetProjectBudgetRequest{ProjectId: p, LimitNanos: 10 * usd}); err != nil {
		t.Fatalf("SetProjectBudget: %v", err)
	}
	record := &budgetv1.RecordCostRequest{ProjectId: p, CostNanos: 3 * usd, InputTokens: 10, OutputTokens: 5, RequestId: "grpc-go-0001"}
	first, err := client.RecordCost(ctx, record)
	if err != nil {
		t.Fatalf("RecordCost: %v", err)
	}
	if first.GetDuplicate() || first.GetProjectCost().GetTotalCostNanos() != 3*usd {
		t.Fatalf("first = %v", first)
	}
	retry, err := client.RecordCost(ctx, record)
	if err != nil || !retry.GetDuplicate() || retry.GetProjectCost().GetTotalCostNanos() != 3*usd {
		t.Fatalf("retry = %v, %v", retry, err)
	}
	check, err := client.CheckBudget(ctx, &budgetv1.CheckBudgetRequest{ProjectId: p, EstimatedCostNanos: 8 * usd})
	if err != nil {
		t.Fatalf("CheckBudget: %v", err)
	}
	if check.GetAllowed() || check.GetRemainingNanos() != 7*usd || check.GetReason() != budgetv1.BudgetDecisionReason_BUDGET_DECISION_REASON_EXCEEDS_REMAINING {
		t.Fatalf("check = %v", check)
	}

	// A server stream through the grpc-go stub: the first event is the snapshot.
	watch, err := client.WatchBudget(ctx, &budgetv1.WatchBudgetRequest{ProjectId: p})
	if err != nil {
		t.Fatalf("WatchBudget: %v", err)
	}
	event, err := watch.Recv()
	if err != nil {
		t.Fatalf("WatchBudget Recv: %v", err)
	}
	if event.GetEvent().GetKind() != budgetv1.BudgetEventKind_BUDGET_EVENT_KIND_SNAPSHOT || event.GetEvent().GetProjectCost().GetTotalCostNanos() != 3*usd {
		t.Fatalf("first event = %v", event)
	}

	// Errors are gRPC statuses with Tally's code and message.
	_, err = client.RecordCost(ctx, &budgetv1.RecordCostRequest{ProjectId: p, CostNanos: -1, RequestId: "bad"})
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
		t.Fatalf("negative cost: %v, want InvalidArgument", err)
	}
}
