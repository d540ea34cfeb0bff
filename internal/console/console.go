// Package console is the operator console at /console: server-rendered
// pages (html/template, which escapes every value) over the services the
// HTTP API uses — keys, owners, the ledger, the audit trail, the sweep and
// the dead letters — with no JavaScript needed and nothing loaded from
// the network (templates and stylesheet are embedded).
//
// An operator signs in with a credential the API accepts (the admin
// token, an allow-listed ID token or a caller token); the console keeps it
// in a server-side session named by an HttpOnly, SameSite=Strict cookie
// and authenticates it again on every request, so a scoped caller token
// sees and does only what its permissions and owner allow, and a revoked
// one is signed out at once. Sessions live in memory: a restart signs
// everyone out. Every POST carries the session's CSRF token, compared in
// constant time, and is refused when the browser says it comes from
// another site (Origin, Sec-Fetch-Site).
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger"
	"github.com/keyplane/keyplane/internal/owners"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/tokens"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Path is where the console is served.
const Path = "/console"

// formLimit bounds a form's body.
const formLimit = 64 << 10

// Config holds the console's dependencies: the services the HTTP API
// uses. Sweeper may be nil (the Faces function does not run the sweep):
// the sweep page then says so.
type Config struct {
	Keys    *keys.Service
	Owners  *owners.Service
	Ledger  ledger.Ledger
	Sweeper *sweep.Sweeper
	Plans   *plan.Catalog
	// Authenticate says who holds a credential, as the API's routes would
	// (httpapi.Server.AuthenticateCredential).
	Authenticate func(ctx context.Context, credential string) (tokens.Caller, error)
	Clock        clock.Clock   // default clock.Real
	Logger       *slog.Logger  // default slog.Default()
	Idle         time.Duration // default DefaultIdle
	Lifetime     time.Duration // default DefaultLifetime
}

// Console serves the console's pages.
type Console struct {
	cfg      Config
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
	// failures throttles failed sign-ins by client (throttle.go).
	failures *throttle
}

// New returns the console, or an error if a dependency is missing.
func New(cfg Config) (*Console, error) {
	if cfg.Keys == nil || cfg.Owners == nil || cfg.Ledger == nil || cfg.Plans == nil || cfg.Authenticate == nil {
		return nil, errors.New("console: Keys, Owners, Ledger, Plans and Authenticate are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Console{cfg: cfg, sessions: newSessions(cfg.Idle, cfg.Lifetime), pages: map[string]*template.Template{}, failures: newThrottle()}
	if err := c.parse(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

func (c *Console) parse() error {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return err
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return err
		}
		c.pages[name] = t
	}
	return nil
}

var funcs = template.FuncMap{
	"time": func(t any) string {
		switch t := t.(type) {
		case time.Time:
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if t == nil {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		}
		return ""
	},
}

func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /console", c.page(tokens.None, c.home))
	m.HandleFunc("GET /console/static/console.css", c.stylesheet)
	m.HandleFunc("GET /console/signin", c.signinForm)
	m.HandleFunc("POST /console/signin", c.signin)
	m.HandleFunc("POST /console/signout", c.action(tokens.None, c.signout))
	m.HandleFunc("GET /console/owners", c.page(tokens.OwnersRead, c.ownersPage))
	m.HandleFunc("GET /console/owners/{owner}", c.page(tokens.OwnersRead, c.ownerPage))
	m.HandleFunc("GET /console/keys", c.page(tokens.KeysRead, c.keysPage))
	m.HandleFunc("POST /console/keys", c.action(tokens.KeysCreate, c.createKey))
	m.HandleFunc("GET /console/keys/{id}", c.page(tokens.KeysRead, c.keyPage))
	m.HandleFunc("POST /console/keys/{id}/disable", c.action(tokens.KeysDisable, c.disableKey))
	m.HandleFunc("POST /console/keys/{id}/enable", c.action(tokens.KeysDisable, c.enableKey))
	m.HandleFunc("POST /console/keys/{id}/rotate", c.action(tokens.KeysRotate, c.rotateKey))
	m.HandleFunc("GET /console/keys/{id}/revoke", c.page(tokens.KeysRevoke, c.revokeForm))
	m.HandleFunc("POST /console/keys/{id}/revoke", c.action(tokens.KeysRevoke, c.revokeKey))
	m.HandleFunc("GET /console/audit", c.page(tokens.AuditRead, c.auditPage))
	m.HandleFunc("GET /console/dead-letters", c.page(tokens.UsageRead, c.deadLettersPage))
	m.HandleFunc("GET /console/sweep", c.page(tokens.SweepRun, c.sweepPage))
	m.HandleFunc("POST /console/sweep", c.action(tokens.SweepRun, c.runSweep))
	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, errs.E(errs.NotFound, "no console page at %s %s", r.Method, r.URL.Path))
	})
	c.mux = m
}

// ServeHTTP serves the console. Every answer is private and not cached,
// carries a strict Content-Security-Policy (no script at all) and may not
// be framed.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) now() time.Time { return c.cfg.Clock.Now() }

func (c *Console) stylesheet(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("static/console.css")
	if err != nil {
		http.Error(w, "missing stylesheet", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "private, max-age=3600")
	w.Write(b)
}

// request is what a page handler knows of its request.
type request struct {
	id      string // the session's id
	session *session
	caller  tokens.Caller
}

// handler is a page or action; it returns the error to show.
type handler func(w http.ResponseWriter, r *http.Request, q *request) error

// page wraps a GET page: a signed-in session whose credential holds perm.
func (c *Console) page(perm tokens.Permission, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, ok := c.signedIn(w, r)
		if !ok {
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		c.run(w, r, q, perm, h)
	}
}

// action wraps a POST: as page, and first the CSRF checks, which answer
// 403 whatever else is wrong.
func (c *Console) action(perm tokens.Permission, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, formLimit)
		if err := r.ParseForm(); err != nil {
			c.fail(w, r, nil, errs.E(errs.Invalid, "the form could not be read (at most %d bytes)", formLimit))
			return
		}
		ss, ok := c.sessions.get(cookieValue(r, sessionCookie), c.now())
		if !sameOrigin(r) || !ok || !equalToken(r.PostForm.Get("csrf"), ss.csrf) {
			c.fail(w, r, nil, errs.E(errs.PermissionDenied, "this form's CSRF token is missing or wrong, or it was sent from another site: reload the page and try again"))
			return
		}
		q, ok := c.signedIn(w, r)
		if !ok {
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		c.run(w, r, q, perm, h)
	}
}

func (c *Console) run(w http.ResponseWriter, r *http.Request, q *request, perm tokens.Permission, h handler) {
	if perm != tokens.None && !q.caller.Can(perm) {
		c.fail(w, r, q, errs.E(errs.PermissionDenied, "this credential lacks the %s permission, which this page needs", perm))
		return
	}
	if err := h(w, r, q); err != nil {
		c.fail(w, r, q, err)
	}
}

// signedIn finds the request's session and authenticates its credential
// again; a session whose credential no longer authenticates ends.
func (c *Console) signedIn(w http.ResponseWriter, r *http.Request) (*request, bool) {
	id := cookieValue(r, sessionCookie)
	ss, ok := c.sessions.get(id, c.now())
	if !ok {
		return nil, false
	}
	caller, err := c.cfg.Authenticate(r.Context(), ss.credential)
	if err != nil {
		c.sessions.delete(id)
		setCookie(w, r, sessionCookie, "", -1)
		return nil, false
	}
	return &request{id: id, session: ss, caller: caller}, true
}

// view is what every page's template gets.
type view struct {
	Title  string
	Caller tokens.Caller
	CSRF   string
	Nav    []navItem
	Notice string
	Data   any
}

type navItem struct {
	Href, Label string
	Current     bool
}

// nav is the pages the caller may open.
func nav(caller tokens.Caller, path string) []navItem {
	var out []navItem
	add := func(href, label string, ok bool) {
		if ok {
			out = append(out, navItem{href, label, path == href || strings.HasPrefix(path, href+"/")})
		}
	}
	add("/console/owners", "Owners", caller.Can(tokens.OwnersRead))
	add("/console/keys", "Keys", caller.Can(tokens.KeysRead))
	add("/console/audit", "Audit trail", caller.Can(tokens.AuditRead))
	add("/console/sweep", "Sweep", caller.Can(tokens.SweepRun) && caller.Owner == "")
	add("/console/dead-letters", "Dead letters", caller.Can(tokens.UsageRead) && caller.Owner == "")
	return out
}

// render writes page name with data.
func (c *Console) render(w http.ResponseWriter, r *http.Request, q *request, status int, name, title string, data any) {
	t, ok := c.pages[name]
	if !ok {
		c.cfg.Logger.ErrorContext(r.Context(), "console: no template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v := view{Title: title, Data: data}
	if q != nil {
		v.Caller, v.CSRF, v.Nav = q.caller, q.session.csrf, nav(q.caller, r.URL.Path)
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", v); err != nil {
		c.cfg.Logger.ErrorContext(r.Context(), "console: rendering failed", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

// fail shows err on the error page, with the status the API gives its
// kind; internal errors are logged and shown without detail.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, q *request, err error) {
	kind := errs.KindOf(err)
	msg := "internal error"
	if e, ok := errs.As(err); ok && kind != errs.Internal {
		msg = e.Msg
	}
	if kind == errs.Internal || kind == errs.Unavailable {
		c.cfg.Logger.ErrorContext(r.Context(), "console request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		if kind == errs.Unavailable && msg == "" {
			msg = "service temporarily unavailable; retry later"
		}
	}
	c.render(w, r, q, statusOf(kind), "error", "Error", struct {
		Status  int
		Message string
	}{statusOf(kind), msg})
}

func statusOf(k errs.Kind) int {
	switch k {
	case errs.Invalid:
		return http.StatusBadRequest
	case errs.Unauthenticated:
		return http.StatusUnauthorized
	case errs.PermissionDenied:
		return http.StatusForbidden
	case errs.NotFound:
		return http.StatusNotFound
	case errs.Exists, errs.Conflict, errs.FailedPrecondition:
		return http.StatusConflict
	case errs.TooLarge:
		return http.StatusRequestEntityTooLarge
	case errs.Unprocessable:
		return http.StatusUnprocessableEntity
	case errs.Exhausted:
		return http.StatusTooManyRequests
	case errs.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// home sends the operator to the first page it may open.
func (c *Console) home(w http.ResponseWriter, r *http.Request, q *request) error {
	items := nav(q.caller, r.URL.Path)
	if len(items) == 0 {
		return errs.E(errs.PermissionDenied, "this credential holds no permission the console shows")
	}
	http.Redirect(w, r, items[0].Href, http.StatusSeeOther)
	return nil
}

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.signedIn(w, r); ok {
		http.Redirect(w, r, Path, http.StatusSeeOther)
		return
	}
	c.showSignin(w, r, http.StatusOK, "")
}

func (c *Console) showSignin(w http.ResponseWriter, r *http.Request, status int, problem string) {
	token := randomToken()
	setCookie(w, r, signinCookie, token, 600)
	c.render(w, r, nil, status, "signin", "Sign in", struct{ CSRF, Problem string }{token, problem})
}

// signin checks the credential and starts a session. The form's CSRF
// token is the sign-in cookie's (double submit), so another site cannot
// sign a browser in as someone else.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, formLimit)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, nil, errs.E(errs.Invalid, "the form could not be read (at most %d bytes)", formLimit))
		return
	}
	if !sameOrigin(r) || !equalToken(r.PostForm.Get("csrf"), cookieValue(r, signinCookie)) {
		c.fail(w, r, nil, errs.E(errs.PermissionDenied, "the sign-in form's CSRF token is missing or wrong: reload the sign-in page and try again"))
		return
	}
	client := clientOf(r)
	if wait, ok := c.failures.allowed(client, c.now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		c.showSignin(w, r, http.StatusTooManyRequests, "Too many failed sign-ins from your address; wait a minute and try again.")
		return
	}
	credential := strings.TrimSpace(r.PostForm.Get("credential"))
	if credential == "" {
		c.showSignin(w, r, http.StatusBadRequest, "Enter the admin token or a caller token.")
		return
	}
	caller, err := c.cfg.Authenticate(r.Context(), credential)
	if err != nil {
		if errs.Is(err, errs.Unauthenticated) || errs.Is(err, errs.PermissionDenied) {
			c.failures.failed(client, c.now())
			c.cfg.Logger.WarnContext(r.Context(), "console sign-in refused", "client", client)
			c.showSignin(w, r, http.StatusUnauthorized, "That credential was not accepted.")
			return
		}
		c.fail(w, r, nil, err)
		return
	}
	if len(nav(caller, "")) == 0 {
		c.showSignin(w, r, http.StatusForbidden, "That credential holds no permission the console shows.")
		return
	}
	id, _, ok := c.sessions.create(credential, c.now())
	if !ok {
		c.fail(w, r, nil, errs.E(errs.Unavailable, "too many console sessions are open; retry later"))
		return
	}
	setCookie(w, r, signinCookie, "", -1)
	setCookie(w, r, sessionCookie, id, int(c.sessions.lifetime/time.Second))
	c.cfg.Logger.InfoContext(r.Context(), "console sign-in", "actor", caller.Actor)
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, q *request) error {
	c.sessions.delete(q.id)
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
	return nil
}
