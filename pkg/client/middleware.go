package client

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Verifier decides whether a key may be used. *Client implements it.
//
// Verify returns a Decision for every outcome, refusals included; it
// returns an error only when no decision could be made (the verifier is
// unreachable or failed), and then the middleware answers 503 unless
// FailOpen is set.
type Verifier interface {
	Verify(ctx context.Context, req VerifyRequest) (*Decision, error)
}

var _ Verifier = (*Client)(nil)

// MiddlewareOptions configure Middleware; nil or zero fields mean the
// defaults.
type MiddlewareOptions struct {
	// Scope returns the scope a request needs (e.g. "generate" for POST
	// /v1/generate). Default: none, which skips keyplane's scope check.
	Scope func(r *http.Request) string

	// Units returns a request's cost against units_per_minute, known
	// before it is served (e.g. the max_tokens it asks for). Default 0.
	// It must not be negative.
	Units func(r *http.Request) int64

	// Feature returns the feature (model) a request uses (e.g. the model
	// in its path), for the owner's per-feature limits. Default: none.
	Feature func(r *http.Request) string

	// ClientIP returns the caller's address, checked against IP-restricted
	// keys. Default: the host of r.RemoteAddr, which is the caller only
	// when nothing proxies the requests.
	//
	// Behind a load balancer or reverse proxy, RemoteAddr is the proxy;
	// use [ForwardedFor] with the number of proxies you run. Never trust
	// the leftmost X-Forwarded-For entry, or the header at all without a
	// proxy that appends to it: the caller writes what it likes there,
	// and an IP restriction would then stop nobody who knows the allowed
	// addresses.
	ClientIP func(r *http.Request) string

	// FailOpen lets requests through, without a decision in the context,
	// when the verifier cannot be reached or fails. Default false: such
	// requests get 503 (fail closed).
	//
	// Failing open keeps the API up during a keyplane outage at the price
	// of serving anyone, with any key or none, unmetered, for as long as
	// it lasts; use it only where that is cheaper than downtime, and alert
	// on the logged errors. Errors that are not outages (keyplane answering
	// 401 because the gateway's token is wrong, or 400) always fail closed,
	// so a misconfiguration never opens the API.
	FailOpen bool

	// KeepKeyHeader passes the header that carried the key on to the
	// protected handler. Default false: the X-Api-Key header, and an
	// Authorization header the key was read from, are removed, so the
	// backend never sees, logs or forwards the key.
	KeepKeyHeader bool

	// OnResponse, if set, is called after the protected handler returns,
	// with the request it was given, the decision (nil when FailOpen let
	// the request through), the status it answered and the number of body
	// bytes it wrote. It runs on the request's goroutine once the handler
	// has returned (net/http may still hold the end of the response in its
	// buffer), so it must be quick: hand the record to a batching usage
	// reporter rather than sending it itself. Refused requests are not
	// reported; nor is a handler that panics.
	//
	// To count status and bytes the ResponseWriter given to the handler
	// is wrapped. The wrapper implements http.Flusher and Unwrap, so
	// http.NewResponseController reaches the underlying writer (Hijack,
	// SetReadDeadline, EnableFullDuplex, …).
	OnResponse func(r *http.Request, d *Decision, status int, bytes int64)

	// Logger receives verifier failures. Default slog.Default().
	Logger *slog.Logger
}

// Bounds beyond which request data cannot be what keyplane expects; the
// verify route rejects longer values with a 400.
const (
	maxKeyLen      = 1024
	maxIPLen       = 64
	maxReferrerLen = 2048
)

// Middleware returns a middleware that verifies the API key of every
// request with v before calling the protected handler; see the package
// documentation for the answers it gives. The key is read from the
// X-Api-Key header or, if there is none, from Authorization: Bearer (so an
// Authorization header carrying the end user's own token can coexist with
// an X-Api-Key). On VALID the handler is called with the decision in the
// request's context ([FromContext]).
func Middleware(v Verifier, opts *MiddlewareOptions) func(http.Handler) http.Handler {
	return newMiddleware(v, opts, time.Now)
}

type middleware struct {
	v    Verifier
	opt  MiddlewareOptions
	now  func() time.Time
	next http.Handler
}

func newMiddleware(v Verifier, opts *MiddlewareOptions, now func() time.Time) func(http.Handler) http.Handler {
	var o MiddlewareOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return &middleware{v: v, opt: o, now: now, next: next}
	}
}

type contextKey struct{}

// FromContext returns the decision the middleware stored for the request,
// and whether there is one (there is none when FailOpen let the request
// through).
func FromContext(ctx context.Context) (*Decision, bool) {
	d, ok := ctx.Value(contextKey{}).(*Decision)
	return d, ok && d != nil
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, fromAuthorization := apiKey(r)
	if key == "" {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"an API key is required: send it in the X-Api-Key header or as Authorization: Bearer <key>")
		return
	}
	if len(key) > maxKeyLen {
		m.refuse(w, &Decision{Code: CodeNotFound}, "")
		return
	}
	req := VerifyRequest{Key: key, Referrer: r.Referer()}
	if m.opt.Scope != nil {
		req.Scope = m.opt.Scope(r)
	}
	if m.opt.Units != nil {
		req.Units = m.opt.Units(r)
	}
	if m.opt.Feature != nil {
		req.Feature = m.opt.Feature(r)
	}
	if m.opt.ClientIP != nil {
		req.IP = m.opt.ClientIP(r)
	} else {
		req.IP = remoteHost(r)
	}
	// Values keyplane would reject cannot be genuine; an empty one makes
	// a restricted key refuse rather than keyplane answer 400.
	if len(req.IP) > maxIPLen {
		req.IP = ""
	}
	if len(req.Referrer) > maxReferrerLen {
		req.Referrer = ""
	}

	d, err := m.v.Verify(r.Context(), req)
	if err == nil && d == nil {
		err = errors.New("the verifier returned neither a decision nor an error")
	}
	if err != nil {
		m.failed(w, r, err, fromAuthorization)
		return
	}
	if d.Code != CodeValid || !d.Valid {
		m.refuse(w, d, req.Scope)
		return
	}
	m.rateLimitHeaders(w.Header(), d)
	m.serve(w, r, d, fromAuthorization)
}

// failed answers a request whose key could not be verified.
func (m *middleware) failed(w http.ResponseWriter, r *http.Request, err error, fromAuthorization bool) {
	if r.Context().Err() != nil {
		// The caller went away; nobody reads this answer.
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the request was canceled")
		return
	}
	outage := isOutage(err)
	open := outage && m.opt.FailOpen
	m.opt.Logger.ErrorContext(r.Context(), "keyplane: verifying an API key failed",
		"error", err, "fail_open", open, "method", r.Method, "path", r.URL.Path)
	if open {
		m.serve(w, r, nil, fromAuthorization)
		return
	}
	var ae *APIError
	if errors.As(err, &ae) && ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(ae.RetryAfter), 10))
	}
	writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the API key could not be checked; retry later")
}

// isOutage reports whether err means the verifier is unreachable or
// failing, as opposed to refusing the gateway's request (a 4xx other than
// 408 and 429: a wrong admin token, an invalid request).
func isOutage(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return true
	}
	return ae.Status >= 500 || ae.Status == http.StatusRequestTimeout || ae.Status == http.StatusTooManyRequests
}

// serve calls the protected handler with d in the context.
func (m *middleware) serve(w http.ResponseWriter, r *http.Request, d *Decision, fromAuthorization bool) {
	ctx := r.Context()
	if d != nil {
		ctx = context.WithValue(ctx, contextKey{}, d)
	}
	var r2 *http.Request
	if m.opt.KeepKeyHeader {
		r2 = r.WithContext(ctx)
	} else {
		r2 = r.Clone(ctx) // a copy of the header, which the caller's r keeps
		r2.Header.Del("X-Api-Key")
		if fromAuthorization {
			r2.Header.Del("Authorization")
		}
	}
	if m.opt.OnResponse == nil {
		m.next.ServeHTTP(w, r2)
		return
	}
	rec := &recorder{ResponseWriter: w}
	m.next.ServeHTTP(rec, r2)
	status := rec.status
	if status == 0 {
		status = http.StatusOK // net/http's answer for a handler that wrote nothing
	}
	m.opt.OnResponse(r2, d, status, rec.bytes)
}

// refuse answers a decision other than VALID.
func (m *middleware) refuse(w http.ResponseWriter, d *Decision, scope string) {
	h := w.Header()
	var status int
	var msg string
	switch d.Code {
	case CodeNotFound:
		status, msg = http.StatusUnauthorized, "the API key is not valid"
	case CodeExpired:
		status, msg = http.StatusUnauthorized, "the API key has expired"
	case CodeRevoked:
		status, msg = http.StatusUnauthorized, "the API key has been revoked"
	case CodeDisabled:
		status, msg = http.StatusUnauthorized, "the API key is disabled"
	case CodeForbidden:
		status, msg = http.StatusForbidden, "the API key may not be used from this address or site"
	case CodeInsufficientPermissions:
		status, msg = http.StatusForbidden, "the API key does not grant the scope this request needs"
		if scope != "" {
			msg = "the API key does not grant the " + strconv.Quote(scope) + " scope this request needs"
			h.Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope=`+strconv.Quote(scope))
		}
	case CodeRateLimited:
		status, msg = http.StatusTooManyRequests, "the API key's rate limit is reached; retry later"
		if d.Limit != nil {
			msg = d.Limit.Describe() + " is reached; retry later"
		}
	case CodeUsageExceeded:
		status, msg = http.StatusTooManyRequests, "the API key's usage quota is used up until its window resets"
		switch {
		case d.Limit != nil && d.Limit.Name == LimitCredits:
			// Prepaid credits do not come back by waiting: 402, as a
			// payment is what lifts it.
			status, msg = http.StatusPaymentRequired, "the owner's prepaid credits are used up; top up to continue"
		case d.Limit != nil && d.Limit.Name == LimitSpendPerMonth:
			msg = d.Limit.Describe() + " is reached until the month ends or the cap is raised"
		case d.Limit != nil:
			msg = d.Limit.Describe() + " is used up until its window resets"
		}
	default:
		// A code newer than this middleware: refuse rather than guess.
		status, msg = http.StatusForbidden, "the API key may not be used for this request"
	}
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	if status == http.StatusTooManyRequests {
		// Retry-After: keyplane's own figure (RATE_LIMITED), else when
		// the exhausted limit resets (USAGE_EXCEEDED).
		exhaustedReset := m.rateLimitHeaders(h, d)
		switch {
		case d.RetryAfterSeconds > 0:
			h.Set("Retry-After", strconv.FormatInt(d.RetryAfterSeconds, 10))
		case exhaustedReset >= 0:
			h.Set("Retry-After", strconv.FormatInt(max(exhaustedReset, 1), 10))
		}
	}
	code := string(d.Code)
	if code == "" {
		code = "PERMISSION_DENIED"
	}
	writeError(w, status, code, msg)
}

// rateLimitHeaders sets the RateLimit-Limit, RateLimit-Remaining and
// RateLimit-Reset fields (draft-ietf-httpapi-ratelimit-headers, the
// single-policy form) from the most constrained of d's limits: the one with
// the smallest fraction left, and of equals the one that resets last. It
// returns that limit's seconds to reset if it is exhausted, else -1.
//
// A refused decision's headers are those of the limit that refused it
// (d.Limit), and RateLimit-Policy names it: "owner.pro-model.requests_per_minute".
func (m *middleware) rateLimitHeaders(h http.Header, d *Decision) (exhaustedReset int64) {
	var l LimitState
	policy := ""
	if d.Limit != nil && d.Limit.Currency != "" {
		// A money limit is not a rate: no RateLimit fields, and the
		// refusal lasts until its reset (a spend cap's month end).
		if d.Limit.ResetAt.IsZero() {
			return -1
		}
		return max(ceilSeconds(d.Limit.ResetAt.Sub(m.now())), 0)
	}
	if d.Limit != nil {
		l, policy = d.Limit.LimitState, d.Limit.Scope+"."
		if d.Limit.Feature != "" {
			policy += d.Limit.Feature + "."
		}
		policy += d.Limit.Name
	} else {
		var ok bool
		if l, policy, ok = mostConstrained(d); !ok {
			return -1
		}
	}
	reset := max(ceilSeconds(l.ResetAt.Sub(m.now())), 0)
	h.Set("RateLimit-Limit", strconv.FormatInt(l.Limit, 10))
	h.Set("RateLimit-Remaining", strconv.FormatInt(max(l.Remaining, 0), 10))
	h.Set("RateLimit-Reset", strconv.FormatInt(reset, 10))
	h.Set("RateLimit-Policy", strconv.Quote(policy)+";q="+strconv.FormatInt(l.Limit, 10))
	if l.Remaining <= 0 {
		return reset
	}
	return -1
}

// mostConstrained returns the tightest of d's limits (the key's, the
// owner's, the feature's) and its policy name.
func mostConstrained(d *Decision) (LimitState, string, bool) {
	var best LimitState
	bestName, found := "", false
	for _, g := range []struct {
		prefix string
		limits map[string]LimitState
	}{{"key.", d.Limits}, {"owner.", d.OwnerLimits}, {"owner." + d.Feature + ".", d.FeatureLimits}} {
		for _, name := range slices.Sorted(maps.Keys(g.limits)) {
			if l := g.limits[name]; l.Currency == "" && (!found || tighter(l, best)) {
				best, bestName, found = l, g.prefix+name, true
			}
		}
	}
	return best, bestName, found
}

// tighter reports whether a has less of its limit left than b, comparing
// fractions (remaining/limit) so that limits on different metrics compare.
func tighter(a, b LimitState) bool {
	fa, fb := fraction(a), fraction(b)
	if fa != fb {
		return fa < fb
	}
	return a.ResetAt.After(b.ResetAt)
}

func fraction(l LimitState) float64 {
	if l.Limit <= 0 || l.Remaining <= 0 {
		return 0
	}
	return float64(l.Remaining) / float64(l.Limit)
}

func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// apiKey reads the key from X-Api-Key, or else from Authorization: Bearer.
func apiKey(r *http.Request) (key string, fromAuthorization bool) {
	if k := strings.TrimSpace(r.Header.Get("X-Api-Key")); k != "" {
		return k, false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ForwardedFor returns a MiddlewareOptions.ClientIP for a server behind
// trustedProxies proxies that each append the address they received the
// request from to X-Forwarded-For. The caller's address is then the
// trustedProxies-th entry from the right: entries to its left were written
// by the caller and are not trusted. (Google Cloud's external Application
// Load Balancer appends two entries, the client's and its own: count it
// as 2.) With fewer entries than that, the request did not come through
// the proxies and the host of RemoteAddr is returned; an entry that is not
// an IP address gives "", which IP-restricted keys refuse.
func ForwardedFor(trustedProxies int) func(r *http.Request) string {
	return func(r *http.Request) string {
		if trustedProxies <= 0 {
			return remoteHost(r)
		}
		var entries []string
		for _, line := range r.Header.Values("X-Forwarded-For") {
			for e := range strings.SplitSeq(line, ",") {
				entries = append(entries, strings.TrimSpace(e))
			}
		}
		if len(entries) < trustedProxies {
			return remoteHost(r)
		}
		e := entries[len(entries)-trustedProxies]
		if a, err := netip.ParseAddr(e); err == nil {
			return a.String()
		}
		if ap, err := netip.ParseAddrPort(e); err == nil {
			return ap.Addr().String()
		}
		return ""
	}
}

type errorJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers with a small JSON error body. Messages are fixed
// texts: nothing from the request is echoed.
func writeError(w http.ResponseWriter, status int, code, message string) {
	var body errorJSON
	body.Error.Code, body.Error.Message = code, message
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// recorder counts the status and body bytes a handler writes.
type recorder struct {
	http.ResponseWriter
	status int // the final status; 0 until one is written
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx answers are informational, not final
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher for handlers that assert it.
func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
