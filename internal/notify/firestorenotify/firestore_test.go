package firestorenotify

import (
	"testing"

	"github.com/keyplane/keyplane/internal/notify"
	"github.com/keyplane/keyplane/internal/notify/notifytest"
	"github.com/keyplane/keyplane/internal/testenv"
)

// TestConformance runs the suite on the emulator, each subtest in a project
// of its own so that it starts from an empty database.
func TestConformance(t *testing.T) {
	testenv.Firestore(t)
	notifytest.Run(t, func(t *testing.T) notify.Store {
		return NewFromClient(testenv.FirestoreClient(t))
	})
}

func TestDocIDs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"acct_1", "acct_1"},
		{"ntf_0123", "ntf_0123"},
		{".", "~2e"},
		{"..", "~2e2e"},
		{"__x__", "~5f5f785f5f"},
		{"a/b", "~612f62"},
		{"", "~"},
		{"~61", "~7e3631"},
	} {
		if got := docID(tc.in); got != tc.want {
			t.Errorf("docID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
