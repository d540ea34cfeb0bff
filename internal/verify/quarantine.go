package verify

import (
	"net/netip"
	"slices"
	"strings"
)

// ipList is the IPs of a key's leak quarantine (store.Quarantine), up to
// keys.MaxQuarantineIPs of them: single addresses, sorted for a binary
// search, and prefixes (a key's own allowed_ips, at most
// restrict.MaxEntries), scanned. An entry that does not parse is dropped,
// which can only narrow what the key may be used from.
type ipList struct {
	addrs    []netip.Addr
	prefixes []netip.Prefix
}

func newIPList(ips []string) *ipList {
	l := &ipList{}
	for _, v := range ips {
		if strings.Contains(v, "/") {
			if p, err := netip.ParsePrefix(v); err == nil {
				l.prefixes = append(l.prefixes, p.Masked())
			}
			continue
		}
		if a, err := netip.ParseAddr(v); err == nil {
			l.addrs = append(l.addrs, a.Unmap())
		}
	}
	slices.SortFunc(l.addrs, netip.Addr.Compare)
	return l
}

// allows reports whether ip is one of l's addresses or in one of its
// prefixes; an empty or malformed ip is not.
func (l *ipList) allows(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	if _, ok := slices.BinarySearchFunc(l.addrs, a, netip.Addr.Compare); ok {
		return true
	}
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
