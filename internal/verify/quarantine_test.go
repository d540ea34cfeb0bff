package verify_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/race"
	"github.com/keyplane/keyplane/internal/verify"
)

// A key in a leak quarantine verifies only from the IPs it was seen from
// before the report, until the grace ends; its replacement verifies from
// anywhere.
func TestQuarantinedKeyVerifiesOnlyFromItsSeenIPsUntilTheGraceEnds(t *testing.T) {
	e := newEnv(t, nil)
	l, err := sqliteledger.OpenWith(filepath.Join(t.TempDir(), "l.db"), sqliteledger.Options{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e.keys.Quarantine = keys.QuarantinePolicy{IPs: l, Days: 7, Grace: time.Hour}
	k := e.create(t, keys.CreateRequest{Plan: "free"})
	day := e.clock.Now().UTC().Truncate(24 * time.Hour)
	if err := l.AddClientIPs(context.Background(), day.AddDate(0, 0, -1), map[string][]string{k.Key.ID: {"203.0.113.7", "2001:db8::5"}}); err != nil {
		t.Fatal(err)
	}
	v := e.verifier(nil)
	check(t, v, verify.Request{Key: k.Secret, IP: "192.0.2.1"}, verify.Valid) // cached before the quarantine
	old, _, err := e.keys.Leaked(context.Background(), k.Key.ID, keys.LeakQuarantine, keys.Leak{Reporter: "github"})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second) // a poll is due
	if err := v.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"203.0.113.7", "2001:db8::5", "::ffff:203.0.113.7"} {
		check(t, v, verify.Request{Key: k.Secret, IP: ip}, verify.Valid)
	}
	for _, ip := range []string{"192.0.2.1", "", "not-an-ip", "2001:db8::6"} {
		d := check(t, v, verify.Request{Key: k.Secret, IP: ip}, verify.Forbidden)
		if d.Reason != verify.ReasonQuarantined {
			t.Errorf("from %q: reason %q, want %q", ip, d.Reason, verify.ReasonQuarantined)
		}
	}
	cur, err := e.keys.Get(context.Background(), old.ID)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := e.keys.Reveal(context.Background(), "test", cur.RotatedTo)
	if err != nil {
		t.Fatal(err)
	}
	check(t, v, verify.Request{Key: nk, IP: "192.0.2.1"}, verify.Valid)
	check(t, v, verify.Request{Key: nk}, verify.Valid)

	if !race.Enabled {
		req := verify.Request{Key: k.Secret, IP: "203.0.113.7"}
		if n := testing.AllocsPerRun(100, func() { v.Verify(context.Background(), req) }); n > 2 {
			t.Errorf("a cached verify of a quarantined key allocates %v times, want at most 2", n)
		}
	}

	// At the end of the grace the key no longer verifies from anywhere:
	// its rotation's grace, the quarantine's, has ended too.
	e.clock.Advance(time.Hour - time.Second)
	check(t, v, verify.Request{Key: k.Secret, IP: "203.0.113.7"}, verify.Expired)
}
