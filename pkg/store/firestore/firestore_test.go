package firestore

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/testenv"
	"github.com/keyplane/keyplane/pkg/errs"
	"github.com/keyplane/keyplane/pkg/store"
	"github.com/keyplane/keyplane/pkg/store/storetest"
)

// TestConformance runs the suite on the emulator, each subtest in a project
// of its own so that it starts from an empty database.
func TestConformance(t *testing.T) {
	testenv.Firestore(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return NewFromClient(testenv.FirestoreClient(t))
	})
}

func TestNewOwnsClient(t *testing.T) {
	testenv.Firestore(t)
	s, err := New(t.Context(), testenv.ProjectID())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := s.GetKey(t.Context(), "key-1"); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetKey on an empty database: got %v, want kind NotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.GetKey(t.Context(), "key-1"); err == nil {
		t.Errorf("GetKey after Close: got nil error, want the closed client's error")
	}
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
		s, err := New(t.Context(), project)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
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
