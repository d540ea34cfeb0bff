package firestoredb

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyplane/keyplane/internal/errs"
)

// Translate classifies a Firestore (gRPC) error; msg says what failed and
// is safe to show. nil stays nil and an error that already has an errs
// kind keeps it. Otherwise: NotFound is errs.NotFound; AlreadyExists is
// errs.Exists; Aborted (contention that outlasted the client's retries)
// is contention, the kind the caller's contract gives it; a cancelled or
// expired context, Unavailable, DeadlineExceeded, ResourceExhausted and
// Canceled are errs.Unavailable; anything else is errs.Internal.
func Translate(err error, msg string, contention errs.Kind) error {
	if err == nil {
		return nil
	}
	if _, ok := errs.As(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errs.Wrap(errs.Unavailable, err, msg)
	}
	switch status.Code(err) {
	case codes.NotFound:
		return errs.Wrap(errs.NotFound, err, msg+": not found")
	case codes.AlreadyExists:
		return errs.Wrap(errs.Exists, err, msg+": already exists")
	case codes.Aborted:
		return errs.Wrap(contention, err, msg+": contention, retry")
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Canceled:
		return errs.Wrap(errs.Unavailable, err, msg+": Firestore is unavailable")
	}
	return errs.Wrap(errs.Internal, err, msg)
}

// ValidID reports whether id can name a document: Firestore ids are valid
// UTF-8 of at most 1500 bytes, without '/', and are not ".", ".." or
// __.*__.
func ValidID(id string) bool {
	return id != "" && len(id) <= 1500 && utf8.ValidString(id) && !strings.Contains(id, "/") &&
		id != "." && id != ".." && !(len(id) >= 4 && strings.HasPrefix(id, "__") && strings.HasSuffix(id, "__"))
}

// Time is t as Firestore stores it: UTC, to the microsecond.
func Time(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Locks serialise one process's read-modify-write transactions on the
// same document, striped by id, so that they queue in the process rather
// than contend in Firestore, where each lost race costs a lock wait and a
// backoff of a second or more. Other processes still contend in
// Firestore. The zero value is ready to use.
type Locks struct{ stripes [64]sync.Mutex }

// For returns the mutex of id's stripe.
func (l *Locks) For(id string) *sync.Mutex {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &l.stripes[h%uint32(len(l.stripes))]
}
