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
