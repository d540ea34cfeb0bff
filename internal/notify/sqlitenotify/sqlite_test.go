package sqlitenotify

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/notifytest"
)

func TestConformance(t *testing.T) {
	notifytest.Run(t, func(t *testing.T) notify.Store {
		s, err := Open(filepath.Join(t.TempDir(), "notify.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestConformanceInMemory(t *testing.T) {
	notifytest.Run(t, func(t *testing.T) notify.Store {
		s, err := Open(":memory:")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	w := notify.OwnerWebhook{Owner: "acct_1", URL: "https://hooks.example.com/", Events: notify.EventTypes, UpdatedAt: time.Unix(1, 0).UTC()}
	if err := s.Put(t.Context(), w); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s, err = Open(path); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.Get(t.Context(), "acct_1"); err != nil {
		t.Errorf("Get after reopen: got %v, want the webhook", err)
	}
	var v int
	if err := s.r.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version: got %d (%v), want %d", v, err, len(migrations))
	}
}

func TestCreateDeliveryDeletesExpiredRecords(t *testing.T) {
	s, err := Open(":memory:")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := notify.Delivery{ID: "ntf_old", Owner: "acct_1", Type: notify.KeyEnabled, Payload: []byte(`{}`),
		Status: notify.Delivered, CreatedAt: t0, ExpireAt: t0.Add(notify.Retention)}
	if err := s.CreateDelivery(t.Context(), old); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	later := t0.Add(notify.Retention + time.Second)
	fresh := notify.Delivery{ID: "ntf_new", Owner: "acct_1", Type: notify.KeyEnabled, Payload: []byte(`{}`),
		Status: notify.Pending, CreatedAt: later, ExpireAt: later.Add(notify.Retention)}
	if err := s.CreateDelivery(t.Context(), fresh); err != nil {
		t.Fatalf("CreateDelivery: %v", err)
	}
	if _, err := s.GetDelivery(t.Context(), "ntf_old"); !errs.Is(err, errs.NotFound) {
		t.Errorf("GetDelivery of a record past its expiry: got %v, want NotFound", err)
	}
}
