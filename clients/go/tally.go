package guard

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	budgetv1 "tally.local/gen/go/tally/budget/v1"
	"tally.local/gen/go/tally/budget/v1/budgetv1connect"
)

// FailurePolicy says what a guard does when Tally cannot decide.
type FailurePolicy string

const (
	// FailClosed (the default): the call does not run; Guard returns an error
	// that errors.Is(err, ErrTallyUnavailable).
	FailClosed FailurePolicy = "fail_closed"
	// FailOpen: the call runs unchecked and its record waits in the outbox,
	// flushed with its request id when Tally is back.
	FailOpen FailurePolicy = "fail_open"
)

// Options of a Tally client. Zero values take the defaults.
type Options struct {
	// URL: http://host:port (cleartext HTTP/2) or https://host:port (TLS).
	// Default http://127.0.0.1:8080.
	URL string
	// APIKey is sent as "authorization: Bearer <key>" on every call.
	APIKey string
	// CAPEM: the PEM of the CA that signed Tally's certificate (default: the system roots).
	CAPEM         []byte
	FailurePolicy FailurePolicy
	Retry         Retry
	// FailOpenAfter: under FailOpen, how long a decision or record may retry
	// before the call proceeds / the record is queued. Default 1 s.
	FailOpenAfter time.Duration
	// OutboxMax: records kept for Tally while it is unreachable (beyond:
	// OutboxFullError). Default 1000.
	OutboxMax int
	// FlushInterval: how often the outbox is flushed while it holds records. Default 500 ms.
	FlushInterval time.Duration
	// Agent and TTL: the defaults of every guard.
	Agent string
	TTL   time.Duration
	// OnOutboxError: a queued record Tally refused for good on flush (also in OutboxFailed).
	OnOutboxError func(record *budgetv1.RecordCostRequest, err error)
	// HTTPClient: your own instead of one built from URL and CAPEM.
	HTTPClient connect.HTTPClient
}

// GuardOptions of one guarded call. Give EstimateNanos, or Model with
// InputTokens and MaxOutputTokens for the catalog's worst case.
type GuardOptions struct {
	Project         string
	EstimateNanos   int64
	Model           string
	InputTokens     int64
	MaxOutputTokens int64
	// Agent: default the client's. Sent with the reservation (its cap) and the record.
	Agent string
	// TTL of the hold (>= 1 s). Default: the client's, else 5 minutes.
	TTL time.Duration
	// RequestID: default generated ("g-" + 32 hex digits) and kept for every retry.
	RequestID string
}

// Stats counts since the client was created.
type Stats struct {
	Reserves, ReReserves, Refused, Unchecked, Retries, Settled, RecordedWithoutHold, Duplicates,
	Released, ReleaseFailures, Queued, Flushed, OutboxFailed, WatchReconnects int64
}

type counters struct {
	reserves, reReserves, refused, unchecked, retries, settled, recordedWithoutHold, duplicates,
	released, releaseFailures, queued, flushed, outboxFailed, watchReconnects atomic.Int64
}

// OutboxFailure is a queued record Tally refused for good on flush.
type OutboxFailure struct {
	Record *budgetv1.RecordCostRequest
	Err    error
}

// Tally is a client with guarded calls. Safe for concurrent use.
type Tally struct {
	// Client is the generated client on this connection, for every other RPC.
	Client        budgetv1connect.BudgetServiceClient
	policy        FailurePolicy
	retry         Retry
	failOpenAfter time.Duration
	flushInterval time.Duration
	agent         string
	ttl           time.Duration
	onOutboxError func(*budgetv1.RecordCostRequest, error)
	outboxMax     int

	stats counters

	mu           sync.Mutex
	outbox       []*budgetv1.RecordCostRequest
	outboxFailed []OutboxFailure
	flusherOn    bool
	closed       bool
	flushMu      sync.Mutex // one flush round at a time
	stop         chan struct{}
}

// New makes a client. It does not connect until the first call.
func New(o Options) (*Tally, error) {
	t := &Tally{
		policy:        o.FailurePolicy,
		retry:         o.Retry.withDefaults(),
		failOpenAfter: o.FailOpenAfter,
		flushInterval: o.FlushInterval,
		agent:         o.Agent,
		ttl:           o.TTL,
		onOutboxError: o.OnOutboxError,
		outboxMax:     o.OutboxMax,
		stop:          make(chan struct{}),
	}
	if t.policy == "" {
		t.policy = FailClosed
	}
	if t.policy != FailClosed && t.policy != FailOpen {
		return nil, fmt.Errorf("FailurePolicy must be FailClosed or FailOpen, got %q", t.policy)
	}
	if t.failOpenAfter <= 0 {
		t.failOpenAfter = time.Second
	}
	if t.flushInterval <= 0 {
		t.flushInterval = 500 * time.Millisecond
	}
	if t.ttl <= 0 {
		t.ttl = 5 * time.Minute
	}
	if t.outboxMax <= 0 {
		t.outboxMax = 1000
	}
	url := o.URL
	if url == "" {
		url = "http://127.0.0.1:8080"
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("URL must start with http:// or https://, got %q", url)
	}
	httpClient := o.HTTPClient
	if httpClient == nil {
		transport := &http.Transport{Protocols: new(http.Protocols)}
		if strings.HasPrefix(url, "https://") {
			transport.Protocols.SetHTTP2(true)
			if o.CAPEM != nil {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(o.CAPEM) {
					return nil, errors.New("CAPEM holds no certificate")
				}
				transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
		} else {
			transport.Protocols.SetUnencryptedHTTP2(true)
		}
		httpClient = &http.Client{Transport: transport}
	}
	options := []connect.ClientOption{connect.WithGRPC()}
	if o.APIKey != "" {
		options = append(options, connect.WithInterceptors(bearer(o.APIKey)))
	}
	t.Client = budgetv1connect.NewBudgetServiceClient(httpClient, url, options...)
	return t, nil
}

func bearer(key string) connect.Interceptor {
	return &bearerInterceptor{value: "Bearer " + key}
}

type bearerInterceptor struct{ value string }

func (b *bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", b.value)
		return next(ctx, req)
	}
}

func (b *bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", b.value)
		return conn
	}
}

func (b *bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Stats returns the counters so far.
func (t *Tally) Stats() Stats {
	s := &t.stats
	return Stats{
		Reserves: s.reserves.Load(), ReReserves: s.reReserves.Load(), Refused: s.refused.Load(), Unchecked: s.unchecked.Load(),
		Retries: s.retries.Load(), Settled: s.settled.Load(), RecordedWithoutHold: s.recordedWithoutHold.Load(),
		Duplicates: s.duplicates.Load(), Released: s.released.Load(), ReleaseFailures: s.releaseFailures.Load(),
		Queued: s.queued.Load(), Flushed: s.flushed.Load(), OutboxFailed: s.outboxFailed.Load(), WatchReconnects: s.watchReconnects.Load(),
	}
}

// OutboxSize is how many records wait for Tally.
func (t *Tally) OutboxSize() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.outbox)
}

// OutboxFailed lists the queued records Tally refused for good on flush.
func (t *Tally) OutboxFailed() []OutboxFailure {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]OutboxFailure(nil), t.outboxFailed...)
}

// Guard reserves the estimate under a request id generated here and kept for
// every retry, runs body with the Call, then settles the hold with what body
// reported, releases it (body returned an error, panicked, or its context was
// cancelled before a report; ErrUsageNotReported when it returned nil without
// one), or records without the hold if it expired. It returns the call and
// body's error unchanged (joined with the record's error when body reported
// before failing and that record could not be delivered nor queued), or
// Guard's own (*BudgetRefusedError before body ran; ErrTallyUnavailable under
// FailClosed). A panic in body is re-raised after the hold is released.
func (t *Tally) Guard(ctx context.Context, o GuardOptions, body func(ctx context.Context, call *Call) error) (call *Call, err error) {
	call, err = t.reserve(ctx, o)
	if err != nil {
		return call, err
	}
	// Cleanup outlives a cancelled ctx: a release or a record is owed either way.
	cleanup := context.WithoutCancel(ctx)
	defer func() {
		if p := recover(); p != nil {
			_ = t.finish(cleanup, call, errPanicked)
			panic(p)
		}
	}()
	bodyErr := body(ctx, call)
	if bodyErr == nil && ctx.Err() != nil {
		bodyErr = ctx.Err()
	}
	finishErr := t.finish(cleanup, call, bodyErr)
	if bodyErr != nil && finishErr != nil {
		// A report made before the error is owed all the same: if it could be
		// neither recorded nor queued (OutboxFullError carries it), the caller
		// hears of it beside its own error instead of losing it.
		return call, errors.Join(bodyErr, finishErr)
	}
	if bodyErr != nil {
		return call, bodyErr
	}
	return call, finishErr
}

func (t *Tally) wait() time.Duration {
	if t.policy == FailOpen {
		return min(t.retry.Total, t.failOpenAfter)
	}
	return t.retry.Total
}

// send sends one request, retrying what is safe to retry (the same request,
// the same request id) within wait and attemptsMax.
func send[Req, Res any](t *Tally, ctx context.Context, method string, call func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req, wait time.Duration, attemptsMax int) (*Res, error) {
	started := time.Now()
	for attempt := 0; ; {
		left := wait - time.Since(started)
		timeout := max(100*time.Millisecond, min(t.retry.CallTimeout, left))
		attemptCtx, cancel := context.WithTimeout(ctx, timeout)
		res, err := call(attemptCtx, connect.NewRequest(msg))
		cancel()
		if err == nil {
			return res.Msg, nil
		}
		f := failureOf(ctx, err)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		delay, ok := t.retry.delay(f, attempt)
		attempt++
		if !ok || attempt >= attemptsMax || time.Since(started)+delay >= wait {
			return nil, &TallyError{Method: method, Code: f.code, Message: f.message, Attempts: attempt, Retryable: f.retryable(), Err: err}
		}
		t.stats.retries.Add(1)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "g-" + hex.EncodeToString(b[:])
}

func codeIs(err error, code connect.Code) (*TallyError, bool) {
	var te *TallyError
	if errors.As(err, &te) && te.Code == code {
		return te, true
	}
	return te, false
}

func (t *Tally) reserve(ctx context.Context, o GuardOptions) (*Call, error) {
	if o.Project == "" {
		return nil, errors.New("GuardOptions.Project is required")
	}
	if o.Model == "" && o.EstimateNanos < 0 {
		return nil, fmt.Errorf("EstimateNanos must be >= 0, got %d", o.EstimateNanos)
	}
	if o.Model != "" && o.EstimateNanos != 0 {
		return nil, errors.New("give either EstimateNanos, or Model with InputTokens and MaxOutputTokens")
	}
	ttl := o.TTL
	if ttl == 0 {
		ttl = t.ttl
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("TTL must be at least 1 s (Tally's minimum), got %v", ttl)
	}
	agent := o.Agent
	if agent == "" {
		agent = t.agent
	}
	requestID := o.RequestID
	if requestID == "" {
		requestID = newRequestID()
	}
	call := &Call{Project: o.Project, RequestID: requestID, Model: o.Model, Agent: agent, Decision: Allowed, EstimateNanos: o.EstimateNanos}
	key := requestID
	for round := 1; ; round++ {
		req := &budgetv1.CheckBudgetRequest{
			ProjectId: o.Project, Reserve: true, RequestId: key, HoldTtl: durationpb.New(ttl), AgentId: agent,
		}
		if o.Model != "" {
			req.Model, req.InputTokens, req.MaxOutputTokens = o.Model, o.InputTokens, o.MaxOutputTokens
		} else {
			req.EstimatedCostNanos = o.EstimateNanos
		}
		check, err := send(t, ctx, "CheckBudget", t.Client.CheckBudget, req, t.wait(), t.retry.AttemptsMax)
		if err != nil {
			if te, ok := codeIs(err, connect.CodeFailedPrecondition); ok && te.Attempts > 1 && round < 3 {
				// An earlier attempt placed the hold but its answer was lost, and the
				// hold ended before the retry: that key is spent (and holds nothing).
				t.stats.reReserves.Add(1)
				key = fmt.Sprintf("%s.r%d", requestID, round+1)
				continue
			}
			if errors.Is(err, ErrTallyUnavailable) && t.policy == FailOpen {
				call.Decision = Unchecked
				t.stats.unchecked.Add(1)
				return call, nil
			}
			return call, err
		}
		t.stats.reserves.Add(1)
		if !check.GetAllowed() {
			t.stats.refused.Add(1)
			return call, &BudgetRefusedError{Check: check, msg: fmt.Sprintf("budget refused %s: %s, %d nanos remaining", o.Project, check.GetReason(), check.GetDecidedByRemainingNanos())}
		}
		call.accept(check)
		return call, nil
	}
}

// finish settles, records or releases the call once body returned bodyErr.
func (t *Tally) finish(ctx context.Context, call *Call, bodyErr error) error {
	if !call.reported() {
		if call.HoldID != "" {
			t.release(ctx, call)
		}
		call.mu.Lock()
		skipped := call.skipped
		call.mu.Unlock()
		if skipped {
			call.Outcome = Skipped
			return nil
		}
		call.Outcome = Released
		if bodyErr != nil {
			return nil
		}
		return call.missingUsage()
	}
	record, err := call.recordRequest()
	if err != nil {
		if call.HoldID != "" {
			t.release(ctx, call)
		}
		call.Outcome = Released
		return err
	}
	return t.record(ctx, call, record)
}

func (t *Tally) record(ctx context.Context, call *Call, record *budgetv1.RecordCostRequest) error {
	for {
		res, err := send(t, ctx, "RecordCost", t.Client.RecordCost, record, t.wait(), t.retry.AttemptsMax)
		if err != nil {
			if _, ok := codeIs(err, connect.CodeFailedPrecondition); ok && record.GetHoldId() != "" {
				// The hold expired (or was released) before the record: the cost is
				// real all the same, so record it without the hold.
				record.HoldId = ""
				continue
			}
			if errors.Is(err, ErrTallyUnavailable) {
				if qerr := t.enqueue(record); qerr != nil {
					return qerr
				}
				t.stats.queued.Add(1)
				call.Outcome = Queued
				return nil
			}
			if call.HoldID != "" {
				t.release(ctx, call) // e.g. no price for the model: give the estimate back now
			}
			return err
		}
		if res.GetDuplicate() {
			t.stats.duplicates.Add(1)
		}
		call.Recorded = res
		if record.GetHoldId() != "" {
			call.Outcome = Settled
			t.stats.settled.Add(1)
		} else {
			call.Outcome = Recorded
			t.stats.recordedWithoutHold.Add(1)
		}
		return nil
	}
}

func (t *Tally) release(ctx context.Context, call *Call) {
	_, err := send(t, ctx, "ReleaseHold", t.Client.ReleaseHold, &budgetv1.ReleaseHoldRequest{ProjectId: call.Project, HoldId: call.HoldID}, t.wait(), t.retry.AttemptsMax)
	if _, gone := codeIs(err, connect.CodeNotFound); err == nil || gone {
		t.stats.released.Add(1) // already gone: nothing holds budget
	} else {
		t.stats.releaseFailures.Add(1) // it expires at its TTL
	}
}
