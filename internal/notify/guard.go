package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

// Resolver looks up a host's addresses; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Guard keeps webhooks away from internal networks (SSRF): a webhook URL
// must be https and every address its host resolves to must be public. It
// is applied when a webhook is set (CheckURL) and again on every delivery
// attempt (Client), whose connections go only to the addresses the guard
// resolved and vetted — never to a second, unvetted DNS answer — so that
// DNS rebinding cannot slip an internal address in between. The zero
// value is the production guard.
type Guard struct {
	// AllowPrivate admits every address and plain http:// URLs, for local
	// development and tests (KEYPLANE_WEBHOOK_ALLOW_PRIVATE=1). Never set
	// it in production: it lets anyone who may set a webhook make keyplane
	// POST into its own network.
	AllowPrivate bool
	// Resolver resolves host names. Default net.DefaultResolver.
	Resolver Resolver
	// CheckTimeout bounds CheckURL's DNS lookup, which a caller setting a
	// webhook waits for. Default DefaultCheckTimeout.
	CheckTimeout time.Duration
}

// DefaultCheckTimeout is Guard.CheckTimeout's default: a name that has not
// resolved in 2 s is refused rather than left to the resolver's own
// timeouts (5 s and more per attempt).
const DefaultCheckTimeout = 2 * time.Second

// blocked are the non-public address ranges that netip.Addr's predicates
// do not name, with what they are. IPv4-mapped, NAT64 and 6to4 IPv6
// addresses are judged by the IPv4 address they carry.
var blocked = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "a \"this network\" address (0.0.0.0/8)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT address (100.64.0.0/10)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address (192.0.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address (192.0.2.0/24)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address (198.51.100.0/24)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address (203.0.113.0/24)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved or broadcast address (240.0.0.0/4)"},
	{netip.MustParsePrefix("::/96"), "a reserved IPv4-compatible IPv6 address (::/96)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local-use NAT64 address (64:ff9b:1::/48)"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address (100::/64)"},
	{netip.MustParsePrefix("2001::/32"), "a Teredo address (2001::/32)"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address (2001:db8::/32)"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address (fec0::/10)"},
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Refusal says why addr is not a public unicast address ("" if it is), in
// words a user can act on.
func Refusal(addr netip.Addr) string {
	a := addr.WithZone("").Unmap()
	switch {
	case !a.IsValid():
		return "not an IP address"
	case a.IsUnspecified():
		return "an unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.Is6() && a.IsPrivate():
		return "a unique local IPv6 address (fc00::/7)"
	case a.IsPrivate():
		return "a private address"
	case a.IsLinkLocalUnicast():
		return "a link-local address (such as the cloud metadata server)"
	case a.IsMulticast():
		return "a multicast address"
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return Refusal(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return Refusal(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, p := range blocked {
		if p.prefix.Contains(a) {
			return p.what
		}
	}
	return ""
}

// ParseURL checks a webhook URL's syntax without resolving it: https (or
// http with AllowPrivate), an absolute URL of at most MaxURLLen bytes with
// a host, no user name or password, no fragment, a valid port. Errors are
// errs.Invalid with a message that says what to fix.
func (g *Guard) ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, invalidField("url", "url is required: the https:// address keyplane POSTs notifications to")
	}
	if len(raw) > MaxURLLen {
		return nil, invalidField("url", "url is %d bytes long; it must be at most %d", len(raw), MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalidField("url", "url is not a valid URL; write it like https://hooks.example.com/keyplane")
	}
	switch {
	case u.Scheme == "http" && g.AllowPrivate:
	case u.Scheme != "https":
		return nil, invalidField("url", "url must start with https://")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, invalidField("url", "url must be absolute with a host, like https://hooks.example.com/keyplane")
	}
	if u.User != nil {
		return nil, invalidField("url", "url must not contain a user name or password; authenticate the request by its webhook-signature instead")
	}
	if u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return nil, invalidField("url", "url must not have a #fragment; remove it")
	}
	host := u.Hostname()
	if strings.Contains(host, "%") {
		return nil, invalidField("url", "url must not name an IPv6 zone")
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return nil, invalidField("url", "url's host %q is not a valid host name; use ASCII letters, digits, '-' and '.' (internationalised names in their xn-- form)", host)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, invalidField("url", "url's port must be 1-65535")
		}
	}
	return u, nil
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// CheckURL is ParseURL followed by resolving the host and checking every
// address it resolves to. Errors: Invalid (bad syntax, a host that does
// not exist or resolves to a non-public address), Unavailable (DNS could
// not answer; retry).
func (g *Guard) CheckURL(ctx context.Context, raw string) (*url.URL, error) {
	u, err := g.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	timeout := g.CheckTimeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	lookup, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := g.resolve(lookup, u.Hostname()); err != nil {
		if ctx.Err() == nil && errors.Is(lookup.Err(), context.DeadlineExceeded) {
			return nil, invalidField("url", "url's host %q did not resolve within %s (checked: a DNS lookup of the host, before anything is saved); check the name, or retry if its DNS records are new", u.Hostname(), timeout)
		}
		var r *refusedError
		if errors.As(err, &r) {
			if r.notPublic {
				return nil, invalidField("url", "url's host %s; webhook URLs must resolve only to public addresses", r.detail)
			}
			return nil, invalidField("url", "url's host %s; check the URL", r.detail)
		}
		return nil, err
	}
	return u, nil
}

// refusedError is a host the guard will not connect to: detail says why,
// notPublic that it is because of an address it resolves to.
type refusedError struct {
	detail    string
	notPublic bool
}

func (e *refusedError) Error() string { return "webhook host refused: " + e.detail }

// resolve returns host's addresses if every one is allowed. A host that
// is an IP address is not looked up. Errors: *refusedError (wrapped in
// errs.Invalid) or errs.Unavailable.
func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if why := g.refusal(a); why != "" {
			return nil, errs.Wrap(errs.Invalid, &refusedError{"is " + why, true}, "")
		}
		return []netip.Addr{a}, nil
	}
	var r Resolver = net.DefaultResolver
	if g.Resolver != nil {
		r = g.Resolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, errs.Wrap(errs.Invalid, &refusedError{detail: fmt.Sprintf("%q does not exist in DNS", host)}, "")
		}
		return nil, errs.Wrap(errs.Unavailable, err, fmt.Sprintf("could not resolve %q; retry", host))
	}
	if len(addrs) == 0 {
		return nil, errs.Wrap(errs.Invalid, &refusedError{detail: fmt.Sprintf("%q has no addresses", host)}, "")
	}
	for _, a := range addrs {
		if why := g.refusal(a); why != "" {
			return nil, errs.Wrap(errs.Invalid, &refusedError{fmt.Sprintf("%q resolves to %s", host, why), true}, "")
		}
	}
	return addrs, nil
}

func (g *Guard) refusal(a netip.Addr) string {
	if g.AllowPrivate {
		return ""
	}
	return Refusal(a)
}

// DialContext connects to addr ("host:port") only through addresses that
// resolve checks: the host is resolved once, every answer is vetted, and
// the connection is made to a vetted IP literal, so nothing resolves the
// name again. A socket-level check (net.Dialer.Control) refuses any other
// destination as a last line of defence.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &refusedError{detail: "the dialled address " + address + " is not an IP address"}
		}
		if why := g.refusal(ap.Addr()); why != "" {
			return &refusedError{"the dialled address is " + why, true}
		}
		return nil
	}}
	var errList []error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		errList = append(errList, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errList...)
}

// Client returns an HTTP client whose connections go through DialContext,
// that uses no proxy (a proxy would connect where the guard cannot see),
// follows no redirect (a 3xx is the answer, and a failure) and gives up
// on a request after timeout.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            g.DialContext,
			ForceAttemptHTTP2:      true,
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxIdleConns:           100,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// invalidField is an errs.Invalid error about one request field.
func invalidField(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &errs.Error{Kind: errs.Invalid, Msg: msg, Details: []errs.Detail{{Field: field, Message: msg}}}
}
