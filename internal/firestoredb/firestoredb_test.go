package firestoredb

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/errs"
)

func TestTranslateGivesEachFirestoreErrorItsKind(t *testing.T) {
	classified := errs.E(errs.Invalid, "bad id")
	for _, tc := range []struct {
		name       string
		err        error
		contention errs.Kind
		want       errs.Kind
	}{
		{"not found", status.Error(codes.NotFound, "x"), errs.Conflict, errs.NotFound},
		{"already exists", status.Error(codes.AlreadyExists, "x"), errs.Conflict, errs.Exists},
		{"aborted as Conflict", status.Error(codes.Aborted, "x"), errs.Conflict, errs.Conflict},
		{"aborted as Unavailable", status.Error(codes.Aborted, "x"), errs.Unavailable, errs.Unavailable},
		{"unavailable", status.Error(codes.Unavailable, "x"), errs.Conflict, errs.Unavailable},
		{"deadline exceeded", status.Error(codes.DeadlineExceeded, "x"), errs.Conflict, errs.Unavailable},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "x"), errs.Conflict, errs.Unavailable},
		{"canceled", status.Error(codes.Canceled, "x"), errs.Conflict, errs.Unavailable},
		{"context canceled", fmt.Errorf("commit: %w", context.Canceled), errs.Conflict, errs.Unavailable},
		{"context deadline", context.DeadlineExceeded, errs.Conflict, errs.Unavailable},
		{"permission denied", status.Error(codes.PermissionDenied, "x"), errs.Conflict, errs.Internal},
		{"plain error", fmt.Errorf("boom"), errs.Conflict, errs.Internal},
		{"already classified", classified, errs.Conflict, errs.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Translate(tc.err, "firestore: read key", tc.contention)
			if k := errs.KindOf(got); k != tc.want {
				t.Errorf("Translate(%v): got kind %v, want %v", tc.err, k, tc.want)
			}
			if !strings.Contains(got.Error(), tc.err.Error()) {
				t.Errorf("Translate(%v) = %q: lost the cause", tc.err, got)
			}
		})
	}
	if err := Translate(nil, "firestore: read key", errs.Conflict); err != nil {
		t.Errorf("Translate(nil): got %v, want nil", err)
	}
	if got := Translate(classified, "firestore: read key", errs.Conflict); got != classified {
		t.Errorf("Translate(classified): got %v, want the same error unchanged", got)
	}
}

func TestValidIDAcceptsOnlyDocumentIDs(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"key_123", true},
		{"~tilde", true},
		{"__x", true},
		{"_x_", true},
		{strings.Repeat("a", 1500), true},
		{"", false},
		{"a/b", false},
		{".", false},
		{"..", false},
		{"__x__", false},
		{"____", false},
		{"\xff", false},
		{strings.Repeat("a", 1501), false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%.20q): got %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestTimeIsUTCToTheMicrosecond(t *testing.T) {
	in := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600))
	want := time.Date(2025, 3, 1, 11, 0, 0, 123456000, time.UTC)
	if got := Time(in); !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("Time(%v): got %v, want %v", in, got, want)
	}
}

func TestLocksGiveOneIDOneMutex(t *testing.T) {
	var l Locks
	if a, b := l.For("key_1"), l.For("key_1"); a != b {
		t.Errorf("For(key_1) twice: got two mutexes, want one")
	}
	seen := map[*sync.Mutex]bool{}
	for i := range 1000 {
		seen[l.For(fmt.Sprintf("key_%d", i))] = true
	}
	if got, want := len(seen), len(l.stripes); got != want {
		t.Errorf("For over 1000 ids: got %d stripes in use, want all %d", got, want)
	}
}
