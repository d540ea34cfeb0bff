package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
)

// RunPortalLinks runs the conformance suite of store.PortalLinks on the
// stores open returns, each subtest on a fresh one.
func RunPortalLinks(t *testing.T, open func(t *testing.T) store.PortalLinks) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.PortalLinks)
	}{
		{"PortalLinkRedeemedOnceWithEveryField", testPortalLinkRedeemedOnceWithEveryField},
		{"PortalLinkDuplicateHashIsExists", testPortalLinkDuplicateHashIsExists},
		{"PortalLinkUnknownIsNotFound", testPortalLinkUnknownIsNotFound},
		{"PortalLinkExpiredIsRefusedAndNotBurned", testPortalLinkExpiredIsRefused},
		{"PortalLinkConcurrentRedeemOneWins", testPortalLinkConcurrentRedeemOneWins},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

var portalT0 = time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)

func newPortalLink(name string) store.PortalLink {
	return store.PortalLink{Hash: hashOf("portal " + name), Owner: "acct_" + name,
		Permissions: []string{"keys:create", "keys:read"}, ReturnURL: "https://example.com/settings?x=1",
		CreatedBy: "tok_1", CreatedAt: portalT0, ExpiresAt: portalT0.Add(10 * time.Minute)}
}

func createPortalLink(t *testing.T, s store.PortalLinks, l store.PortalLink) {
	t.Helper()
	if err := s.CreatePortalLink(t.Context(), l); err != nil {
		t.Fatalf("CreatePortalLink: %v", err)
	}
}

func testPortalLinkRedeemedOnceWithEveryField(t *testing.T, s store.PortalLinks) {
	l := newPortalLink("a")
	createPortalLink(t, s, l)
	at := portalT0.Add(time.Minute)
	got, err := s.RedeemPortalLink(t.Context(), l.Hash, at)
	if err != nil {
		t.Fatalf("RedeemPortalLink: %v", err)
	}
	want := l
	want.UsedAt = &at
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("redeemed link (-want +got):\n%s", diff)
	}
	if _, err := s.RedeemPortalLink(t.Context(), l.Hash, at.Add(time.Second)); !errs.Is(err, errs.FailedPrecondition) {
		t.Errorf("second RedeemPortalLink: got %v, want FailedPrecondition", err)
	}
}

func testPortalLinkDuplicateHashIsExists(t *testing.T, s store.PortalLinks) {
	l := newPortalLink("a")
	createPortalLink(t, s, l)
	l.Owner = "acct_other"
	if err := s.CreatePortalLink(t.Context(), l); !errs.Is(err, errs.Exists) {
		t.Fatalf("CreatePortalLink with a stored hash: got %v, want Exists", err)
	}
	got, err := s.RedeemPortalLink(t.Context(), l.Hash, portalT0)
	if err != nil {
		t.Fatalf("RedeemPortalLink: %v", err)
	}
	if got.Owner != "acct_a" {
		t.Errorf("owner: got %q, want the first link's acct_a", got.Owner)
	}
}

func testPortalLinkUnknownIsNotFound(t *testing.T, s store.PortalLinks) {
	if _, err := s.RedeemPortalLink(t.Context(), hashOf("nothing"), portalT0); !errs.Is(err, errs.NotFound) {
		t.Errorf("RedeemPortalLink of an unknown hash: got %v, want NotFound", err)
	}
}

func testPortalLinkExpiredIsRefused(t *testing.T, s store.PortalLinks) {
	l := newPortalLink("a")
	createPortalLink(t, s, l)
	if _, err := s.RedeemPortalLink(t.Context(), l.Hash, l.ExpiresAt); !errs.Is(err, errs.FailedPrecondition) {
		t.Fatalf("RedeemPortalLink at ExpiresAt: got %v, want FailedPrecondition", err)
	}
	// The refusal wrote nothing: just before expiry it still redeems.
	if _, err := s.RedeemPortalLink(t.Context(), l.Hash, l.ExpiresAt.Add(-time.Microsecond)); err != nil {
		t.Errorf("RedeemPortalLink before ExpiresAt after a refusal: %v", err)
	}
}

func testPortalLinkConcurrentRedeemOneWins(t *testing.T, s store.PortalLinks) {
	l := newPortalLink("a")
	createPortalLink(t, s, l)
	const n = 8
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		wins, fails int
	)
	for range n {
		wg.Go(func() {
			_, err := s.RedeemPortalLink(t.Context(), l.Hash, portalT0.Add(time.Second))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errs.Is(err, errs.FailedPrecondition):
				fails++
			default:
				t.Errorf("RedeemPortalLink: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || fails != n-1 {
		t.Errorf("of %d concurrent redeems: %d won and %d were refused, want 1 and %d", n, wins, fails, n-1)
	}
}
