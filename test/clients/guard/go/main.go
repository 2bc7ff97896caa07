// Runs every scenario of ../scenarios.json with tally.local/guard against the
// Tally the harness (../harness.ts) started, and writes the report the
// harness checks against the ledger: the calls that completed (request id and
// cost), failed calls, the client's counters and the runner's own checks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
	"tally.local/guard"
)

type sc = map[string]any

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

type completed struct {
	RequestID string `json:"request_id"`
	CostNanos string `json:"cost_nanos"`
}

type entry struct {
	Completed []completed        `json:"completed"`
	Failed    int                `json:"failed"`
	Stats     map[string]float64 `json:"stats"`
	Checks    []check            `json:"checks"`
}

type report struct {
	mu    sync.Mutex
	entry *entry
}

func (r *report) check(name string, ok bool, detail any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.Checks = append(r.entry.Checks, check{Name: name, OK: ok, Detail: fmt.Sprint(detail)})
}

func (r *report) completed(call *guard.Call, cost int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry.Completed = append(r.entry.Completed, completed{RequestID: call.RequestID, CostNanos: strconv.FormatInt(cost, 10)})
}

func (r *report) failed(err error) {
	r.mu.Lock()
	r.entry.Failed++
	r.mu.Unlock()
	r.check("call failed", false, err)
}

func (r *report) stats(clients ...*guard.Tally) {
	total := map[string]float64{}
	for _, c := range clients {
		s := c.Stats()
		for name, v := range map[string]int64{
			"reserves": s.Reserves, "re_reserves": s.ReReserves, "refused": s.Refused, "unchecked": s.Unchecked, "retries": s.Retries,
			"settled": s.Settled, "recorded_without_hold": s.RecordedWithoutHold, "duplicates": s.Duplicates, "released": s.Released,
			"release_failures": s.ReleaseFailures, "queued": s.Queued, "flushed": s.Flushed, "outbox_failed": s.OutboxFailed,
			"watch_reconnects": s.WatchReconnects,
		} {
			total[name] += float64(v)
		}
	}
	r.mu.Lock()
	r.entry.Stats = total
	r.mu.Unlock()
}

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		panic(name + " is not set")
	}
	return v
}

var (
	tallyURL = env("TALLY_URL")
	adminKey = env("TALLY_API_KEY")
	bound    = 60 * time.Second
	ctx      = context.Background()
)

func num(s sc, name string) int64 {
	switch v := s[name].(type) {
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("%s: %v", name, err))
		}
		return n
	case float64:
		return int64(v)
	}
	panic(fmt.Sprintf("scenario field %s is %T", name, s[name]))
}

func numOr(s sc, name string, fallback int64) int64 {
	if _, ok := s[name]; !ok {
		return fallback
	}
	return num(s, name)
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

func strings(s sc, name string) []int64 {
	var out []int64
	for _, v := range s[name].([]any) {
		n, _ := strconv.ParseInt(v.(string), 10, 64)
		out = append(out, n)
	}
	return out
}

func client(o guard.Options) *guard.Tally {
	if o.URL == "" {
		o.URL = tallyURL
	}
	if o.APIKey == "" {
		o.APIKey = adminKey
	}
	if o.Agent == "" {
		o.Agent = "guard-test"
	}
	t, err := guard.New(o)
	if err != nil {
		panic(err)
	}
	return t
}

func closeClient(r *report, t *guard.Tally) {
	if err := t.Close(ctx, 30*time.Second); err != nil {
		r.check("the client closed with an empty outbox", false, err)
	}
}

func control(action string, params map[string]int64) error {
	q := url.Values{}
	for k, v := range params {
		q.Set(k, strconv.FormatInt(v, 10))
	}
	c := &http.Client{Timeout: 120 * time.Second}
	res, err := c.Post(fmt.Sprintf("%s/%s?%s", env("TALLY_CONTROL_URL"), action, q.Encode()), "text/plain", nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("control %s: %d", action, res.StatusCode)
	}
	return nil
}

func holds(t *guard.Tally, project string) *budgetv1.ProjectCost {
	res, err := t.Client.GetProjectCost(ctx, connect.NewRequest(&budgetv1.GetProjectCostRequest{ProjectId: project}))
	if err != nil {
		panic(err)
	}
	return res.Msg.GetProjectCost()
}

func workers(concurrency, calls int64, one func(index int64)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= calls {
					return
				}
				one(i)
			}
		})
	}
	wg.Wait()
}

var errBoom = errors.New("the LLM call failed")

func reportCost(cost int64) func(context.Context, *guard.Call) error {
	return func(_ context.Context, c *guard.Call) error { return c.ReportCost(cost, guard.Tokens{}) }
}

var scenarios = map[string]func(s sc, project string, r *report){
	"settle-with-hold": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		for i, cost := range strings(s, "cost_nanos") {
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, func(_ context.Context, c *guard.Call) error {
				r.check(fmt.Sprintf("call %d: a hold was placed", i), c.HoldID != "" && c.Decision == guard.Allowed, c.HoldID)
				return c.ReportCost(cost, guard.Tokens{InputTokens: num(s, "input_tokens"), OutputTokens: num(s, "output_tokens")})
			})
			if err != nil {
				r.failed(err)
				continue
			}
			r.check(fmt.Sprintf("call %d: settled", i), call.Outcome == guard.Settled && call.Recorded.GetSettledHoldNanos() == num(s, "estimate_nanos"), call.Outcome)
			r.completed(call, cost)
		}
		r.stats(t)
	},

	"body-raises": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		for i, estimate := range []int64{num(s, "estimate_nanos"), num(s, "second_estimate_nanos")} {
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: estimate, TTL: ms(numOr(s, "ttl_ms", 300_000))}, func(context.Context, *guard.Call) error {
				return errBoom
			})
			r.check(fmt.Sprintf("call %d: the func's error came back unchanged", i), err == errBoom, err)
			r.check(fmt.Sprintf("call %d: a hold was placed (the whole limit was free again)", i), call != nil && call.HoldID != "", "")
			r.check(fmt.Sprintf("call %d: outcome released", i), call != nil && call.Outcome == guard.Released, call.Outcome)
			cost := holds(t, project)
			r.check(fmt.Sprintf("call %d: no hold active right after", i), cost.GetActiveHoldCount() == 0 && cost.GetReservedNanos() == 0, cost.GetActiveHoldCount())
		}
		// A panic releases the hold too, and goes on up.
		var call *guard.Call
		func() {
			defer func() { r.check("a panic in the func propagates", recover() != nil, "") }()
			call, _ = t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, func(_ context.Context, c *guard.Call) error {
				call = c
				panic("boom")
			})
		}()
		r.check("after a panic: released", call != nil && call.Outcome == guard.Released, call.Outcome)
		r.stats(t)
	},

	"cancelled": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		callCtx, cancel := context.WithCancel(ctx)
		started := make(chan struct{})
		go func() {
			<-started
			cancel()
		}()
		call, err := t.Guard(callCtx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos"), TTL: ms(numOr(s, "ttl_ms", 300_000))}, func(ctx context.Context, c *guard.Call) error {
			close(started)
			select { // the LLM call, given the context
			case <-time.After(ms(num(s, "body_wait_ms"))):
				return c.ReportCost(1, guard.Tokens{})
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		r.check("the cancellation surfaced", errors.Is(err, context.Canceled), err)
		r.check("a hold had been placed and was released", call != nil && call.HoldID != "" && call.Outcome == guard.Released, call.Outcome)
		cost := holds(t, project)
		r.check("no hold active right after", cost.GetActiveHoldCount() == 0 && cost.GetReservedNanos() == 0, cost.GetActiveHoldCount())
		r.stats(t)
	},

	"refused": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		ran := false
		_, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, func(_ context.Context, c *guard.Call) error {
			ran = true
			return c.ReportCost(1, guard.Tokens{})
		})
		var refused *guard.BudgetRefusedError
		reason := fmt.Sprint(err)
		if errors.As(err, &refused) {
			reason = refused.Check.GetReason().String()
		}
		r.check("BudgetRefusedError with the expected reason", reason == s["expect_reason"], reason)
		r.check("the func never ran", !ran, "")
		r.stats(t)
	},

	"agent-cap": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		for i, raw := range s["steps"].([]any) {
			step := raw.(map[string]any)
			agent, _ := step["agent"].(string)
			want, refusal := step["expect_reason"].(string)
			ran := false
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, Agent: agent, EstimateNanos: num(step, "estimate_nanos")}, func(ctx context.Context, c *guard.Call) error {
				ran = true
				return reportCost(numOr(step, "cost_nanos", 1))(ctx, c) // a refused step has no cost: it must never get here
			})
			var refused *guard.BudgetRefusedError
			switch {
			case errors.As(err, &refused):
				got := fmt.Sprintf("%s by agent %s", refused.Check.GetReason(), refused.Check.GetDecidedByAgentId())
				r.check(fmt.Sprintf("step %d (%s): refused by its own cap", i, agent), refusal && got == fmt.Sprintf("%s by agent %s", want, agent), got)
				r.check(fmt.Sprintf("step %d: the func never ran", i), !ran, "")
			case err != nil:
				r.failed(err)
			default:
				r.check(fmt.Sprintf("step %d (%s): allowed and settled", i, agent), !refusal && call.Outcome == guard.Settled, call.Outcome)
				r.completed(call, num(step, "cost_nanos"))
			}
		}
		r.stats(t)
	},

	"usage-not-reported": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		for _, c := range []struct {
			label  string
			chunks []any
		}{{"no report", nil}, {"stream without final usage", s["stream_without_usage"].([]any)}} {
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, func(_ context.Context, call *guard.Call) error {
				for _, chunk := range c.chunks {
					if err := call.Observe(chunk); err != nil {
						return err
					}
				}
				return nil
			})
			r.check(c.label+": ErrUsageNotReported", errors.Is(err, guard.ErrUsageNotReported), err)
			r.check(c.label+": hold released", call != nil && call.HoldID != "" && call.Outcome == guard.Released, call.Outcome)
		}
		cost := holds(t, project)
		r.check("no hold active right after", cost.GetActiveHoldCount() == 0, cost.GetActiveHoldCount())
		r.stats(t)
	},

	"hold-expired": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		cost := strings(s, "cost_nanos")[0]
		held := ""
		call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos"), TTL: ms(num(s, "ttl_ms"))}, func(_ context.Context, c *guard.Call) error {
			held = c.HoldID
			time.Sleep(ms(num(s, "body_wait_ms")))
			return c.ReportCost(cost, guard.Tokens{})
		})
		if err != nil {
			r.failed(err)
			return
		}
		r.check("a hold had been placed", held != "", "")
		r.check("recorded without the expired hold", call.Outcome == guard.Recorded && !call.Recorded.GetDuplicate(), call.Outcome)
		r.completed(call, cost)
		r.stats(t)
	},

	"tokens-openai":    tokens,
	"tokens-anthropic": tokens,

	"rate-limited": func(s sc, project string, r *report) {
		var limited map[string]string
		_ = json.Unmarshal([]byte(env("TALLY_LIMITED_KEYS")), &limited)
		t := client(guard.Options{APIKey: limited[project]})
		defer closeClient(r, t)
		for i := range num(s, "calls") {
			cost := num(s, "cost_nanos_base") + i
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, reportCost(cost))
			if err != nil {
				r.failed(err)
				continue
			}
			r.check(fmt.Sprintf("call %d: settled", i), call.Outcome == guard.Settled, call.Outcome)
			r.completed(call, cost)
		}
		r.stats(t)
	},

	"restart-under-load": func(s sc, project string, r *report) {
		rt := s["retry"].(sc)
		t := client(guard.Options{
			Retry: guard.Retry{AttemptsMax: int(num(rt, "attempts_max")), Total: ms(num(rt, "total_ms")), BaseDelay: ms(num(rt, "base_delay_ms")),
				MaxDelay: ms(num(rt, "max_delay_ms")), CallTimeout: ms(num(rt, "call_timeout_ms"))},
			TTL: ms(num(s, "ttl_ms")),
		})
		defer closeClient(r, t)
		var done atomic.Int64
		var killed sync.WaitGroup
		var kills atomic.Int64
		workers(num(s, "concurrency"), num(s, "calls"), func(index int64) {
			cost := num(s, "cost_nanos_base") + index
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, func(_ context.Context, c *guard.Call) error {
				time.Sleep(20 * time.Millisecond) // the LLM call
				return c.ReportCost(cost, guard.Tokens{})
			})
			if err != nil {
				r.failed(err)
				return
			}
			r.completed(call, cost)
			if done.Add(1) == num(s, "kill_after_completed") {
				kills.Add(1)
				killed.Go(func() {
					if err := control("outage", map[string]int64{"down_ms": num(s, "down_ms")}); err != nil {
						r.check("outage", false, err)
					}
				})
			}
		})
		r.check("the server was killed mid-run", kills.Load() == 1, kills.Load())
		killed.Wait()
		left := t.Flush(ctx, bound)
		r.check("outbox empty at the end", left == 0, left)
		r.stats(t)
	},

	"fail-open-outage": func(s sc, project string, r *report) {
		if err := control("outage", map[string]int64{"down_ms": num(s, "down_ms")}); err != nil {
			r.check("outage", false, err)
		}
		closed := client(guard.Options{Retry: guard.Retry{Total: ms(num(s, "fail_open_after_ms"))}})
		ran := false
		_, err := closed.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, func(_ context.Context, c *guard.Call) error {
			ran = true
			return c.ReportCost(1, guard.Tokens{})
		})
		var te *guard.TallyError
		r.check("fail_closed refuses while Tally is down", errors.Is(err, guard.ErrTallyUnavailable) && errors.As(err, &te) && te.Code == connect.CodeUnavailable, err)
		r.check("fail_closed: the func never ran", !ran, "")
		closeClient(r, closed)
		t := client(guard.Options{FailurePolicy: guard.FailOpen, FailOpenAfter: ms(num(s, "fail_open_after_ms")), FlushInterval: ms(num(s, "flush_interval_ms")), TTL: ms(num(s, "ttl_ms"))})
		defer closeClient(r, t)
		workers(num(s, "concurrency"), num(s, "calls"), func(index int64) {
			cost := num(s, "cost_nanos_base") + index
			call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, reportCost(cost))
			if err != nil {
				r.failed(err)
				return
			}
			r.completed(call, cost)
		})
		left := t.Flush(ctx, ms(num(s, "flush_timeout_ms")))
		r.check("the outbox flushed once Tally was back", left == 0, left)
		r.check("no record refused on flush", len(t.OutboxFailed()) == 0, len(t.OutboxFailed()))
		r.stats(t)
	},

	"watch-reconnects": func(s sc, project string, r *report) {
		t := client(guard.Options{})
		defer closeClient(r, t)
		watchCtx, stop := context.WithCancel(ctx)
		var mu sync.Mutex
		var events []*budgetv1.BudgetEvent
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			for event, err := range t.Watch(watchCtx, project) {
				if err != nil {
					r.check("the watch ended without an error", false, err)
					return
				}
				mu.Lock()
				events = append(events, event)
				mu.Unlock()
			}
		}()
		until := func(what string, predicate func([]*budgetv1.BudgetEvent) bool) {
			deadline := time.Now().Add(ms(num(s, "event_wait_ms")))
			for {
				mu.Lock()
				ok := predicate(events)
				n := len(events)
				mu.Unlock()
				if ok || time.Now().After(deadline) {
					r.check(what, ok, fmt.Sprintf("%d events", n))
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		snapshots := func(min int) func([]*budgetv1.BudgetEvent) bool {
			return func(es []*budgetv1.BudgetEvent) bool {
				n := 0
				for _, e := range es {
					if e.GetKind() == budgetv1.BudgetEventKind_BUDGET_EVENT_KIND_SNAPSHOT {
						n++
					}
				}
				return n >= min
			}
		}
		until("first SNAPSHOT", snapshots(1))
		if err := control("restart", nil); err != nil {
			r.check("restart", false, err)
		}
		until("a new SNAPSHOT after the restart (reconnected)", snapshots(2))
		cost := strings(s, "cost_nanos")[0]
		call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, reportCost(cost))
		if err != nil {
			r.failed(err)
		} else {
			r.completed(call, cost)
			until("THRESHOLD_CROSSED 50 % for the guarded call", func(es []*budgetv1.BudgetEvent) bool {
				for _, e := range es {
					if e.GetKind() == budgetv1.BudgetEventKind_BUDGET_EVENT_KIND_THRESHOLD_CROSSED && e.GetRequestId() == call.RequestID && e.GetThreshold().GetThresholdBps() == 5000 {
						return true
					}
				}
				return false
			})
		}
		stop()
		<-ended
		r.check("the helper reconnected at least once", t.Stats().WatchReconnects >= 1, t.Stats().WatchReconnects)
		r.stats(t)
	},

	"tls-and-key": func(s sc, project string, r *report) {
		ca, err := os.ReadFile(env("TALLY_TLS_CA"))
		if err != nil {
			panic(err)
		}
		cost := strings(s, "cost_nanos")[0]
		t := client(guard.Options{URL: env("TALLY_TLS_URL"), APIKey: env("TALLY_TLS_API_KEY"), CAPEM: ca})
		call, err := t.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, reportCost(cost))
		if err != nil {
			r.failed(err)
		} else {
			r.check("settled over TLS with the key", call.Outcome == guard.Settled, call.Outcome)
			r.completed(call, cost)
		}
		r.stats(t)
		closeClient(r, t)
		keyless, err := guard.New(guard.Options{URL: env("TALLY_TLS_URL"), CAPEM: ca})
		if err != nil {
			panic(err)
		}
		defer closeClient(r, keyless)
		_, err = keyless.Guard(ctx, guard.GuardOptions{Project: project, EstimateNanos: num(s, "estimate_nanos")}, reportCost(cost))
		var te *guard.TallyError
		r.check("UNAUTHENTICATED without the key, not retried",
			errors.As(err, &te) && te.Code == connect.CodeUnauthenticated && te.Attempts == 1 && !te.Retryable, err)
	},
}

func tokens(s sc, project string, r *report) {
	t := client(guard.Options{})
	defer closeClient(r, t)
	for i, spec := range s["calls"].([]any) {
		c := spec.(sc)
		call, err := t.Guard(ctx, guard.GuardOptions{Project: project, Model: s["model"].(string), InputTokens: num(s, "input_tokens"), MaxOutputTokens: num(s, "max_output_tokens")},
			func(_ context.Context, call *guard.Call) error {
				r.check(fmt.Sprintf("call %d: reserved the catalog's worst case", i), call.EstimateNanos == num(s, "expect_estimate_nanos"), call.EstimateNanos)
				if response, ok := c["response"]; ok {
					return call.Report(response)
				}
				for _, chunk := range c["stream"].([]any) {
					if err := call.Observe(chunk); err != nil {
						return err
					}
				}
				return nil
			})
		if err != nil {
			r.failed(err)
			continue
		}
		want := num(c["record"].(sc), "cost_nanos")
		r.check(fmt.Sprintf("call %d: settled at the catalog's price", i), call.Outcome == guard.Settled && call.Recorded.GetCostNanos() == want, fmt.Sprintf("%s %d", call.Outcome, call.Recorded.GetCostNanos()))
		r.completed(call, want)
	}
	r.stats(t)
}

func main() {
	var spec struct {
		Scenarios []sc `json:"scenarios"`
	}
	raw, err := os.ReadFile(env("TALLY_SCENARIOS"))
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		panic(err)
	}
	var projects map[string]string
	_ = json.Unmarshal([]byte(env("TALLY_PROJECTS")), &projects)
	out := struct {
		Language  string            `json:"language"`
		Scenarios map[string]*entry `json:"scenarios"`
	}{"go", map[string]*entry{}}
	failures := 0
	for _, s := range spec.Scenarios {
		name := s["name"].(string)
		e := &entry{Completed: []completed{}, Stats: map[string]float64{}, Checks: []check{}}
		out.Scenarios[name] = e
		r := &report{entry: e}
		if run, ok := scenarios[name]; !ok {
			r.check(fmt.Sprintf("scenario %s of scenarios.json has a Go implementation", name), false, "")
		} else {
			func() {
				defer func() {
					if p := recover(); p != nil {
						r.check("the scenario ran to its end", false, p)
					}
				}()
				run(s, projects[name], r)
			}()
		}
		var bad []check
		for _, c := range e.Checks {
			if !c.OK {
				bad = append(bad, c)
			}
		}
		failures += len(bad)
		if len(bad) == 0 {
			fmt.Printf("ok %s\n", name)
		} else {
			b, _ := json.Marshal(bad)
			fmt.Printf("FAIL %s: %s\n", name, b)
		}
	}
	b, _ := json.MarshalIndent(out, "", " ")
	if err := os.WriteFile(env("TALLY_REPORT"), b, 0o644); err != nil {
		panic(err)
	}
	if failures > 0 {
		os.Exit(1)
	}
}
