// Package restrict parses and evaluates a key's usage restrictions: IP
// allow-lists (IPv4 and IPv6 CIDRs or single addresses) and HTTP referrer
// patterns (exact hosts, "*.example.com" wildcards, each with an optional
// path prefix). It does no I/O.
package restrict

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// MaxEntries bounds each list so that a check has a bounded cost.
const MaxEntries = 100

// Set is a parsed, normalised set of restrictions. The zero Set allows
// everything.
type Set struct {
	ips       []netip.Prefix
	referrers []referrer
}

type referrer struct {
	host     string // lowercase; without the "*." of a wildcard
	wildcard bool   // matches strict subdomains of host
	path     string // "" or a prefix starting with "/"
}

// Parse validates ips and referrers and returns them compiled, plus their
// normalised text forms (a bare address becomes a /32 or /128 prefix,
// hosts are lowercased).
func Parse(ips, referrers []string) (s *Set, normIPs, normRefs []string, err error) {
	if len(ips) > MaxEntries {
		return nil, nil, nil, fmt.Errorf("allowed_ips: %d entries; at most %d", len(ips), MaxEntries)
	}
	if len(referrers) > MaxEntries {
		return nil, nil, nil, fmt.Errorf("allowed_referrers: %d entries; at most %d", len(referrers), MaxEntries)
	}
	s = &Set{}
	for i, v := range ips {
		p, err := parseIP(v)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("allowed_ips[%d]: %q is not an IP address or CIDR prefix", i, v)
		}
		s.ips = append(s.ips, p)
		normIPs = append(normIPs, p.String())
	}
	for i, v := range referrers {
		r, err := parseReferrer(v)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("allowed_referrers[%d]: %w", i, err)
		}
		s.referrers = append(s.referrers, r)
		normRefs = append(normRefs, r.String())
	}
	return s, normIPs, normRefs, nil
}

func parseIP(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseReferrer(v string) (referrer, error) {
	bad := fmt.Errorf("%q must look like example.com, *.example.com or example.com/path", v)
	host, path, _ := strings.Cut(v, "/")
	if strings.Contains(v, "/") {
		path = "/" + path
	}
	r := referrer{path: path}
	if strings.HasPrefix(host, "*.") {
		r.wildcard = true
		host = host[2:]
	}
	host = strings.ToLower(host)
	if host == "" || len(host) > 253 || strings.Contains(path, "*") || strings.ContainsAny(path, " ?#") {
		return r, bad
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return r, bad
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return r, bad
			}
		}
	}
	r.host = host
	return r, nil
}

func (r referrer) String() string {
	s := r.host + r.path
	if r.wildcard {
		s = "*." + s
	}
	return s
}

// HasIPs reports whether the set restricts client IPs.
func (s *Set) HasIPs() bool { return s != nil && len(s.ips) > 0 }

// HasReferrers reports whether the set restricts referrers.
func (s *Set) HasReferrers() bool { return s != nil && len(s.referrers) > 0 }

// AllowsIP reports whether ip is allowed. With no IP restriction every
// address is; with one, an empty or unparsable ip is refused.
func (s *Set) AllowsIP(ip string) bool {
	if !s.HasIPs() {
		return true
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.ips {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// AllowsReferrer reports whether a request's Referer value is allowed. It
// accepts a full URL ("https://app.example.com/x") or a bare host and path.
// With no referrer restriction every value is; with one, an empty value is
// refused.
func (s *Set) AllowsReferrer(ref string) bool {
	if !s.HasReferrers() {
		return true
	}
	host, path := splitReferrer(ref)
	if host == "" {
		return false
	}
	for _, r := range s.referrers {
		if r.matches(host, path) {
			return true
		}
	}
	return false
}

func splitReferrer(ref string) (host, path string) {
	if strings.Contains(ref, "://") {
		u, err := url.Parse(ref)
		if err != nil {
			return "", ""
		}
		return strings.ToLower(u.Hostname()), u.EscapedPath()
	}
	host, path, found := strings.Cut(ref, "/")
	if found {
		path = "/" + path
	}
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	return strings.ToLower(host), path
}

func (r referrer) matches(host, path string) bool {
	if r.wildcard {
		if !strings.HasSuffix(host, "."+r.host) {
			return false
		}
	} else if host != r.host {
		return false
	}
	return r.path == "" || strings.HasPrefix(path, r.path)
}
