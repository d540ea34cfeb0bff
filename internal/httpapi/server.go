package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/leaks"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/portal"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/tokens"
	"github.com/keyplane/keyplane/internal/verify"
	"github.com/keyplane/keyplane/internal/webhook"
)

// Body limits.
const (
	// ManagementBodyLimit bounds the body of the key management routes.
	ManagementBodyLimit = 64 << 10
	// MaxHeaderBytes bounds a request's line and headers, as
	// http.Server.MaxHeaderBytes counts them. The handler answers 431 with
	// a JSON error above it, so the limit holds under the Functions
	// Framework, whose server has net/http's 1 MB default; `keyplane
	// serve`'s server has it as its MaxHeaderBytes, so net/http itself
	// answers 431 (plain text) once a request's headers exceed it by more
	// than net/http's 4 KB read slop.
	MaxHeaderBytes = 32 << 10
)

// Server holds the dependencies of the handlers. Build it in a
// composition root; all fields but Logger and Project are required.
type Server struct {
	Keys           *keys.Service
	Owners         *owners.Service
	Notify         *notify.Service // owner webhooks
	Verifier       *verify.Verifier
	Ledger         ledger.Ledger
	Sweeper        *sweep.Sweeper
	Leaks          *leaks.Service // leak reports
	GitHubKeys     *leaks.Keyring // checks GitHub's signature on POST /v1/leaks/github
	UsageTopic     queue.Topic
	WebhookSecrets []webhook.Secret // usage webhook signing secrets (several during a rotation)
	Clock          clock.Clock      // default clock.Real
	Plans          *plan.Catalog
	Auth           Authenticator
	// VerifyAuth, if set, also admits callers with the verify permission
	// only: gateways get a token that cannot manage keys.
	VerifyAuth Authenticator
	// Tokens, if set, admits caller tokens (tokens.Service) and serves the
	// /v1/tokens routes.
	Tokens *tokens.Service
	// Portal, if set, serves POST /v1/portal/sessions (a Keys function
	// route) and, with the Faces function's routes, the owner portal's
	// pages under /portal/.
	Portal  *portal.Portal
	Logger  *slog.Logger // default slog.Default()
	Project string       // Google Cloud project, for trace correlation in logs
	// Console, if set, is served at /console and below wherever the Faces
	// function's routes are (internal/console).
	Console http.Handler
	// ValidLogSample, if above 1, makes the request log keep one in this
	// many VALID verify answers, the line saying how many it stands for
	// ("sampled"); every other request is logged. 0 or 1 logs every one.
	ValidLogSample int

	validSeen atomic.Uint64 // VALID verify answers, for ValidLogSample
}

// Function names: each route belongs to the Cloud Function that serves it.
const (
	FuncKeys         = "Keys"
	FuncVerify       = "Verify"
	FuncUsageWebhook = "UsageWebhook"
	FuncSweep        = "Sweep"
	// FuncLeakReports serves GitHub's secret scanning reports alone: GitHub
	// cannot pass Cloud Run's IAM check, so this function is public and
	// authenticated by GitHub's signature, and the Keys function stays
	// behind IAM.
	FuncLeakReports = "LeakReports"
	// FuncFaces serves the pages people open in a browser, the operator
	// console (/console) and the owner portal (/portal/), and no API
	// route: a browser cannot pass Cloud Run's IAM check, so this function
	// is public and the pages authenticate people themselves (the
	// console's token sign-in, the portal's single-use links), while the
	// Keys function, API and all, stays behind IAM.
	FuncFaces = "Faces"
)

// Route is one entry of the routing table.
type Route struct {
	Function string // Cloud Function serving it
	Method   string
	Path     string // net/http pattern path, e.g. /v1/keys/{id}
	Auth     bool   // requires the bearer token
	// Perm is the permission a caller needs (tokens.None when Auth is
	// false). How an owner-scoped token is kept to its owner: ownerScoped.
	Perm   tokens.Permission
	limit  int64 // request body limit
	handle func(w http.ResponseWriter, r *http.Request, actor string) error
}

// Routes returns the routing table.
func (s *Server) Routes() []Route {
	return []Route{
		{FuncKeys, "POST", "/v1/keys", true, tokens.KeysCreate, ManagementBodyLimit, s.createKey},
		{FuncKeys, "GET", "/v1/keys", true, tokens.KeysRead, 0, s.listKeys},
		{FuncKeys, "GET", "/v1/keys/{id}", true, tokens.KeysRead, 0, s.getKey},
		{FuncKeys, "PATCH", "/v1/keys/{id}", true, tokens.KeysUpdate, ManagementBodyLimit, s.updateKey},
		{FuncKeys, "POST", "/v1/keys/{id}/disable", true, tokens.KeysDisable, ManagementBodyLimit, s.disableKey},
		{FuncKeys, "POST", "/v1/keys/{id}/enable", true, tokens.KeysDisable, ManagementBodyLimit, s.enableKey},
		{FuncKeys, "POST", "/v1/keys/{id}/revoke", true, tokens.KeysRevoke, ManagementBodyLimit, s.revokeKey},
		{FuncKeys, "POST", "/v1/keys/{id}/rotate", true, tokens.KeysRotate, ManagementBodyLimit, s.rotateKey},
		{FuncKeys, "GET", "/v1/keys/{id}/secret", true, tokens.KeysReveal, 0, s.revealKey},
		{FuncKeys, "GET", "/v1/audit", true, tokens.AuditRead, 0, s.listAudit},
		{FuncKeys, "GET", "/v1/keys/{id}/usage", true, tokens.UsageRead, 0, s.keyUsage},
		{FuncKeys, "GET", "/v1/usage", true, tokens.UsageRead, 0, s.listUsage},
		{FuncKeys, "GET", "/v1/usage/dead-letters", true, tokens.UsageRead, 0, s.listDeadLetters},
		{FuncKeys, "GET", "/v1/owners", true, tokens.OwnersRead, 0, s.listOwners},
		{FuncKeys, "GET", "/v1/owners/{owner}", true, tokens.OwnersRead, 0, s.getOwner},
		{FuncKeys, "PATCH", "/v1/owners/{owner}", true, tokens.OwnersWrite, ManagementBodyLimit, s.updateOwner},
		{FuncKeys, "PUT", "/v1/owners/{owner}/webhook", true, tokens.OwnersWrite, ManagementBodyLimit, s.putWebhook},
		{FuncKeys, "GET", "/v1/owners/{owner}/webhook", true, tokens.OwnersRead, 0, s.getWebhook},
		{FuncKeys, "GET", "/v1/owners/{owner}/spend", true, tokens.UsageRead, 0, s.ownerSpend},
		{FuncKeys, "POST", "/v1/owners/{owner}/credits", true, tokens.BillingWrite, ManagementBodyLimit, s.addCredit},
		{FuncKeys, "GET", "/v1/owners/{owner}/credits", true, tokens.UsageRead, 0, s.listCredits},
		{FuncKeys, "POST", "/v1/leaks", true, tokens.KeysRevoke, LeaksBodyLimit, s.postLeaks},
		{FuncLeakReports, "POST", "/v1/leaks/github", false, tokens.None, LeaksBodyLimit, s.postGitHubLeaks}, // signed by GitHub instead
		{FuncUsageWebhook, "POST", "/v1/usage", false, tokens.None, UsageBodyLimit, s.postUsage},
		{FuncVerify, "POST", "/v1/verify", true, tokens.Verify, VerifyBodyLimit, s.verifyKey},
		{FuncKeys, "POST", "/v1/tokens", true, tokens.TokensManage, ManagementBodyLimit, s.createToken},
		{FuncKeys, "GET", "/v1/tokens", true, tokens.TokensManage, 0, s.listTokens},
		{FuncKeys, "POST", "/v1/tokens/{id}/revoke", true, tokens.TokensManage, ManagementBodyLimit, s.revokeToken},
		{FuncKeys, "POST", "/v1/portal/sessions", true, tokens.PortalSessions, ManagementBodyLimit, s.createPortalSession},
		{FuncSweep, "POST", "/v1/sweep", true, tokens.SweepRun, ManagementBodyLimit, s.runSweep},
		{"", "GET", "/healthz", false, tokens.None, 0, s.healthz},
	}
}

func (s *Server) now() time.Time {
	if s.Clock == nil {
		return time.Now().UTC()
	}
	return s.Clock.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Handler serves the routes of the named functions (all routes if none
// are named); /healthz is always served.
func (s *Server) Handler(functions ...string) http.Handler {
	mux := http.NewServeMux()
	want := map[string]bool{"": true}
	for _, f := range functions {
		want[f] = true
	}
	var verify http.Handler // POST /v1/verify, if served
	for _, rt := range s.Routes() {
		if len(functions) > 0 && !want[rt.Function] {
			continue
		}
		h := s.wrap(rt)
		if rt.Method == "POST" && rt.Path == "/v1/verify" {
			verify = h
		}
		mux.Handle(rt.Method+" "+rt.Path, h)
	}
	var pages http.Handler // the owner portal's pages, if served
	if s.Portal != nil && (len(functions) == 0 || want[FuncFaces]) {
		pages = s.Portal.Handler()
	}
	if s.Console != nil && (len(functions) == 0 || want[FuncFaces]) {
		mux.Handle("/console", s.Console)
		mux.Handle("/console/", s.Console)
	}
	routed := s.jsonFallback(mux)
	return s.logRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := headerBytes(r); n > MaxHeaderBytes {
			writeJSON(w, http.StatusRequestHeaderFieldsTooLarge, errorBody{Error: errorDetail{Code: "HEADERS_TOO_LARGE",
				Message: "the request line and headers are " + strconv.Itoa(n) + " bytes; the limit is " + strconv.Itoa(MaxHeaderBytes)}})
			return
		}
		if pages != nil && isPortalPath(r.URL.Path) {
			pages.ServeHTTP(w, r)
			return
		}
		if !cleanPath(r.URL.Path) {
			writeError(w, r, s.logger(), errs.E(errs.NotFound, "no route for %s %s: paths have no empty, . or .. segments", r.Method, r.URL.Path))
			return
		}
		// Verify answers every request of a customer's API: it skips the
		// mux's match, which would pick the same handler for this exact,
		// unescaped path (r.Pattern, unused by it, stays empty).
		if verify != nil && r.Method == "POST" && r.URL.Path == "/v1/verify" && r.URL.RawPath == "" {
			verify.ServeHTTP(w, r)
			return
		}
		routed.ServeHTTP(w, r)
	}))
}

// wrap authenticates, bounds the body and maps a handler's error.
func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor := ""
		if rt.Auth {
			var ok bool
			if r, actor, ok = s.authorize(w, r, rt); !ok {
				return
			}
		}
		// An empty query is valid; parsing it would still allocate a map.
		if r.URL.RawQuery != "" {
			if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
				writeError(w, r, s.logger(), errs.E(errs.Invalid, "the query string is malformed (%s): percent-encode reserved characters, like %%25 for %%", queryProblem(err)))
				return
			}
		}
		if rt.limit == 0 && r.ContentLength > 0 {
			writeError(w, r, s.logger(), errs.E(errs.Invalid, "%s %s takes no request body", rt.Method, rt.Path))
			return
		}
		if err := rt.handle(w, r, actor); err != nil {
			writeError(w, r, s.logger(), err)
		}
	})
}

// queryProblem says what url.ParseQuery found wrong without echoing the
// query, which may hold anything.
func queryProblem(err error) string {
	var esc url.EscapeError
	if errors.As(err, &esc) {
		return "an invalid percent-escape"
	}
	if strings.Contains(err.Error(), "semicolon") {
		return "a semicolon; separate parameters with &"
	}
	return "an undecodable parameter"
}

// headerValue is r.Header.Get(key) for a key in canonical form, without
// Get's canonicalizing of it: for the headers every request reads.
func headerValue(h http.Header, key string) string {
	if vs := h[key]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// headerBytes is the size of r's request line and headers on the wire, as
// HTTP/1.1 sends them.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for name, vs := range r.Header {
		for _, v := range vs {
			n += len(name) + len(v) + 4 // "name: value\r\n"
		}
	}
	if r.Host != "" && headerValue(r.Header, "Host") == "" {
		n += len("Host: \r\n") + len(r.Host)
	}
	return n
}

// cleanPath reports whether every segment of path is a name: no empty,
// "." or ".." segment, which net/http's mux would answer with a redirect
// to the cleaned path.
func cleanPath(path string) bool {
	if path == "/" {
		return true
	}
	if !strings.HasPrefix(path, "/") {
		return false
	}
	// Segment by segment, without the slice strings.Split would allocate.
	for rest := path[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		if !more {
			return true
		}
		rest = tail
	}
}

// jsonFallback answers unknown paths and methods with a JSON error body
// instead of net/http's plain text. Known routes are matched once, by mux;
// only a request no route matches pays for finding the allowed methods.
func (s *Server) jsonFallback(mux *http.ServeMux) http.Handler {
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) == 0 {
			writeError(w, r, s.logger(), errs.E(errs.NotFound, "no route for %s %s", r.Method, r.URL.Path))
			return
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: errorDetail{Code: "METHOD_NOT_ALLOWED",
			Message: r.Method + " is not allowed on " + r.URL.Path + "; allowed: " + strings.Join(allowed, ", ")}})
	})
	return mux
}

// logRequests writes one summary entry per request, in Cloud Logging's
// httpRequest format. It never logs bodies or headers, which may hold keys.
// It tells the logger's Buffer, if any, when the request starts and ends
// (logging.Buffer), and hands the entry to logging.LogRequest, which
// appends the line itself on the logger `serve` and the functions use.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log := s.logger()
		buf := logging.BufferOf(log)
		buf.Begin()
		defer buf.End() // after the entry, so that the last request out flushes it
		start := time.Now()
		sw := statusWriters.Get().(*statusWriter)
		*sw = statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() { *sw = statusWriter{}; statusWriters.Put(sw) }()
		next.ServeHTTP(sw, r)
		level := slog.LevelInfo
		if sw.code >= 500 {
			level = slog.LevelError
		}
		if !log.Handler().Enabled(r.Context(), level) {
			return // do not build an entry that is dropped
		}
		sampled := 0
		if sw.valid && s.ValidLogSample > 1 {
			if s.validSeen.Add(1)%uint64(s.ValidLogSample) != 1 {
				return // one of the lines the kept one stands for
			}
			sampled = s.ValidLogSample
		}
		e := logging.RequestEntry{
			Level: level, Method: r.Method, Path: r.URL.Path, Status: sw.code, Size: sw.n,
			RemoteIP: r.RemoteAddr, UserAgent: headerValue(r.Header, "User-Agent"), Sampled: sampled,
		}
		e.Time = time.Now()
		e.Latency = e.Time.Sub(start)
		if s.Project != "" {
			e.Project, e.TraceID = s.Project, logging.TraceID(r)
		}
		logging.LogRequest(r.Context(), log, &e)
	})
}

// statusWriters recycles the request log's ResponseWriter wrapper, which
// no handler keeps past its return (net/http forbids using a
// ResponseWriter after ServeHTTP returns).
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

type statusWriter struct {
	http.ResponseWriter
	code  int
	n     int
	valid bool // a VALID verify answer, which the log may sample
}

// answeredValid marks w's request as a VALID verify answer, for the
// request log's sampling (Server.ValidLogSample).
func answeredValid(w http.ResponseWriter) {
	if sw, ok := w.(*statusWriter); ok {
		sw.valid = true
	}
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// page parses page_size and page_token.
func page(r *http.Request) (size int, token string, err error) {
	size = 50
	if v := r.URL.Query().Get("page_size"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 || n > 1000 {
			return 0, "", errs.E(errs.Invalid, "page_size must be an integer from 1 to 1000")
		}
		size = n
	}
	return size, r.URL.Query().Get("page_token"), nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ string) error {
	writeJSON(w, http.StatusOK, healthResource{Status: "ok"})
	return nil
}
