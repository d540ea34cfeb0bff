package firestoresent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/firestoredb"
)

// Collection is the collection of the records.
const Collection = "stripe_sent"

const (
	// perCall bounds the documents of one GetAll and the writes of one
	// commit (Firestore allows 500 writes per commit).
	perCall = 500
	// parallel bounds the GetAll calls or commits of one Sent or
	// MarkSent in flight at once.
	parallel = 4
	// txAttempts bounds the attempts of a commit that Firestore aborts
	// for contention.
	txAttempts = 5
)

// Options are the optional settings of a Sent. The zero value means the
// defaults.
type Options struct {
	// Clock tells the time from which a record's retention runs and
	// against which it has passed. Default: the wall clock.
	Clock clock.Clock
}

// Sent is a stripeexport.Sent on Firestore. It is safe for concurrent use.
type Sent struct {
	c     *firestore.Client
	clock clock.Clock
}

// NewFromClient returns a Sent on c, a client of the Firestore database
// that the process's other Firestore adapters may share.
func NewFromClient(c *firestore.Client, opts Options) *Sent {
	s := &Sent{c: c, clock: opts.Clock}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	return s
}

// Close does nothing: the client's owner closes it.
func (s *Sent) Close() error { return nil }

type record struct {
	ID         string    `firestore:"id"`
	RecordedAt time.Time `firestore:"recorded_at"`
	ExpireAt   time.Time `firestore:"expire_at"`
}

func (s *Sent) doc(id string) *firestore.DocumentRef {
	sum := sha256.Sum256([]byte(id))
	return s.c.Collection(Collection).Doc(hex.EncodeToString(sum[:]))
}

// translate classifies a Firestore error into the kinds the contract
// allows: contention that outlasted the retries is Unavailable, and
// NotFound and AlreadyExists, which it does not allow, are Internal.
func translate(err error, msg string) error {
	k := firestoredb.Translate(err, msg, errs.Unavailable)
	if errs.Is(k, errs.NotFound) || errs.Is(k, errs.Exists) {
		return errs.Wrap(errs.Internal, err, msg)
	}
	return k
}

// unique returns ids without repeats, or errs.Invalid for an empty one.
func unique(ids []string) ([]string, error) {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if id == "" {
			return nil, errs.E(errs.Invalid, "stripe sent record: id %d is empty", i)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// Sent reads the documents of ids and returns those that exist and have
// not expired.
func (s *Sent) Sent(ctx context.Context, ids []string) (map[string]bool, error) {
	ids, err := unique(ids)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	chunks := slices.Collect(slices.Chunk(ids, perCall))
	found := make([][]string, len(chunks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, chunk := range chunks {
		g.Go(func() error {
			refs := make([]*firestore.DocumentRef, len(chunk))
			for j, id := range chunk {
				refs[j] = s.doc(id)
			}
			snaps, err := s.c.GetAll(gctx, refs)
			if err != nil {
				return translate(err, "firestore: read the stripe sent record")
			}
			for j, snap := range snaps {
				if !snap.Exists() {
					continue
				}
				var r record
				if err := snap.DataTo(&r); err != nil {
					return errs.Wrap(errs.Internal, err, "firestore: decode a stripe sent record")
				}
				// A hash collision would need SHA-256 broken; the id
				// check costs nothing all the same.
				if r.ID == chunk[j] && r.ExpireAt.After(now) {
					found[i] = append(found[i], r.ID)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	for _, ids := range found {
		for _, id := range ids {
			out[id] = true
		}
	}
	return out, nil
}

// MarkSent writes the documents of ids, 500 per commit.
func (s *Sent) MarkSent(ctx context.Context, ids []string, retention time.Duration) error {
	ids, err := unique(ids)
	if err != nil {
		return err
	}
	if retention <= 0 {
		return errs.E(errs.Invalid, "stripe sent record: retention %v is not positive", retention)
	}
	now := firestoredb.Time(s.clock.Now())
	expireAt := now.Add(retention)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for chunk := range slices.Chunk(ids, perCall) {
		g.Go(func() error {
			err := s.c.RunTransaction(gctx, func(_ context.Context, tx *firestore.Transaction) error {
				for _, id := range chunk {
					if err := tx.Set(s.doc(id), &record{ID: id, RecordedAt: now, ExpireAt: expireAt}); err != nil {
						return err
					}
				}
				return nil
			}, firestore.MaxAttempts(txAttempts))
			return translate(err, "firestore: write the stripe sent record")
		})
	}
	return g.Wait()
}
