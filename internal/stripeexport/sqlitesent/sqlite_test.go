package sqlitesent

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/sqlitedb"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/stripeexport/senttest"
)

var _ stripeexport.Sent = (*Sent)(nil)

var start = time.Date(2031, time.January, 1, 0, 0, 0, 0, time.UTC)

func harness(t *testing.T, path string) senttest.Harness {
	c := clock.NewFake(start)
	s, err := OpenWith(path, Options{Clock: c})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return senttest.Harness{Sent: s, Advance: c.Advance}
}

func TestConformance(t *testing.T) {
	senttest.Run(t, func(t *testing.T) senttest.Harness {
		return harness(t, filepath.Join(t.TempDir(), "stripe-sent.db"))
	})
}

func TestConformanceInMemory(t *testing.T) {
	senttest.Run(t, func(t *testing.T) senttest.Harness { return harness(t, ":memory:") })
}

// TestRecordOutlivesTheProcess: what one process recorded, the next one
// to open the file finds; that is the record's reason to exist.
func TestRecordOutlivesTheProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stripe-sent.db")
	c := clock.NewFake(start)
	s, err := OpenWith(path, Options{Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSent(t.Context(), []string{"evt_1"}, stripeexport.SentRetention); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * 24 * time.Hour)
	if s, err = OpenWith(path, Options{Clock: c}); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.Sent(t.Context(), []string{"evt_1", "evt_2"})
	if err != nil || !got["evt_1"] || got["evt_2"] {
		t.Errorf("after reopening: Sent = %v, %v; want evt_1 only", got, err)
	}
}

func rows(t *testing.T, s *Sent) int {
	t.Helper()
	var n int
	if err := s.db.R.QueryRowContext(t.Context(), `SELECT count(*) FROM stripe_sent`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestExpiredRecordsAreDeletedInBoundedAmounts: each MarkSent of n ids
// deletes at most 2n+100 expired rows, so the table shrinks back to what
// retention keeps without any one call taking long.
func TestExpiredRecordsAreDeletedInBoundedAmounts(t *testing.T) {
	c := clock.NewFake(start)
	s, err := OpenWith(filepath.Join(t.TempDir(), "stripe-sent.db"), Options{Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var old []string
	for i := range 1000 {
		old = append(old, fmt.Sprintf("old_%d", i))
	}
	if err := s.MarkSent(t.Context(), old, time.Hour); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Hour)
	for i, want := range []int{1000 - 102 + 1, 1000 - 2*102 + 2} {
		if err := s.MarkSent(t.Context(), []string{fmt.Sprintf("new_%d", i)}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if got := rows(t, s); got != want {
			t.Errorf("after MarkSent %d of one id: %d rows, want %d (102 expired deleted per call)", i+1, got, want)
		}
	}
	for range 10 {
		if err := s.MarkSent(t.Context(), []string{"new_0"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if got := rows(t, s); got != 2 {
		t.Errorf("after the purges: %d rows, want the 2 live ones", got)
	}
}

// TestNewerSchemaIsRefused: a file written by a newer keyplane is not
// opened (its rows might mean something else).
func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stripe-sent.db")
	db, err := sqlitedb.Open(path, append(migrations, "CREATE TABLE later (x INTEGER)"), nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := Open(path); !errs.Is(err, errs.Internal) {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open of a newer schema: %v, want Internal", err)
	}
}
