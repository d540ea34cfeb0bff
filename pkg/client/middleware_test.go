package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeVerifier returns a fixed decision or error, and remembers the last
// request it was asked about.
type fakeVerifier struct {
	d    *Decision
	err  error
	last VerifyRequest
}

func (f *fakeVerifier) Verify(_ context.Context, req VerifyRequest) (*Decision, error) {
	f.last = req
	return f.d, f.err
}

// served is what the protected handler saw.
type served struct {
	called   bool
	decision *Decision
	header   http.Header
}

// protected returns a handler that records what it saw in s and answers
// 200 "ok".
func protected(s *served) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.called = true
		s.decision, _ = FromContext(r.Context())
		s.header = r.Header.Clone()
		io.WriteString(w, "ok")
	})
}

// call sends a request with the given headers ("Name", "value", …)
// through mw to a recording handler.
func call(mw func(http.Handler) http.Handler, headers ...string) (*httptest.ResponseRecorder, *served) {
	r := httptest.NewRequest("GET", "/v1/generate", nil)
	r.RemoteAddr = "192.0.2.10:4321"
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	s := &served{}
	w := httptest.NewRecorder()
	mw(protected(s)).ServeHTTP(w, r)
	return w, s
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body errorJSON
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	if body.Error.Message == "" {
		t.Errorf("error body %s has no message", w.Body.String())
	}
	return body.Error.Code
}

var quiet = slog.New(slog.DiscardHandler)

func TestMiddlewareAnswersEachDecision(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 30, 0, time.UTC)
	minute := map[string]LimitState{"requests_per_minute": {Limit: 60, Remaining: 0, ResetAt: now.Add(30 * time.Second)}}
	day := map[string]LimitState{"requests_per_day": {Limit: 1500, Used: Ptr[int64](1500), Remaining: 0, ResetAt: now.Add(11*time.Hour + 59*time.Minute + 30*time.Second)}}
	spendCap := LimitState{Limit: 25_000_000, Used: Ptr[int64](25_000_000), Remaining: 0, ResetAt: now.Add(30 * time.Second), Currency: "USD"}
	credits := LimitState{Limit: 10_000_000, Used: Ptr[int64](10_000_000), Remaining: 0, Currency: "USD"}
	for _, tc := range []struct {
		d          Decision
		status     int
		wwwAuth    string
		retryAfter string
		rateLimit  string // Limit/Remaining/Reset
	}{
		{Decision{Valid: true, Code: CodeValid, KeyID: "key_1", Limits: map[string]LimitState{"requests_per_minute": {Limit: 60, Remaining: 59, ResetAt: now.Add(30 * time.Second)}}},
			200, "", "", "60/59/30"},
		{Decision{Code: CodeNotFound}, 401, `Bearer error="invalid_token"`, "", ""},
		{Decision{Code: CodeExpired, KeyID: "key_1"}, 401, `Bearer error="invalid_token"`, "", ""},
		{Decision{Code: CodeRevoked, KeyID: "key_1"}, 401, `Bearer error="invalid_token"`, "", ""},
		{Decision{Code: CodeDisabled, KeyID: "key_1"}, 401, `Bearer error="invalid_token"`, "", ""},
		{Decision{Code: CodeForbidden, KeyID: "key_1"}, 403, "", "", ""},
		{Decision{Code: CodeInsufficientPermissions, KeyID: "key_1"}, 403, `Bearer error="insufficient_scope", scope="generate"`, "", ""},
		{Decision{Code: CodeRateLimited, KeyID: "key_1", Limits: minute, RetryAfterSeconds: 30}, 429, "", "30", "60/0/30"},
		{Decision{Code: CodeUsageExceeded, KeyID: "key_1", Limits: day}, 429, "", "43170", "1500/0/43170"},
		// Money limits: a spend cap refuses until the month ends (no
		// RateLimit fields: it is not a rate); used-up credits are 402.
		{Decision{Code: CodeUsageExceeded, KeyID: "key_1", OwnerLimits: map[string]LimitState{LimitSpendPerMonth: spendCap},
			Limit: &RefusedLimit{Scope: "owner", Name: LimitSpendPerMonth, LimitState: spendCap, Source: "owner override"}}, 429, "", "30", ""},
		{Decision{Code: CodeUsageExceeded, KeyID: "key_1", Limits: minute, OwnerLimits: map[string]LimitState{LimitCredits: credits},
			Limit: &RefusedLimit{Scope: "owner", Name: LimitCredits, LimitState: credits, Source: "prepaid credits"}}, 402, "", "", ""},
		{Decision{Code: "SOMETHING_NEW", KeyID: "key_1"}, 403, "", "", ""},
		{Decision{Valid: true, Code: CodeDisabled}, 401, `Bearer error="invalid_token"`, "", ""}, // the code decides
	} {
		name := string(tc.d.Code)
		if tc.d.Limit != nil {
			name += "/" + tc.d.Limit.Name
		}
		t.Run(name, func(t *testing.T) {
			mw := newMiddleware(&fakeVerifier{d: &tc.d}, &MiddlewareOptions{Scope: func(*http.Request) string { return "generate" }}, func() time.Time { return now })
			w, s := call(mw, "X-Api-Key", "kp_live_secretsecret")
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if s.called != (tc.status == 200) {
				t.Errorf("protected handler called: %v, want %v", s.called, tc.status == 200)
			}
			if tc.status == 200 {
				if s.decision == nil || s.decision.KeyID != "key_1" {
					t.Errorf("decision in context = %+v", s.decision)
				}
			} else {
				want := string(tc.d.Code)
				if got := errorCode(t, w); got != want {
					t.Errorf("error code %q, want %q", got, want)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			if strings.Contains(w.Body.String(), "secretsecret") {
				t.Errorf("the answer echoes the key: %s", w.Body)
			}
			h := w.Header()
			rl := ""
			if h.Get("RateLimit-Limit") != "" {
				rl = h.Get("RateLimit-Limit") + "/" + h.Get("RateLimit-Remaining") + "/" + h.Get("RateLimit-Reset")
			}
			for _, f := range []struct{ name, got, want string }{
				{"WWW-Authenticate", h.Get("WWW-Authenticate"), tc.wwwAuth},
				{"Retry-After", h.Get("Retry-After"), tc.retryAfter},
				{"RateLimit-*", rl, tc.rateLimit},
			} {
				if f.got != f.want {
					t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestRateLimitHeadersShowTheMostConstrainedLimit(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 30, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		limits map[string]LimitState
		want   string // Limit/Remaining/Reset, "" for none
	}{
		{"none", nil, ""},
		{"smallest fraction left, not smallest count", map[string]LimitState{
			"requests_per_minute": {Limit: 15, Remaining: 10, ResetAt: now.Add(30 * time.Second)},
			"requests_per_day":    {Limit: 1500, Remaining: 100, ResetAt: now.Add(10 * time.Hour)},
			"units_per_minute":    {Limit: 1_000_000, Remaining: 900_000, ResetAt: now.Add(30 * time.Second)},
		}, "1500/100/36000"},
		{"of two exhausted, the later reset", map[string]LimitState{
			"requests_per_minute": {Limit: 15, Remaining: 0, ResetAt: now.Add(30 * time.Second)},
			"requests_per_day":    {Limit: 1500, Remaining: 0, ResetAt: now.Add(time.Hour)},
		}, "1500/0/3600"},
		{"partial seconds round up", map[string]LimitState{
			"requests_per_minute": {Limit: 5, Remaining: 4, ResetAt: now.Add(1500 * time.Millisecond)},
		}, "5/4/2"},
		{"a reset in the past is 0", map[string]LimitState{
			"requests_per_minute": {Limit: 5, Remaining: 4, ResetAt: now.Add(-time.Second)},
		}, "5/4/0"},
		{"a zero limit is exhausted", map[string]LimitState{
			"units_per_minute":    {Limit: 0, Remaining: 0, ResetAt: now.Add(30 * time.Second)},
			"requests_per_minute": {Limit: 5, Remaining: 1, ResetAt: now.Add(30 * time.Second)},
		}, "0/0/30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Decision{Valid: true, Code: CodeValid, Limits: tc.limits}
			w, _ := call(newMiddleware(&fakeVerifier{d: d}, nil, func() time.Time { return now }), "X-Api-Key", "k")
			h := w.Header()
			got := ""
			if h.Get("RateLimit-Limit") != "" {
				got = h.Get("RateLimit-Limit") + "/" + h.Get("RateLimit-Remaining") + "/" + h.Get("RateLimit-Reset")
			}
			if got != tc.want {
				t.Errorf("RateLimit-Limit/Remaining/Reset = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMiddlewareReadsTheKeyAndRequestData(t *testing.T) {
	longRef := "https://example.com/" + strings.Repeat("p", maxReferrerLen)
	opts := &MiddlewareOptions{
		Scope: func(r *http.Request) string { return "generate" },
		Units: func(r *http.Request) int64 { return 7 },
	}
	for _, tc := range []struct {
		name    string
		opts    *MiddlewareOptions
		headers []string
		status  int
		want    VerifyRequest
	}{
		{"x-api-key", nil, []string{"X-Api-Key", "kp_a"}, 200, VerifyRequest{Key: "kp_a", IP: "192.0.2.10"}},
		{"bearer", nil, []string{"Authorization", "Bearer kp_b"}, 200, VerifyRequest{Key: "kp_b", IP: "192.0.2.10"}},
		{"bearer in any case", nil, []string{"Authorization", "bearer  kp_b "}, 200, VerifyRequest{Key: "kp_b", IP: "192.0.2.10"}},
		{"x-api-key wins over a bearer token", nil, []string{"Authorization", "Bearer user-jwt", "X-Api-Key", "kp_a"}, 200, VerifyRequest{Key: "kp_a", IP: "192.0.2.10"}},
		{"basic auth is no key", nil, []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401, VerifyRequest{}},
		{"empty bearer is no key", nil, []string{"Authorization", "Bearer "}, 401, VerifyRequest{}},
		{"no key", nil, nil, 401, VerifyRequest{}},
		{"a key too long to be one", nil, []string{"X-Api-Key", strings.Repeat("k", maxKeyLen+1)}, 401, VerifyRequest{}},
		{"scope, units and referrer", opts, []string{"X-Api-Key", "kp_a", "Referer", "https://app.example.com/x"}, 200,
			VerifyRequest{Key: "kp_a", Scope: "generate", Units: 7, IP: "192.0.2.10", Referrer: "https://app.example.com/x"}},
		{"an overlong referrer is dropped", nil, []string{"X-Api-Key", "kp_a", "Referer", longRef}, 200, VerifyRequest{Key: "kp_a", IP: "192.0.2.10"}},
		{"client IP function", &MiddlewareOptions{ClientIP: ForwardedFor(1)}, []string{"X-Api-Key", "kp_a", "X-Forwarded-For", "1.1.1.1, 203.0.113.7"}, 200,
			VerifyRequest{Key: "kp_a", IP: "203.0.113.7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeVerifier{d: &Decision{Valid: true, Code: CodeValid}}
			w, _ := call(Middleware(f, tc.opts), tc.headers...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if f.last != tc.want {
				t.Errorf("verify request = %+v, want %+v", f.last, tc.want)
			}
			if tc.status == 401 {
				if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
				}
			}
		})
	}
}

func TestKeyHeaderIsStrippedBeforeTheBackend(t *testing.T) {
	for _, tc := range []struct {
		name            string
		keep            bool
		headers         []string
		wantAuth, wantX string
	}{
		{"bearer", false, []string{"Authorization", "Bearer kp_a"}, "", ""},
		{"x-api-key", false, []string{"X-Api-Key", "kp_a"}, "", ""},
		{"the end user's own token stays", false, []string{"X-Api-Key", "kp_a", "Authorization", "Bearer user-jwt"}, "Bearer user-jwt", ""},
		{"kept on request", true, []string{"X-Api-Key", "kp_a", "Authorization", "Bearer kp_b"}, "Bearer kp_b", "kp_a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeVerifier{d: &Decision{Valid: true, Code: CodeValid}}
			_, s := call(Middleware(f, &MiddlewareOptions{KeepKeyHeader: tc.keep}), tc.headers...)
			if !s.called {
				t.Fatal("protected handler not called")
			}
			if got := s.header.Get("Authorization"); got != tc.wantAuth {
				t.Errorf("backend saw Authorization %q, want %q", got, tc.wantAuth)
			}
			if got := s.header.Get("X-Api-Key"); got != tc.wantX {
				t.Errorf("backend saw X-Api-Key %q, want %q", got, tc.wantX)
			}
		})
	}
}

func TestOnResponseReportsStatusAndBytes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		status  int
		bytes   int64
	}{
		{"write", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }, 200, 5},
		{"status then body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			io.WriteString(w, "created!")
		}, 201, 8},
		{"nothing written", func(w http.ResponseWriter, r *http.Request) {}, 200, 0},
		{"informational first", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(404)
		}, 404, 0},
		{"flushed through the controller", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "a")
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			w.(http.Flusher).Flush()
			io.WriteString(w, "bc")
		}, 200, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gotStatus int
			var gotBytes int64
			var gotKeyID string
			mw := Middleware(&fakeVerifier{d: &Decision{Valid: true, Code: CodeValid, KeyID: "key_1"}}, &MiddlewareOptions{
				OnResponse: func(r *http.Request, d *Decision, status int, bytes int64) {
					gotKeyID, gotStatus, gotBytes = d.KeyID, status, bytes
				},
			})
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Api-Key", "kp_a")
			w := httptest.NewRecorder()
			mw(tc.handler).ServeHTTP(w, r)
			if gotKeyID != "key_1" || gotStatus != tc.status || gotBytes != tc.bytes {
				t.Errorf("OnResponse(%s, %d, %d), want (key_1, %d, %d)", gotKeyID, gotStatus, gotBytes, tc.status, tc.bytes)
			}
			if w.Body.Len() != int(tc.bytes) {
				t.Errorf("the client got %d bytes, want %d", w.Body.Len(), tc.bytes)
			}
		})
	}
}

func TestVerifierFailures(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		failOpen   bool
		status     int
		retryAfter string
	}{
		{"network error fails closed", errors.New("dial tcp: connection refused"), false, 503, ""},
		{"network error with FailOpen", errors.New("dial tcp: connection refused"), true, 200, ""},
		{"keyplane 503 fails closed", &APIError{Status: 503, Code: "UNAVAILABLE", RetryAfter: 5 * time.Second}, false, 503, "5"},
		{"keyplane 503 with FailOpen", &APIError{Status: 503, Code: "UNAVAILABLE"}, true, 200, ""},
		{"a rejected admin token never fails open", &APIError{Status: 401, Code: "UNAUTHENTICATED"}, true, 503, ""},
		{"an invalid request never fails open", &APIError{Status: 400, Code: "INVALID_ARGUMENT"}, true, 503, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reported bool
			var reportedDecision *Decision
			mw := Middleware(&fakeVerifier{err: tc.err}, &MiddlewareOptions{
				FailOpen: tc.failOpen, Logger: quiet,
				OnResponse: func(r *http.Request, d *Decision, status int, bytes int64) { reported, reportedDecision = true, d },
			})
			w, s := call(mw, "X-Api-Key", "kp_a")
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d", w.Code, tc.status)
			}
			if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if tc.status == 503 {
				if code := errorCode(t, w); code != "UNAVAILABLE" {
					t.Errorf("error code %q, want UNAVAILABLE", code)
				}
				if s.called || reported {
					t.Error("the protected handler ran although the key was not verified")
				}
				return
			}
			if !s.called || s.decision != nil || !reported || reportedDecision != nil {
				t.Errorf("failing open: handler called %v with decision %+v, reported %v with %+v; want called and reported without one",
					s.called, s.decision, reported, reportedDecision)
			}
		})
	}
}

func TestNilDecisionFailsClosed(t *testing.T) {
	w, s := call(Middleware(&fakeVerifier{}, &MiddlewareOptions{Logger: quiet}), "X-Api-Key", "kp_a")
	if w.Code != 503 || s.called {
		t.Errorf("a verifier returning (nil, nil): status %d, handler called %v; want 503, not called", w.Code, s.called)
	}
}

func TestForwardedFor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies int
		xff     []string
		want    string
	}{
		{"one proxy: the rightmost entry", 1, []string{"6.6.6.6, 203.0.113.7"}, "203.0.113.7"},
		{"two proxies", 2, []string{"6.6.6.6, 203.0.113.7, 10.0.0.2"}, "203.0.113.7"},
		{"across header lines", 2, []string{"6.6.6.6", "203.0.113.7", "10.0.0.2"}, "203.0.113.7"},
		{"ipv6 and port", 1, []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"ipv4 with port", 1, []string{"203.0.113.7:8080"}, "203.0.113.7"},
		{"fewer entries than proxies", 2, []string{"203.0.113.7"}, "192.0.2.10"},
		{"no header", 1, nil, "192.0.2.10"},
		{"garbage", 1, []string{"unknown"}, ""},
		{"zero proxies", 0, []string{"6.6.6.6"}, "192.0.2.10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "192.0.2.10:4321"
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ForwardedFor(tc.proxies)(r); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// The tests below run the middleware against a real keyplane server
// through the Client.

func TestMiddlewareAgainstKeyplane(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	valid := mustCreate(t, c, CreateKeyRequest{Owner: "acct_1", Scopes: []string{"generate"}})
	disabled := mustCreate(t, c, CreateKeyRequest{Owner: "acct_1"})
	if _, err := c.DisableKey(ctx, disabled.ID, "unpaid"); err != nil {
		t.Fatal(err)
	}
	revoked := mustCreate(t, c, CreateKeyRequest{Owner: "acct_1"})
	if _, err := c.RevokeKey(ctx, revoked.ID, ""); err != nil {
		t.Fatal(err)
	}
	ipOnly := mustCreate(t, c, CreateKeyRequest{Owner: "acct_1", Restrictions: &Restrictions{AllowedIPs: []string{"203.0.113.0/24"}}})
	fixedIP := func(ip string) func(*http.Request) string { return func(*http.Request) string { return ip } }
	scope := func(s string) func(*http.Request) string { return func(*http.Request) string { return s } }

	for _, tc := range []struct {
		name    string
		opts    MiddlewareOptions
		headers []string
		status  int
		code    string
	}{
		{"valid", MiddlewareOptions{Scope: scope("generate")}, []string{"X-Api-Key", valid.Secret}, 200, ""},
		{"valid as bearer", MiddlewareOptions{}, []string{"Authorization", "Bearer " + valid.Secret}, 200, ""},
		{"missing key", MiddlewareOptions{}, nil, 401, "UNAUTHENTICATED"},
		{"unknown key", MiddlewareOptions{}, []string{"X-Api-Key", "kp_live_0000000000000000000000000000"}, 401, "NOT_FOUND"},
		{"disabled", MiddlewareOptions{}, []string{"X-Api-Key", disabled.Secret}, 401, "DISABLED"},
		{"revoked", MiddlewareOptions{}, []string{"X-Api-Key", revoked.Secret}, 401, "REVOKED"},
		{"scope not granted", MiddlewareOptions{Scope: scope("embed")}, []string{"X-Api-Key", valid.Secret}, 403, "INSUFFICIENT_PERMISSIONS"},
		{"IP not allowed", MiddlewareOptions{ClientIP: fixedIP("198.51.100.7")}, []string{"X-Api-Key", ipOnly.Secret}, 403, "FORBIDDEN"},
		{"IP allowed", MiddlewareOptions{ClientIP: fixedIP("203.0.113.9")}, []string{"X-Api-Key", ipOnly.Secret}, 200, ""},
		{"IP from RemoteAddr", MiddlewareOptions{}, []string{"X-Api-Key", ipOnly.Secret}, 403, "FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Logger = quiet
			w, s := call(Middleware(c, &opts), tc.headers...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != 200 {
				if got := errorCode(t, w); got != tc.code {
					t.Errorf("error code %q, want %q", got, tc.code)
				}
				if s.called {
					t.Error("the protected handler ran")
				}
				return
			}
			if !s.called || s.decision == nil || !s.decision.Valid || s.decision.Owner != "acct_1" {
				t.Fatalf("handler called %v with decision %+v", s.called, s.decision)
			}
			if w.Body.String() != "ok" {
				t.Errorf("body %q, want the protected handler's", w.Body)
			}
			if n, err := strconv.Atoi(w.Header().Get("RateLimit-Remaining")); err != nil || n < 0 || n >= 15 || w.Header().Get("RateLimit-Limit") != "15" {
				t.Errorf("RateLimit-Limit %q, RateLimit-Remaining %q; want the free plan's 15 per minute",
					w.Header().Get("RateLimit-Limit"), w.Header().Get("RateLimit-Remaining"))
			}
		})
	}
}

func TestMiddlewareRateLimitAgainstKeyplane(t *testing.T) {
	c := newClient(t)
	k := mustCreate(t, c, CreateKeyRequest{Owner: "o", Limits: Limits{"requests_per_minute": 2}})
	mw := Middleware(c, nil)
	// Two requests pass and the third is limited, unless a minute boundary
	// falls between them; then the limit is reached two requests later.
	for i := range 5 {
		w, s := call(mw, "X-Api-Key", k.Secret)
		if w.Code == 200 {
			if !s.called || w.Header().Get("RateLimit-Limit") != "2" {
				t.Fatalf("request %d: handler called %v, RateLimit-Limit %q", i, s.called, w.Header().Get("RateLimit-Limit"))
			}
			continue
		}
		if w.Code != 429 || s.called {
			t.Fatalf("request %d: status %d (%s), handler called %v; want 429", i, w.Code, w.Body, s.called)
		}
		if i < 2 {
			t.Errorf("limited after %d requests, want 2 allowed", i)
		}
		h := w.Header()
		retry, err := strconv.Atoi(h.Get("Retry-After"))
		if err != nil || retry < 1 || retry > 60 {
			t.Errorf("Retry-After %q, want 1–60 seconds", h.Get("Retry-After"))
		}
		reset, err := strconv.Atoi(h.Get("RateLimit-Reset"))
		if err != nil || reset < 0 || reset > 60 || h.Get("RateLimit-Limit") != "2" || h.Get("RateLimit-Remaining") != "0" {
			t.Errorf("RateLimit-Limit %q, -Remaining %q, -Reset %q; want 2, 0, 0–60",
				h.Get("RateLimit-Limit"), h.Get("RateLimit-Remaining"), h.Get("RateLimit-Reset"))
		}
		if code := errorCode(t, w); code != "RATE_LIMITED" {
			t.Errorf("error code %q, want RATE_LIMITED", code)
		}
		return
	}
	t.Fatal("five requests within a minute were never limited")
}

func TestMiddlewareWhenKeyplaneIsUnreachable(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	c, err := New(closed.URL, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		failOpen bool
		status   int
	}{
		{false, 503},
		{true, 200},
	} {
		t.Run("FailOpen="+strconv.FormatBool(tc.failOpen), func(t *testing.T) {
			w, s := call(Middleware(c, &MiddlewareOptions{FailOpen: tc.failOpen, Logger: quiet}), "X-Api-Key", "kp_live_anything")
			if w.Code != tc.status || s.called != tc.failOpen {
				t.Fatalf("status %d, handler called %v; want %d, %v", w.Code, s.called, tc.status, tc.failOpen)
			}
			if tc.failOpen && s.decision != nil {
				t.Errorf("a decision %+v in the context of an unverified request", s.decision)
			}
		})
	}
}

func TestMiddlewareWithAWrongAdminTokenFailsClosed(t *testing.T) {
	c, err := New(newServer(t), "wrong-token-0123456789", nil)
	if err != nil {
		t.Fatal(err)
	}
	w, s := call(Middleware(c, &MiddlewareOptions{FailOpen: true, Logger: quiet}), "X-Api-Key", "kp_live_anything")
	if w.Code != 503 || s.called {
		t.Errorf("status %d, handler called %v; want 503 even with FailOpen", w.Code, s.called)
	}
}
