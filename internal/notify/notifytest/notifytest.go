package notifytest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/notify"
)

// Run runs the conformance suite against the stores open returns. Each
// subtest calls open once for a fresh, empty store and closes it when it
// ends; open releases anything else it made through t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) notify.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, notify.Store)
	}{
		{"UnknownOwnerIsNotFound", testUnknownOwnerIsNotFound},
		{"WebhookRoundTripsEveryField", testWebhookRoundTripsEveryField},
		{"PutReplacesTheOwnersWebhook", testPutReplacesTheOwnersWebhook},
		{"OwnersAreKeptApart", testOwnersAreKeptApart},

		{"DeliveryRoundTripsEveryField", testDeliveryRoundTripsEveryField},
		{"ZeroTimesStayZero", testZeroTimesStayZero},
		{"UnknownDeliveryIsNotFound", testUnknownDeliveryIsNotFound},
		{"CreateDeliveryDuplicateIsExistsAndKeepsTheFirst", testCreateDeliveryDuplicateIsExistsAndKeepsTheFirst},
		{"UpdateDeliveryWritesMutation", testUpdateDeliveryWritesMutation},
		{"UpdateDeliveryMutateErrorWritesNothing", testUpdateDeliveryMutateErrorWritesNothing},
		{"UpdateDeliveryKeepsTheID", testUpdateDeliveryKeepsTheID},
		{"UpdateDeliveryConcurrentLosesNoUpdate", testUpdateDeliveryConcurrentLosesNoUpdate},
		{"UpdateDeliveryConcurrentClaimsHaveOneWinner", testUpdateDeliveryConcurrentClaimsHaveOneWinner},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// equateEmpty lets stores return nil or empty slices interchangeably.
var equateEmpty = cmpopts.EquateEmpty()

// base is the suite's fixed time, with microsecond precision.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func wantKind(t *testing.T, what string, err error, k errs.Kind) {
	t.Helper()
	if !errs.Is(err, k) {
		t.Errorf("%s: got error %v, want kind %v", what, err, k)
	}
}

func testUnknownOwnerIsNotFound(t *testing.T, s notify.Store) {
	_, err := s.Get(t.Context(), "acct_nobody")
	wantKind(t, "Get of an owner without a webhook", err, errs.NotFound)
}

func testWebhookRoundTripsEveryField(t *testing.T, s notify.Store) {
	w := notify.OwnerWebhook{
		Owner: "acct_123", URL: "https://hooks.example.com/keyplane?x=1",
		Events:            []string{notify.KeyDisabled, notify.UsageThreshold},
		SecretFingerprint: "0123456789abcdef0123456789abcdef", UpdatedAt: base,
	}
	if err := s.Put(t.Context(), w); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, err := s.Get(t.Context(), w.Owner)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(w, got, equateEmpty); diff != "" {
		t.Errorf("Get after Put (-want +got):\n%s", diff)
	}
}

func testPutReplacesTheOwnersWebhook(t *testing.T, s notify.Store) {
	first := notify.OwnerWebhook{Owner: "acct_1", URL: "https://a.example.com/", Events: notify.EventTypes, SecretFingerprint: "aa", UpdatedAt: base}
	second := notify.OwnerWebhook{Owner: "acct_1", URL: "https://b.example.com/", Events: []string{notify.KeyEnabled}, SecretFingerprint: "bb", UpdatedAt: base.Add(time.Minute)}
	for _, w := range []notify.OwnerWebhook{first, second} {
		if err := s.Put(t.Context(), w); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	got, err := s.Get(t.Context(), "acct_1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(second, got, equateEmpty); diff != "" {
		t.Errorf("Get after two Puts (-want the second +got):\n%s", diff)
	}
}

// testOwnersAreKeptApart includes owners that are legal owner ids but not
// legal document ids everywhere (".", "..", "__x__").
func testOwnersAreKeptApart(t *testing.T, s notify.Store) {
	owners := []string{"acct_1", "acct_1.", ".", "..", "__x__", "a:b@c-d_e.f", "ACCT_1"}
	for i, o := range owners {
		w := notify.OwnerWebhook{Owner: o, URL: fmt.Sprintf("https://h%d.example.com/", i), Events: notify.EventTypes, UpdatedAt: base}
		if err := s.Put(t.Context(), w); err != nil {
			t.Fatalf("Put(%q): %v", o, err)
		}
	}
	for i, o := range owners {
		got, err := s.Get(t.Context(), o)
		if err != nil {
			t.Errorf("Get(%q): %v", o, err)
			continue
		}
		if want := fmt.Sprintf("https://h%d.example.com/", i); got.Owner != o || got.URL != want {
			t.Errorf("Get(%q): got owner %q url %q, want %q %q", o, got.Owner, got.URL, o, want)
		}
	}
}

func sample(id string) notify.Delivery {
	return notify.Delivery{
		ID: id, Owner: "acct_123", Type: notify.KeyDisabled,
		Payload: []byte(`{"type":"key.disabled","timestamp":"2026-03-14T15:09:26Z","data":{"key_id":"key_1"}}`),
		Status:  notify.Pending, NextAttemptAt: base, CreatedAt: base, UpdatedAt: base, ExpireAt: base.Add(notify.Retention),
	}
}

func testDeliveryRoundTripsEveryField(t *testing.T, s notify.Store) {
	d := notify.Delivery{
		ID: "ntf_0123456789abcdef0123456789abcdef", Owner: "acct_123", Type: notify.UsageThreshold,
		Payload: []byte(`{"type":"usage.threshold"}`), Status: notify.Dead, Attempts: 7, Enqueued: 7,
		NextAttemptAt: base.Add(time.Hour), Lease: "token", LeaseUntil: base.Add(2 * time.Minute),
		LastAttemptAt: base.Add(time.Minute), LastStatus: 503, LastError: "HTTP 503", Reason: notify.ReasonExhausted,
		CreatedAt: base, UpdatedAt: base.Add(3 * time.Minute), ExpireAt: base.Add(notify.Retention),
	}
	if err := s.CreateDelivery(t.Context(), d); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	got, err := s.GetDelivery(t.Context(), d.ID)
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	if diff := cmp.Diff(d, got, equateEmpty); diff != "" {
		t.Errorf("GetDelivery after CreateDelivery (-want +got):\n%s", diff)
	}
}

func testZeroTimesStayZero(t *testing.T, s notify.Store) {
	d := notify.Delivery{ID: "ntf_zero", Owner: "acct_1", Type: notify.KeyEnabled, Payload: []byte(`{}`), Status: notify.Pending}
	if err := s.CreateDelivery(t.Context(), d); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	got, err := s.GetDelivery(t.Context(), d.ID)
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	for name, v := range map[string]time.Time{
		"NextAttemptAt": got.NextAttemptAt, "LeaseUntil": got.LeaseUntil, "LastAttemptAt": got.LastAttemptAt,
		"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt, "ExpireAt": got.ExpireAt,
	} {
		if !v.IsZero() {
			t.Errorf("%s stored as the zero time: got %v, want the zero time", name, v)
		}
	}
}

func testUnknownDeliveryIsNotFound(t *testing.T, s notify.Store) {
	_, err := s.GetDelivery(t.Context(), "ntf_missing")
	wantKind(t, "GetDelivery of an unknown id", err, errs.NotFound)
	_, err = s.UpdateDelivery(t.Context(), "ntf_missing", func(*notify.Delivery) error { return nil })
	wantKind(t, "UpdateDelivery of an unknown id", err, errs.NotFound)
}

func testCreateDeliveryDuplicateIsExistsAndKeepsTheFirst(t *testing.T, s notify.Store) {
	first := sample("ntf_dup")
	if err := s.CreateDelivery(t.Context(), first); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	second := sample("ntf_dup")
	second.Payload, second.Owner = []byte(`{"other":true}`), "acct_other"
	wantKind(t, "CreateDelivery of a taken id", s.CreateDelivery(t.Context(), second), errs.Exists)
	got, err := s.GetDelivery(t.Context(), "ntf_dup")
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	if diff := cmp.Diff(first, got, equateEmpty); diff != "" {
		t.Errorf("the record after a duplicate create (-want the first +got):\n%s", diff)
	}
}

func testUpdateDeliveryWritesMutation(t *testing.T, s notify.Store) {
	if err := s.CreateDelivery(t.Context(), sample("ntf_u")); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	want := sample("ntf_u")
	want.Attempts, want.Lease, want.LeaseUntil, want.LastAttemptAt = 1, "tok", base.Add(time.Minute), base
	got, err := s.UpdateDelivery(t.Context(), "ntf_u", func(d *notify.Delivery) error {
		d.Attempts, d.Lease, d.LeaseUntil, d.LastAttemptAt = 1, "tok", base.Add(time.Minute), base
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateDelivery: %v", err)
	}
	if diff := cmp.Diff(want, got, equateEmpty); diff != "" {
		t.Errorf("UpdateDelivery's result (-want +got):\n%s", diff)
	}
	stored, err := s.GetDelivery(t.Context(), "ntf_u")
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	if diff := cmp.Diff(want, stored, equateEmpty); diff != "" {
		t.Errorf("the stored record (-want +got):\n%s", diff)
	}
}

func testUpdateDeliveryMutateErrorWritesNothing(t *testing.T, s notify.Store) {
	if err := s.CreateDelivery(t.Context(), sample("ntf_e")); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	sentinel := errors.New("changed my mind")
	_, err := s.UpdateDelivery(t.Context(), "ntf_e", func(d *notify.Delivery) error {
		d.Status = notify.Delivered
		return sentinel
	})
	if err != sentinel {
		t.Errorf("UpdateDelivery: got error %v, want mutate's error unchanged", err)
	}
	got, err := s.GetDelivery(t.Context(), "ntf_e")
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	if diff := cmp.Diff(sample("ntf_e"), got, equateEmpty); diff != "" {
		t.Errorf("the record after a failed mutate (-want unchanged +got):\n%s", diff)
	}
}

func testUpdateDeliveryKeepsTheID(t *testing.T, s notify.Store) {
	if err := s.CreateDelivery(t.Context(), sample("ntf_id")); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	got, err := s.UpdateDelivery(t.Context(), "ntf_id", func(d *notify.Delivery) error {
		d.ID, d.Attempts = "ntf_other", 1
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateDelivery: %v", err)
	}
	if got.ID != "ntf_id" {
		t.Errorf("UpdateDelivery's result: got id %q, want ntf_id", got.ID)
	}
	if _, err := s.GetDelivery(t.Context(), "ntf_other"); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetDelivery(ntf_other): got %v, want NotFound: a mutate must not move a record", err)
	}
}

func testUpdateDeliveryConcurrentLosesNoUpdate(t *testing.T, s notify.Store) {
	if err := s.CreateDelivery(t.Context(), sample("ntf_c")); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.UpdateDelivery(t.Context(), "ntf_c", func(d *notify.Delivery) error {
				d.Attempts++
				return nil
			}); err != nil {
				t.Errorf("UpdateDelivery: %v", err)
			}
		})
	}
	wg.Wait()
	got, err := s.GetDelivery(t.Context(), "ntf_c")
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	if got.Attempts != n {
		t.Errorf("after %d concurrent increments: got attempts %d, want %d", n, got.Attempts, n)
	}
}

// testUpdateDeliveryConcurrentClaimsHaveOneWinner is the compare-and-set
// the Deliverer's claim relies on: of several handlers that each take the
// lease only if it is free, exactly one gets it.
func testUpdateDeliveryConcurrentClaimsHaveOneWinner(t *testing.T, s notify.Store) {
	if err := s.CreateDelivery(t.Context(), sample("ntf_claim")); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	taken := errors.New("taken")
	const n = 8
	var (
		wg   sync.WaitGroup
		wins atomic.Int32
	)
	for i := range n {
		wg.Go(func() {
			_, err := s.UpdateDelivery(t.Context(), "ntf_claim", func(d *notify.Delivery) error {
				if d.Lease != "" {
					return taken
				}
				d.Lease, d.Attempts = fmt.Sprint("handler-", i), d.Attempts+1
				return nil
			})
			switch {
			case err == nil:
				wins.Add(1)
			case err != taken:
				t.Errorf("UpdateDelivery: %v", err)
			}
		})
	}
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Errorf("claims that won: got %d, want 1", got)
	}
	got, err := s.GetDelivery(t.Context(), "ntf_claim")
	if err != nil {
		t.Fatalf("GetDelivery: %v", err)
	}
	if got.Attempts != 1 || got.Lease == "" {
		t.Errorf("the claimed record: got attempts %d lease %q, want 1 and a lease", got.Attempts, got.Lease)
	}
}
