package portal

import (
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"strings"

	"github.com/keyplane/keyplane/internal/errs"
)

//go:embed templates/*.html static/*
var assets embed.FS

var pages = parsePages()

// parsePages parses each page template with the layout.
func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{"chart": barChart, "join": strings.Join}
	names, _ := fs.Glob(assets, "templates/*.html")
	out := map[string]*template.Template{}
	for _, n := range names {
		if n == "templates/layout.html" {
			continue
		}
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", n))
		out[strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")] = t
	}
	return out
}

// maxForm bounds a form's body.
const maxForm = 16 << 10

// Handler serves the portal's pages under /portal/.
func (p *Portal) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /portal/static/", http.StripPrefix("/portal/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /portal/exchange", p.exchange)
	mux.Handle("GET /portal/{$}", p.page("", false, p.home))
	mux.Handle("GET /portal/keys/new", p.page(PermKeysCreate, false, p.newKeyForm))
	mux.Handle("POST /portal/keys", p.page(PermKeysCreate, true, p.createKey))
	mux.Handle("GET /portal/keys/{id}", p.page(PermKeysRead, false, p.keyPage))
	mux.Handle("POST /portal/keys/{id}/roll", p.page(PermKeysRoll, true, p.rollKey))
	mux.Handle("GET /portal/keys/{id}/revoke", p.page(PermKeysRevoke, false, p.confirmRevoke))
	mux.Handle("POST /portal/keys/{id}/revoke", p.page(PermKeysRevoke, true, p.revokeKey))
	mux.Handle("POST /portal/logout", p.page("", true, p.logout))
	mux.HandleFunc("/portal/", func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, nil, errs.E(errs.NotFound, "there is no such page in the portal"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer Chromium sends
		// "Origin: null" on the portal's own form posts, which checkCSRF refuses.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	Session *session
	CSRF    string
	Title   string
	Data    any
}

func (v view) Can(perm string) bool { return v.Session != nil && v.Session.Perms.has(perm) }

// page authenticates the session, checks it holds perm ("" for none)
// and, for a state-changing request (post), its CSRF token and origin,
// then calls fn; fn's error becomes an error page.
func (p *Portal) page(perm string, post bool, fn func(w http.ResponseWriter, r *http.Request, s *session) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s *session
		if c, err := r.Cookie(CookieName); err == nil {
			s, _ = p.decode(c.Value, p.now())
		}
		if s == nil {
			p.fail(w, r, nil, errs.E(errs.Unauthenticated, "your portal session is missing or has expired: open the portal again from your account"))
			return
		}
		if post {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				p.fail(w, r, s, errs.E(errs.Invalid, "the form could not be read"))
				return
			}
			if !p.checkCSRF(r, s) {
				p.fail(w, r, s, errs.E(errs.PermissionDenied, "this form did not come from your portal session (missing or wrong CSRF token, or another site): reload the page and try again"))
				return
			}
		}
		if perm != "" && !s.Perms.has(perm) {
			p.fail(w, r, s, errs.E(errs.PermissionDenied, "this portal session may not do that: it lacks the %s permission", perm))
			return
		}
		if err := fn(w, r, s); err != nil {
			p.fail(w, r, s, err)
		}
	})
}

// render writes page name with status.
func (p *Portal) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, title string, data any) {
	t, ok := pages[name]
	if !ok {
		p.logger().Error("portal: no such page template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v := view{Session: s, Title: title, Data: data}
	if s != nil {
		v.CSRF = p.csrfToken(s)
	}
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		p.logger().Error("portal: render", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

// fail renders err as an error page with its status; internal text is
// logged, never shown.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	kind := errs.KindOf(err)
	msg := "Something went wrong on our side. Try again later."
	switch kind {
	case errs.Internal, errs.Unavailable:
		p.logger().Error("portal: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		if kind == errs.Unavailable {
			msg = "The service is temporarily unavailable. Try again later."
		}
	default:
		if e, ok := errs.As(err); ok && e.Msg != "" {
			msg = e.Msg
		}
	}
	p.render(w, r, errs.HTTPStatus(kind), "error", s, "Error", msg)
}
