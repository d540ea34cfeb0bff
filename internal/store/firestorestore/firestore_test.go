package firestorestore

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/storetest"
	"github.com/keyplane/keyplane/internal/testenv"
)

// TestConformance runs the suite on the emulator, each subtest in a project
// of its own so that it starts from an empty database.
func TestConformance(t *testing.T) {
	testenv.Firestore(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return NewFromClient(testenv.FirestoreClient(t))
	})
}

func TestPortalLinksConformance(t *testing.T) {
	testenv.Firestore(t)
	storetest.RunPortalLinks(t, func(t *testing.T) store.PortalLinks {
		return NewFromClient(testenv.FirestoreClient(t))
	})
}

// TestUpdateKeyAcrossProcessesLosesNoUpdate checks the Firestore
// transaction itself: the suite's concurrent updates share one Store, whose
// in-process lock serialises them.
func TestUpdateKeyAcrossProcessesLosesNoUpdate(t *testing.T) {
	testenv.Firestore(t)
	const n = 4
	project := testenv.ProjectID()
	stores := make([]*Store, n)
	for i := range stores {
		s := NewFromClient(testenv.FirestoreClientFor(t, project))
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	k := &store.Key{ID: "key-1", Owner: "owner-1", Status: store.Active, CreatedAt: time.Unix(1, 0).UTC()}
	if err := stores[0].Activate(t.Context(), k, store.AuditEntry{Time: k.CreatedAt, Action: "key.create", KeyID: k.ID}); err != nil {
		t.Fatalf("Activate: %v", err)
	}
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			_, err := s.UpdateKey(t.Context(), "key-1", func(k *store.Key) (*store.AuditEntry, error) {
				k.Metadata = maps.Clone(k.Metadata)
				if k.Metadata == nil {
					k.Metadata = map[string]string{}
				}
				k.Metadata[fmt.Sprint(i)] = "x"
				return nil, nil
			})
			if err != nil {
				t.Errorf("UpdateKey from store %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got, err := stores[0].GetKey(t.Context(), "key-1")
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if len(got.Metadata) != n {
		t.Errorf("metadata after %d concurrent updates: got %v, want %d entries", n, got.Metadata, n)
	}
}

// TestSaveCheckpointAcrossProcessesOneWins checks the Firestore transaction
// itself: the suite's concurrent savers share one Store, whose in-process
// lock serialises them.
func TestSaveCheckpointAcrossProcessesOneWins(t *testing.T) {
	testenv.Firestore(t)
	const n = 4
	project := testenv.ProjectID()
	stores := make([]*Store, n)
	for i := range stores {
		s := NewFromClient(testenv.FirestoreClientFor(t, project))
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	now := time.Unix(1, 0).UTC()
	results := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			_, results[i] = s.SaveCheckpoint(t.Context(), store.Checkpoint{Name: "sweep", Data: []byte(fmt.Sprint(i))}, now)
		})
	}
	wg.Wait()
	var winners []int
	for i, err := range results {
		switch {
		case err == nil:
			winners = append(winners, i)
		case !errs.Is(err, errs.Conflict):
			t.Errorf("saver %d: got %v, want nil or kind Conflict", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners among %d savers of version 0 in %d processes: got %v, want exactly one", n, n, winners)
	}
	got, err := stores[0].GetCheckpoint(t.Context(), "sweep")
	if err != nil {
		t.Fatalf("GetCheckpoint: %v", err)
	}
	if want := fmt.Sprint(winners[0]); string(got.Data) != want || got.Version != 1 || !got.UpdatedAt.Equal(now) {
		t.Errorf("GetCheckpoint: got data %q, version %d, updated %v; want %q, 1, %v", got.Data, got.Version, got.UpdatedAt, want, now)
	}
}

// TestListUnusedReadsABoundedNumberOfKeysPerCall: with unused_since each
// call reads at most the bound, so pages may be short, even empty, with a
// next token; following the tokens still lists every stale key once, in
// order.
func TestListUnusedReadsABoundedNumberOfKeysPerCall(t *testing.T) {
	testenv.Firestore(t)
	s := NewFromClient(testenv.FirestoreClient(t))
	s.unusedScan = 2
	base := time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)
	for i := range 7 {
		id := fmt.Sprintf("key-%d", i)
		k := &store.Key{ID: id, Owner: "o", Name: id, Plan: "free", Status: store.Active,
			Hash: [32]byte{byte(i + 1)}, CreatedAt: base.Add(time.Duration(i) * time.Second), UpdatedAt: base}
		if err := s.Activate(t.Context(), k, store.AuditEntry{Time: base, Actor: "t", Action: "key.create", KeyID: id}); err != nil {
			t.Fatal(err)
		}
		if i < 4 { // keys 0-3 used after since: not stale
			if err := s.MarkUsed(t.Context(), map[string]time.Time{id: base.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []string{"key-6", "key-5", "key-4"}
	var got []string
	token, calls := "", 0
	for {
		calls++
		page, next, err := s.ListKeys(t.Context(), store.ListKeysQuery{PageSize: 10, UnusedSince: base.Add(time.Minute), PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page {
			got = append(got, k.ID)
		}
		if token = next; token == "" || calls > 10 {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || token != "" {
		t.Errorf("stale keys: got %v (last token %q), want %v", got, token, want)
	}
	if calls != 4 { // 7 keys, 2 read per call
		t.Errorf("calls: got %d, want 4 (at most 2 keys read per call)", calls)
	}
}
