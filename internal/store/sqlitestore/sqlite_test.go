package sqlitestore

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/sqlitedb"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/storetest"
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

// TestOpenMigratesVersion2File checks that a file written before
// DueSuspensions and checkpoints existed gains both, with its keys kept.
func TestOpenMigratesVersion2File(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyplane.db")
	old, err := sqlitedb.Open(path, migrations[:2], nil)
	if err != nil {
		t.Fatalf("open at schema version 2: %v", err)
	}
	until := time.Unix(100, 0).UTC()
	// The row as that schema's columns hold it (the current keyValues
	// writes columns later migrations added).
	if _, err := old.W.Exec(`INSERT INTO keys (id, owner, name, plan, scopes, status, status_reason, disabled_until,
		prefix, last4, hash, created_at, updated_at, expires_at, metadata, limits, restrictions, rotated_from, rotated_to, last_used_at)
		VALUES ('key-1', 'owner-1', '', '', 'null', 'disabled', '', ?, '', '', zeroblob(32), 1000000, 0, NULL, 'null', 'null', '{}', '', '', NULL)`,
		micros(until)); err != nil {
		t.Fatalf("insert a version-2 row: %v", err)
	}
	old.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	ks, err := s.DueSuspensions(t.Context(), until, time.Time{}, "", 10)
	if err != nil || len(ks) != 1 || ks[0].ID != "key-1" {
		t.Errorf("DueSuspensions after migrating: got %v, %v; want key-1", ks, err)
	}
	if _, err := s.SaveCheckpoint(t.Context(), store.Checkpoint{Name: "sweep"}, until); err != nil {
		t.Errorf("SaveCheckpoint after migrating: %v", err)
	}
}

// TestDueSuspensionsUsesPartialIndex protects the cost doc.go gives
// DueSuspensions: it reads keys_by_suspension, not the keys table.
func TestDueSuspensionsUsesPartialIndex(t *testing.T) {
	s := open(t)
	defer s.Close()
	for _, cursor := range []bool{false, true} {
		q, args := dueQuery(cursor), []any{1, 10}
		if cursor {
			args = []any{1, 0, "key-1", 10}
		}
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN: %v", err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "keys_by_suspension") || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("plan with cursor %v: got %q, want a search of keys_by_suspension without a sort", cursor, p)
		}
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

func TestPortalLinksConformance(t *testing.T) {
	storetest.RunPortalLinks(t, func(t *testing.T) store.PortalLinks { return open(t) })
}
