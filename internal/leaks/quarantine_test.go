package leaks_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/leaks"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/store"
)

// Under the quarantine policy a report with the same token twice
// quarantines the key once (one rotation, one key.leaked, the first
// entry's url and source), a key seen from no IP is disabled at once, and
// sending the report again changes nothing.
func TestQuarantineReportActsOncePerKey(t *testing.T) {
	e := newLeakEnv(t, nil, keys.LeakQuarantine)
	l, err := sqliteledger.OpenWith(filepath.Join(t.TempDir(), "l.db"), sqliteledger.Options{Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	e.keys.Quarantine = keys.QuarantinePolicy{IPs: l, Days: 7, Grace: 24 * time.Hour}
	ctx := context.Background()
	used, usedSecret := e.create(t, "acct_1")
	unused, unusedSecret := e.create(t, "acct_2")
	if err := l.AddClientIPs(ctx, e.clock.Now().Truncate(24*time.Hour), map[string][]string{used: {"203.0.113.7"}}); err != nil {
		t.Fatal(err)
	}
	entries := []leaks.Entry{
		{Token: usedSecret, Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/1/a.env", Source: "content"},
		{Token: unusedSecret, Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/1/b.env", Source: "commit"},
		{Token: usedSecret, Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/2/a.env", Source: "commit"},
	}
	for round := range 2 {
		got, err := e.svc.Handle(ctx, "github", entries)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for i, r := range got {
			if r.Label != leaks.TruePositive {
				t.Errorf("round %d: entry %d labelled %s", round, i, r.Label)
			}
		}
	}
	k := e.key(t, used)
	if q := k.Quarantine; !q.InForce() || q.URL != entries[0].URL || q.Source != "content" || len(q.AllowedIPs) != 1 || k.RotatedTo == "" || k.Status != store.Active {
		t.Errorf("the used key: %s rotated_to %q, quarantine %+v", k.Status, k.RotatedTo, k.Quarantine)
	}
	if u := e.key(t, unused); u.Status != store.Disabled || u.StatusReason != keys.ReasonLeaked || u.RotatedTo != "" {
		t.Errorf("the unused key: %s %q rotated_to %q; want disabled at once", u.Status, u.StatusReason, u.RotatedTo)
	}
	if got := e.told.got(); len(got) != 2 {
		t.Errorf("told %v, want one key.leaked per key", got)
	}
	ks, _, err := e.store.ListKeys(ctx, store.ListKeysQuery{Owner: "acct_1", PageSize: 10})
	if err != nil || len(ks) != 2 {
		t.Errorf("acct_1 has %d keys (%v), want the quarantined one and its one replacement", len(ks), err)
	}
}
