package guard

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
)

// Retry bounds how a call is sent again (always the same request, the same
// request id). The backoff before attempt n+1 is uniform in [d/2, d] with
// d = min(MaxDelay, BaseDelay * 2^n); a RESOURCE_EXHAUSTED waits the server's
// RetryInfo delay plus up to BaseDelay of jitter. Zero fields take DefaultRetry's.
type Retry struct {
	// AttemptsMax is the sends per call, the first included.
	AttemptsMax int
	// Total: no new attempt starts after this long since the first.
	Total     time.Duration
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// CallTimeout bounds each attempt (DEADLINE_EXCEEDED is retried).
	CallTimeout time.Duration
}

// DefaultRetry: 10 attempts within 30 s, 100 ms doubling to 2 s, 5 s per attempt.
var DefaultRetry = Retry{AttemptsMax: 10, Total: 30 * time.Second, BaseDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second, CallTimeout: 5 * time.Second}

func (r Retry) withDefaults() Retry {
	if r.AttemptsMax <= 0 {
		r.AttemptsMax = DefaultRetry.AttemptsMax
	}
	if r.Total <= 0 {
		r.Total = DefaultRetry.Total
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = DefaultRetry.BaseDelay
	}
	if r.MaxDelay < r.BaseDelay {
		r.MaxDelay = max(DefaultRetry.MaxDelay, r.BaseDelay)
	}
	if r.CallTimeout <= 0 {
		r.CallTimeout = DefaultRetry.CallTimeout
	}
	return r
}

func (r Retry) backoff(attempt int) time.Duration {
	ceiling := min(r.MaxDelay, r.BaseDelay<<min(attempt, 30))
	return ceiling/2 + rand.N(ceiling/2+1)
}

// failure is what a failed call said: the transport's failures (a connection
// refused, reset or cut by a dying server, whatever code connect-go gives
// them) count as UNAVAILABLE, since no server answered.
type failure struct {
	code      connect.Code
	message   string
	retryInfo time.Duration
	hasRetry  bool
}

func failureOf(ctx context.Context, err error) failure {
	f := failure{code: connect.CodeOf(err), message: err.Error()}
	var ce *connect.Error
	if errors.As(err, &ce) {
		f.message = ce.Message()
		for _, d := range ce.Details() {
			if d.Type() == "google.rpc.RetryInfo" {
				if delay, ok := parseRetryInfo(d.Bytes()); ok {
					f.retryInfo, f.hasRetry = delay, true
				}
			}
		}
	}
	if ctx.Err() == nil && f.code != connect.CodeUnavailable && fromTransport(err) {
		f.code = connect.CodeUnavailable
	}
	return f
}

func fromTransport(err error) bool {
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	// net/http's HTTP/2 errors (GOAWAY, stream reset, connection lost) are not exported types.
	msg := err.Error()
	return strings.Contains(msg, "http2: ") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe") || strings.Contains(msg, "server sent GOAWAY")
}

func (f failure) retryable() bool {
	return f.code == connect.CodeUnavailable || f.code == connect.CodeDeadlineExceeded || (f.code == connect.CodeResourceExhausted && f.hasRetry)
}

// delay before retrying, or false when the call must not be retried.
func (r Retry) delay(f failure, attempt int) (time.Duration, bool) {
	switch {
	case f.code == connect.CodeUnavailable || f.code == connect.CodeDeadlineExceeded:
		return r.backoff(attempt), true
	case f.code == connect.CodeResourceExhausted && f.hasRetry:
		return f.retryInfo + rand.N(r.BaseDelay+1), true
	}
	return 0, false
}

// parseRetryInfo reads google.rpc.RetryInfo { Duration retry_delay = 1; }.
func parseRetryInfo(b []byte) (time.Duration, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, false
			}
			b = b[n:]
			continue
		}
		d, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, false
		}
		var seconds, nanos uint64
		for len(d) > 0 {
			f, t, m := protowire.ConsumeTag(d)
			if m < 0 {
				return 0, false
			}
			d = d[m:]
			if t != protowire.VarintType {
				m = protowire.ConsumeFieldValue(f, t, d)
				if m < 0 {
					return 0, false
				}
				d = d[m:]
				continue
			}
			v, m := protowire.ConsumeVarint(d)
			if m < 0 {
				return 0, false
			}
			d = d[m:]
			if f == 1 {
				seconds = v
			} else if f == 2 {
				nanos = v
			}
		}
		return time.Duration(seconds)*time.Second + time.Duration(nanos), true
	}
	return 0, false
}
