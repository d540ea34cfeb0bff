package leaks_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/leaks"
	"github.com/keyplane/keyplane/internal/store"
	"github.com/keyplane/keyplane/internal/store/firestorestore"
	"github.com/keyplane/keyplane/internal/testenv"
)

// BenchmarkFullReport handles a report of MaxEntries tokens on SQLite, 50
// of them our keys (disabled on the first run, unchanged on the replays
// that follow), the rest well-formed foreign tokens: what a replayed
// large GitHub report costs. The first, writing run is reported apart.
// BenchmarkFullReportOneWorker is the same report looked up one token at
// a time: the baseline of DefaultWorkers' concurrency.
// The Firestore variants run on the emulator, where each lookup is a
// round trip.
func BenchmarkFullReport(b *testing.B)          { benchFullReport(b, nil, leaks.DefaultWorkers) }
func BenchmarkFullReportOneWorker(b *testing.B) { benchFullReport(b, nil, 1) }
func BenchmarkFullReportFirestore(b *testing.B) {
	benchFullReport(b, firestorestore.NewFromClient(testenv.FirestoreClient(b)), leaks.DefaultWorkers)
}
func BenchmarkFullReportFirestoreOneWorker(b *testing.B) {
	benchFullReport(b, firestorestore.NewFromClient(testenv.FirestoreClient(b)), 1)
}

func benchFullReport(b *testing.B, st store.Store, workers int) {
	e := newLeakEnvTB(b, st, keys.LeakDisable)
	e.svc.Workers = workers
	ctx := context.Background()
	var entries []leaks.Entry
	for i := range leaks.MaxEntries {
		if i%20 == 0 {
			c, err := e.keys.Create(ctx, "admin", keys.CreateRequest{Owner: fmt.Sprintf("acct_%d", i)}, "")
			if err != nil {
				b.Fatal(err)
			}
			entries = append(entries, leaks.Entry{Token: c.Secret, Type: leaks.TokenType})
			continue
		}
		k, _ := apikey.Generate("kp_test")
		entries = append(entries, leaks.Entry{Token: k, Type: leaks.TokenType})
	}
	if _, err := e.svc.Handle(ctx, "github", entries); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.svc.Handle(ctx, "github", entries); err != nil {
			b.Fatal(err)
		}
	}
}
