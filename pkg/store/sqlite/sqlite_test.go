package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/pkg/apikey"
	"github.com/keyplane/keyplane/pkg/store"
	"github.com/keyplane/keyplane/pkg/store/storetest"
)

func open(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "keyplane.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func TestConformanceInMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(":memory:")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyplane.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	k := &store.Key{ID: "key-1", Owner: "owner-1", Status: store.Active, CreatedAt: time.Unix(1, 0).UTC()}
	if err := s.Activate(t.Context(), k, store.AuditEntry{Time: k.CreatedAt, Action: "key.create", KeyID: k.ID}); err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.GetKey(t.Context(), "key-1"); err != nil {
		t.Errorf("GetKey after reopen: got %v, want the key", err)
	}
	var v int
	if err := s.r.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version: got %d (%v), want %d", v, err, len(migrations))
	}
}

func BenchmarkActivate(b *testing.B) {
	s := open(b)
	defer s.Close()
	ctx := b.Context()
	now := time.Now().UTC()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("key-%d", i)
		i++
		k := &store.Key{ID: id, Owner: "owner-1", Plan: "free", Scopes: []string{"read"}, Status: store.Active,
			Prefix: "kp_test", Hash: apikey.Hash([]byte(fmt.Sprintf("%032d", i))), CreatedAt: now, UpdatedAt: now,
			Metadata: map[string]string{"team": "ml"}}
		if err := s.Activate(ctx, k, store.AuditEntry{Time: now, Actor: "bench", Action: "key.create", KeyID: id}); err != nil {
			b.Fatalf("Activate: %v", err)
		}
	}
}
