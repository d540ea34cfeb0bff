package notify

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

// fakeResolver answers from a map; unknown names do not exist. A name
// mapped to nil fails as a temporary DNS error.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ips, ok := f[strings.TrimSuffix(host, ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if ips == nil {
		return nil, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
	}
	var out []netip.Addr
	for _, s := range ips {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

func TestRefusalNamesEveryNonPublicRange(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		refused bool
	}{
		{"127.0.0.1", true},
		{"127.255.255.254", true},
		{"10.1.2.3", true},
		{"172.16.0.1", true},
		{"172.31.255.255", true},
		{"192.168.1.1", true},
		{"169.254.169.254", true}, // the metadata server
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"224.0.0.1", true},
		{"239.255.255.250", true},
		{"255.255.255.255", true},
		{"240.0.0.1", true},
		{"198.18.0.1", true},
		{"192.0.0.8", true},
		{"::1", true},
		{"::", true},
		{"fd00::1", true},
		{"fc00::1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"ff02::1", true},
		{"fec0::1", true},
		{"::ffff:127.0.0.1", true},                     // IPv4-mapped loopback
		{"::ffff:169.254.169.254", true},               // IPv4-mapped metadata server
		{"64:ff9b::a9fe:a9fe", true},                   // NAT64 of 169.254.169.254
		{"64:ff9b::808:808", false},                    // NAT64 of 8.8.8.8
		{"2002:7f00:1::1", true},                       // 6to4 of 127.0.0.1
		{"2002:808:808::1", false},                     // 6to4 of 8.8.8.8
		{"2001::1", true},                              // Teredo
		{"::127.0.0.1", true},                          // IPv4-compatible
		{"8.8.8.8", false},                             // public
		{"93.184.216.34", false},                       // public
		{"100.63.255.255", false},                      // just below CGNAT
		{"100.128.0.0", false},                         // just above CGNAT
		{"172.32.0.1", false},                          // just above 172.16/12
		{"2001:4860:4860::8888", false},                // public IPv6
		{"2606:4700:4700::1111", false},                // public IPv6
		{"fbff:ffff:ffff::1", false},                   // just below fc00::/7 (not allocated, but not internal)
		{"2001:db8::1", true},                          // documentation
		{"203.0.113.9", true},                          // documentation
		{"::ffff:8.8.8.8", false},                      // IPv4-mapped public
		{"64:ff9b:1::a00:1", true},                     // local-use NAT64
		{"100::1", true},                               // discard-only
		{"169.253.255.255", false},                     // just below link-local
		{"169.255.0.0", false},                         // just above link-local
		{"11.0.0.0", false},                            // just above 10/8
		{"9.255.255.255", false},                       // just below 10/8
		{"126.255.255.255", false},                     // just below loopback
		{"128.0.0.0", false},                           // just above loopback
		{"223.255.255.255", false},                     // just below multicast
		{"192.169.0.0", false},                         // just above 192.168/16
		{"192.167.255.255", false},                     // just below 192.168/16
		{"fe7f:ffff:ffff::1", false},                   // below fe80::/10 (unallocated)
		{"2002:a00:1::1", true},                        // 6to4 of 10.0.0.1
		{"::ffff:100.64.0.1", true},                    // IPv4-mapped CGNAT
		{"::ffff:10.0.0.1", true},                      // IPv4-mapped private
		{"64:ff9b::7f00:1", true},                      // NAT64 of 127.0.0.1
		{"64:ff9b::a00:1", true},                       // NAT64 of 10.0.0.1
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", true}, // Teredo
	} {
		got := Refusal(netip.MustParseAddr(tc.addr))
		if (got != "") != tc.refused {
			t.Errorf("Refusal(%s) = %q; want refused=%v", tc.addr, got, tc.refused)
		}
	}
}

var testResolver = fakeResolver{
	"loopback.test": {"127.0.0.1"},
	"ten.test":      {"10.1.2.3"},
	"metadata.test": {"169.254.169.254"},
	"v6loop.test":   {"::1"},
	"ula.test":      {"fd00::1"},
	"cgnat.test":    {"100.64.1.1"},
	"mixed.test":    {"8.8.8.8", "10.0.0.1"},
	"public.test":   {"8.8.8.8", "2001:4860:4860::8888"},
	"flaky.test":    nil,
}

func TestCheckURLRefusesHostsThatResolveToNonPublicAddresses(t *testing.T) {
	g := &Guard{Resolver: testResolver}
	for _, raw := range []string{
		"https://loopback.test/hook",
		"https://ten.test/hook",
		"https://metadata.test/computeMetadata/v1/",
		"https://v6loop.test/hook",
		"https://ula.test/hook",
		"https://cgnat.test/hook",
		"https://mixed.test/hook", // one internal answer is enough to refuse
		"https://127.0.0.1/hook",
		"https://127.0.0.1:8443/hook",
		"https://10.0.0.1/hook",
		"https://169.254.169.254/latest/meta-data/",
		"https://[::1]/hook",
		"https://[fd00::1]/hook",
		"https://100.64.0.1/hook",
		"https://[::ffff:127.0.0.1]/hook",
		"https://0.0.0.0/hook",
		"https://[::]/hook",
	} {
		t.Run(raw, func(t *testing.T) {
			_, err := g.CheckURL(t.Context(), raw)
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("CheckURL(%q): got %v, want kind Invalid", raw, err)
			}
			if !strings.Contains(err.Error(), "public addresses") {
				t.Errorf("CheckURL(%q): message %q does not say what to fix", raw, err)
			}
		})
	}
}

func TestCheckURLAcceptsPublicAddresses(t *testing.T) {
	g := &Guard{Resolver: testResolver}
	// Validation only: nothing here is dialled (there is no route out).
	for _, raw := range []string{
		"https://8.8.8.8/hook",
		"https://[2001:4860:4860::8888]/hook",
		"https://public.test/keyplane?team=ml",
		"https://public.test:8443/keyplane",
		"https://public.test./keyplane",
	} {
		if _, err := g.CheckURL(t.Context(), raw); err != nil {
			t.Errorf("CheckURL(%q): got %v, want nil", raw, err)
		}
	}
}

func TestCheckURLSyntax(t *testing.T) {
	g := &Guard{Resolver: testResolver}
	for _, tc := range []struct {
		raw, wantMsg string
	}{
		{"", "url is required"},
		{"http://public.test/hook", "https://"},
		{"ftp://public.test/hook", "https://"},
		{"public.test/hook", "https://"},
		{"https:///hook", "absolute with a host"},
		{"https:public.test", "absolute with a host"},
		{"https://user:pass@public.test/hook", "user name or password"},
		{"https://user@public.test/hook", "user name or password"},
		{"https://public.test/hook#frag", "#fragment"},
		{"https://public.test:0/hook", "port"},
		{"https://public.test:99999/hook", "port"},
		{"https://[fe80::1%25eth0]/hook", "zone"},
		{"https://bad_host!.test/hook", "valid host name"},
		{"https://exämple.test/hook", "xn--"},
		{"https://-bad.test/hook", "valid host name"},
		{"https://nowhere.test/hook", "does not exist"},
		{"https://public.test/" + strings.Repeat("a", MaxURLLen), "at most 2048"},
		{"https://public.test/\x7f", "not a valid URL"},
	} {
		_, err := g.CheckURL(t.Context(), tc.raw)
		if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("CheckURL(%.60q): got %v, want Invalid saying %q", tc.raw, err, tc.wantMsg)
			continue
		}
		if e, _ := errs.As(err); len(e.Details) != 1 || e.Details[0].Field != "url" {
			t.Errorf("CheckURL(%.60q): details %+v, want one about field url", tc.raw, e.Details)
		}
	}
}

func TestCheckURLTemporaryDNSFailureIsUnavailable(t *testing.T) {
	g := &Guard{Resolver: testResolver}
	if _, err := g.CheckURL(t.Context(), "https://flaky.test/hook"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("CheckURL with a failing DNS server: got %v, want kind Unavailable", err)
	}
}

func TestAllowPrivateAdmitsLocalAddressesAndHTTP(t *testing.T) {
	g := &Guard{AllowPrivate: true, Resolver: testResolver}
	for _, raw := range []string{
		"http://127.0.0.1:8080/hook",
		"https://loopback.test/hook",
		"http://ten.test/hook",
		"https://[::1]/hook",
	} {
		if _, err := g.CheckURL(t.Context(), raw); err != nil {
			t.Errorf("CheckURL(%q) with AllowPrivate: got %v, want nil", raw, err)
		}
	}
	if _, err := g.CheckURL(t.Context(), "ftp://127.0.0.1/"); !errs.Is(err, errs.Invalid) {
		t.Errorf("CheckURL(ftp://…) with AllowPrivate: got %v, want Invalid", err)
	}
}

// newReceiver returns a server on 127.0.0.1 that counts its requests.
func newReceiver(t *testing.T, status int) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if status == http.StatusFound {
			http.Redirect(w, r, "/elsewhere", status)
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestClientDialsOnlyVettedAddresses is the DNS-rebinding defence: the
// name passed validation, but when the client connects it resolves to a
// loopback address, and the connection is refused before it is made.
func TestClientDialsOnlyVettedAddresses(t *testing.T) {
	srv, hits := newReceiver(t, http.StatusOK)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	res := fakeResolver{"rebind.test": {"8.8.8.8"}}
	g := &Guard{Resolver: res}
	if _, err := g.CheckURL(t.Context(), "https://rebind.test/hook"); err != nil {
		t.Fatalf("CheckURL while the name is public: %v", err)
	}
	res["rebind.test"] = []string{"127.0.0.1"} // the attacker's DNS changes its answer
	c := g.Client(DefaultTimeout)
	for _, raw := range []string{
		"http://rebind.test:" + strconv.Itoa(port) + "/hook",
		"http://127.0.0.1:" + strconv.Itoa(port) + "/hook",
	} {
		resp, err := c.Get(raw)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s: got a response, want the connection refused", raw)
		}
		var refused *refusedError
		if !errors.As(err, &refused) {
			t.Errorf("GET %s: got %v, want a refusal", raw, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback receiver got %d requests, want 0", n)
	}
}

// TestClientUsesTheGuardsResolver shows that the connection goes to the
// address the guard resolved: "receiver.test" exists only in the fake
// resolver.
func TestClientUsesTheGuardsResolver(t *testing.T) {
	srv, hits := newReceiver(t, http.StatusNoContent)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	g := &Guard{AllowPrivate: true, Resolver: fakeResolver{"receiver.test": {"127.0.0.1"}}}
	resp, err := g.Client(DefaultTimeout).Post("http://receiver.test:"+strconv.Itoa(port)+"/hook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || hits.Load() != 1 {
		t.Errorf("got status %d and %d requests, want 204 and 1", resp.StatusCode, hits.Load())
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	var followed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Add(1)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	g := &Guard{AllowPrivate: true}
	resp, err := g.Client(DefaultTimeout).Post(srv.URL+"/hook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || followed.Load() != 0 {
		t.Errorf("got status %d with %d requests to the target, want 307 and 0", resp.StatusCode, followed.Load())
	}
}

func TestClientIgnoresProxyEnvironment(t *testing.T) {
	proxy, proxied := newReceiver(t, http.StatusOK)
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("HTTPS_PROXY", proxy.URL)
	srv, hits := newReceiver(t, http.StatusOK)
	u, _ := url.Parse(srv.URL)
	g := &Guard{AllowPrivate: true, Resolver: fakeResolver{"receiver.test": {"127.0.0.1"}}}
	resp, err := g.Client(DefaultTimeout).Get("http://receiver.test:" + u.Port() + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if proxied.Load() != 0 || hits.Load() != 1 {
		t.Errorf("got %d proxied and %d direct requests, want 0 and 1", proxied.Load(), hits.Load())
	}
}

// hangingResolver answers no lookup: it waits until the lookup's context
// ends, as a resolver does for a name whose servers do not answer.
type hangingResolver struct{}

func (hangingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, &net.DNSError{Err: ctx.Err().Error(), IsTimeout: true}
}

// TestCheckURLBoundsTheDNSLookup: a host whose lookup hangs is refused
// after CheckTimeout with a 400 saying what was checked, instead of
// holding the caller for the resolver's own timeouts.
func TestCheckURLBoundsTheDNSLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Guard{Resolver: hangingResolver{}}
		start := time.Now()
		_, err := g.CheckURL(t.Context(), "https://hangs.example/hook")
		if waited := time.Since(start); waited != DefaultCheckTimeout {
			t.Errorf("CheckURL waited %s, want %s", waited, DefaultCheckTimeout)
		}
		if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), `"hangs.example" did not resolve within 2s`) || !strings.Contains(err.Error(), "DNS lookup") {
			t.Errorf("CheckURL = %v, want Invalid saying the DNS lookup of hangs.example did not finish within 2s", err)
		}
	})
}
