package restrict

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseNormalises(t *testing.T) {
	_, ips, refs, err := Parse([]string{"203.0.113.7", "2001:db8::/32", "10.1.2.3/8", "::ffff:1.2.3.4"}, []string{"*.Example.com", "api.example.com/v1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(ips, " "), "203.0.113.7/32 2001:db8::/32 10.0.0.0/8 1.2.3.4/32"; got != want {
		t.Errorf("ips = %s, want %s", got, want)
	}
	if got, want := strings.Join(refs, " "), "*.example.com api.example.com/v1"; got != want {
		t.Errorf("referrers = %s, want %s", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ ips, refs []string }{
		{ips: []string{"300.1.1.1"}},
		{ips: []string{"1.2.3.4/33"}},
		{ips: []string{"example.com"}},
		{refs: []string{"https://example.com"}},
		{refs: []string{"*"}},
		{refs: []string{"exa mple.com"}},
		{refs: []string{"example.com/a*b"}},
		{refs: []string{"-bad.com"}},
		{refs: []string{""}},
	} {
		if _, _, _, err := Parse(tc.ips, tc.refs); err == nil {
			t.Errorf("Parse(%q, %q) accepted invalid input", tc.ips, tc.refs)
		}
	}
}

// TestEachListHoldsAtMostMaxEntries fills each list with distinct valid
// entries, so that only the length check can refuse it: MaxEntries are
// accepted and MaxEntries+1 refused with an error that names the list.
func TestEachListHoldsAtMostMaxEntries(t *testing.T) {
	entries := func(n int, entry func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = entry(i)
		}
		return out
	}
	ip := func(i int) string { return fmt.Sprintf("10.0.%d.%d", i/256, i%256) }
	host := func(i int) string { return fmt.Sprintf("h%d.example.com", i) }
	for _, tt := range []struct {
		list  string
		parse func(n int) (*Set, []string, []string, error)
	}{
		{"allowed_ips", func(n int) (*Set, []string, []string, error) { return Parse(entries(n, ip), nil) }},
		{"allowed_referrers", func(n int) (*Set, []string, []string, error) { return Parse(nil, entries(n, host)) }},
	} {
		t.Run(tt.list, func(t *testing.T) {
			_, ips, refs, err := tt.parse(MaxEntries)
			if err != nil {
				t.Fatalf("%d entries: got %v, want them accepted", MaxEntries, err)
			}
			if n := len(ips) + len(refs); n != MaxEntries {
				t.Errorf("%d entries: got %d normalised, want %d", MaxEntries, n, MaxEntries)
			}
			s, _, _, err := tt.parse(MaxEntries + 1)
			want := fmt.Sprintf("%s: %d entries; at most %d", tt.list, MaxEntries+1, MaxEntries)
			if err == nil || err.Error() != want || s != nil {
				t.Errorf("%d entries: got error %v (a Set: %t), want error %q and no Set", MaxEntries+1, err, s != nil, want)
			}
		})
	}
}

func TestAllowsIP(t *testing.T) {
	s, _, _, _ := Parse([]string{"203.0.113.0/24", "2001:db8::/32"}, nil)
	for ip, want := range map[string]bool{
		"203.0.113.9": true, "203.0.114.1": false, "2001:db8::1": true, "2001:db9::1": false,
		"::ffff:203.0.113.9": true, "": false, "garbage": false,
	} {
		if got := s.AllowsIP(ip); got != want {
			t.Errorf("AllowsIP(%q) = %v, want %v", ip, got, want)
		}
	}
	var none *Set
	if !none.AllowsIP("") {
		t.Error("no restriction refused an address")
	}
}

func TestAllowsReferrer(t *testing.T) {
	s, _, _, _ := Parse(nil, []string{"*.example.com", "shop.test/checkout"})
	for ref, want := range map[string]bool{
		"https://app.example.com/x":         true,
		"app.example.com":                   true,
		"https://a.b.example.com:8443/":     true,
		"https://example.com/":              false, // a wildcard matches subdomains only
		"https://evilexample.com/":          false,
		"https://example.com.evil.net/":     false,
		"https://shop.test/checkout/step2":  true,
		"https://shop.test/cart":            false,
		"https://SHOP.test/checkout":        true,
		"":                                  false,
		"https://user@app.example.com/path": true,
	} {
		if got := s.AllowsReferrer(ref); got != want {
			t.Errorf("AllowsReferrer(%q) = %v, want %v", ref, got, want)
		}
	}
}
