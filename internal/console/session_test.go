package console

import (
	"crypto/tls"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSessionsExpireWhenIdleAndAtTheirLifetime(t *testing.T) {
	s := newSessions(time.Minute, time.Hour)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	id, _, ok := s.create("cred", t0)
	if !ok {
		t.Fatal("create refused")
	}
	if _, ok := s.get(id, t0.Add(59*time.Second)); !ok {
		t.Fatal("a session used within its idle time ended")
	}
	for at := t0; at.Before(t0.Add(59 * time.Minute)); at = at.Add(50 * time.Second) {
		if _, ok := s.get(id, at); !ok {
			t.Fatalf("a session in use ended at %v", at)
		}
	}
	if _, ok := s.get(id, t0.Add(time.Hour)); ok {
		t.Error("a session outlived its lifetime")
	}
	id2, _, _ := s.create("cred", t0)
	if _, ok := s.get(id2, t0.Add(time.Minute)); ok {
		t.Error("an idle session did not end")
	}
	if _, ok := s.get("unknown", t0); ok {
		t.Error("an unknown id has a session")
	}
}

func TestSecureCookiesButOnLoopbackHTTP(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1:8080": false, "localhost:8080": false, "[::1]:8080": false,
		"keys.example.com": true, "10.0.0.5:8080": true} {
		r := httptest.NewRequest("GET", "http://"+host+"/console", nil)
		if got := secureCookies(r); got != want {
			t.Errorf("secureCookies(http://%s) = %v, want %v", host, got, want)
		}
	}
	r := httptest.NewRequest("GET", "https://127.0.0.1/console", nil)
	r.TLS = &tls.ConnectionState{}
	if !secureCookies(r) {
		t.Error("cookies over TLS are not Secure")
	}
}

func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		origin, site string
		want         bool
	}{{"", "", true}, {"http://h:1", "same-origin", true}, {"http://h:1", "", true}, {"", "same-origin", true},
		{"http://evil:1", "", false}, {"null", "", false}, {"", "cross-site", false}, {"", "same-site", false}, {"http://h:1", "none", false}} {
		r := httptest.NewRequest("POST", "http://h:1/console/keys", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.site != "" {
			r.Header.Set("Sec-Fetch-Site", c.site)
		}
		if got := sameOrigin(r); got != c.want {
			t.Errorf("Origin %q, Sec-Fetch-Site %q: %v, want %v", c.origin, c.site, got, c.want)
		}
	}
}
