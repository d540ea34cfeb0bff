package meter

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/ledger"
)

// FuzzClientIPsMessage feeds arbitrary client_ips message data through
// what the consumer does with it before the ledger: decode, then
// CleanClientIPs. It must never panic; what it accepts must be canonical
// (sorted, distinct, each IP its own netip form) and clean again to itself;
// what it refuses must be errs.Invalid, so that the consumer dead-letters
// it instead of retrying it forever.
func FuzzClientIPsMessage(f *testing.F) {
	for _, seed := range []string{
		`{"day": "2030-01-15T00:00:00Z", "ips": {"key_0123456789abcdef": ["203.0.113.1", "2001:DB8::1", "203.0.113.1"]}}`,
		`{"day": "2030-01-15T00:00:00Z", "ips": {"key_0123456789abcdef": ["::ffff:203.0.113.1", "fe80::1%eth0"]}}`,
		`{"day": "2030-01-15T00:00:00Z", "ips": {"": ["203.0.113.1"]}}`,
		`{"day": "0001-01-01T00:00:00Z", "ips": {}}`,
		`{"day": 5}`,
		`{"ips": {"k": ["x"]}}`,
		`not json`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg clientIPsMessage
		if json.Unmarshal(data, &msg) != nil {
			return // dead-lettered as undecodable
		}
		clean, err := ledger.CleanClientIPs(msg.Day, msg.IPs)
		if err != nil {
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("CleanClientIPs error of kind other than Invalid: %v", err)
			}
			return
		}
		for id, ips := range clean {
			if !slices.IsSorted(ips) || len(slices.Compact(slices.Clone(ips))) != len(ips) {
				t.Fatalf("key %q: IPs %q are not sorted and distinct", id, ips)
			}
			for _, ip := range ips {
				if a, err := netip.ParseAddr(ip); err != nil || a.String() != ip {
					t.Fatalf("key %q: %q is not a canonical IP", id, ip)
				}
			}
		}
		again, err := ledger.CleanClientIPs(msg.Day.Add(time.Nanosecond), clean)
		if err != nil || len(again) != len(clean) {
			t.Fatalf("cleaning a clean map again = %v, %v", again, err)
		}
		for id := range clean {
			if !slices.Equal(again[id], clean[id]) {
				t.Fatalf("cleaning changed key %q: %q → %q", id, clean[id], again[id])
			}
		}
	})
}
