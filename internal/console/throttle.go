package console

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Failed sign-ins are throttled per client: after maxFailures within
// failureWindow, the client's sign-ins are refused (429) until the window
// that began with its first failure ends. Guessing a token (128 bits or
// more) is hopeless either way; the throttle keeps the public sign-in
// form from being a free oracle and keeps the logs readable. Clients are
// told apart by the first X-Forwarded-For address (what Cloud Run's front
// end passes on) or the connection's address; a client that forges the
// header only spreads its own attempts. At most maxClients are tracked,
// the least recent forgotten first.
const (
	maxFailures   = 10
	failureWindow = time.Minute
	maxClients    = 10_000
)

type throttle struct {
	mu      sync.Mutex
	clients *lru.Cache[string, *failures]
}

type failures struct {
	since time.Time
	n     int
}

func newThrottle() *throttle {
	c, _ := lru.New[string, *failures](maxClients)
	return &throttle{clients: c}
}

// allowed reports whether client may try to sign in at now, and if not,
// how long it must wait.
func (t *throttle) allowed(client string, now time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.clients.Get(client)
	if !ok || now.Sub(f.since) >= failureWindow || f.n < maxFailures {
		return 0, true
	}
	return f.since.Add(failureWindow).Sub(now), false
}

// failed records a failed sign-in of client at now.
func (t *throttle) failed(client string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.clients.Get(client)
	if !ok || now.Sub(f.since) >= failureWindow {
		t.clients.Add(client, &failures{since: now, n: 1})
		return
	}
	f.n++
}

// clientOf names the client of r for the throttle.
func clientOf(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		first, _, _ := strings.Cut(xff, ",")
		if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
			return ip.String()
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
