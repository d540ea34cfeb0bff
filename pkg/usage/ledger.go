package usage

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/pkg/plan"
)

// Event is one usage event as gateways report it (API.md, "Usage webhook").
type Event struct {
	ID       string    `json:"id"`
	KeyID    string    `json:"key_id"`
	Time     time.Time `json:"time"`
	Requests int64     `json:"requests"`
	Units    int64     `json:"units"`
	Bytes    int64     `json:"bytes"`
	Feature  string    `json:"feature,omitempty"`
}

// Counted is an event ready to be counted: validated, with the owner of
// its key (counters are kept per key and listed per owner).
type Counted struct {
	Event
	Owner string
}

// Totals are the amounts counted in one window.
type Totals struct {
	Requests int64
	Units    int64
	Bytes    int64
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.Requests += o.Requests
	t.Units += o.Units
	t.Bytes += o.Bytes
}

// Get returns the total of a metric ("requests", "units", "bytes").
func (t Totals) Get(metric string) int64 {
	switch metric {
	case "requests":
		return t.Requests
	case "units":
		return t.Units
	case "bytes":
		return t.Bytes
	}
	return 0
}

// KeyTotals are one key's totals in a window, for the billing export.
type KeyTotals struct {
	KeyID string
	Owner string
	Totals
}

// DeadLetter records a message or event that will never be counted, and
// why.
type DeadLetter struct {
	ID      string // the event id, or the transport message id when the message did not decode
	Time    time.Time
	Reason  string // e.g. "unknown_key", "invalid_event", "undecodable_message"
	Detail  string // a safe, human-readable explanation
	Payload []byte // the raw event or message, at most 64 KiB
}

// Ledger stores usage counters with exactly-once semantics per event id.
// Methods return errs kinds: Invalid, Unavailable (transient: the caller
// retries), Internal.
type Ledger interface {
	// Count adds each event that was not counted before to the minute, day
	// and month (UTC) counters of its key, and remembers its id until
	// retention has passed. An event and its counter increments are
	// written atomically: if Count fails, an event it did not count is not
	// marked counted (a failed write never burns an id), and a retry counts
	// exactly the events not yet counted. It returns how many events were
	// newly counted. Events in one call may repeat ids and belong to many
	// keys; Count is safe to call concurrently with overlapping events.
	Count(ctx context.Context, events []Counted, retention time.Duration) (counted int, err error)
	// Totals returns key id's totals in the window of kind w starting at
	// start (zero if nothing was counted).
	Totals(ctx context.Context, keyID string, w plan.Window, start time.Time) (Totals, error)
	// OwnerTotals returns one page of per-key totals of owner's keys in the
	// window, ordered by key id, and the next page token ("" on the last).
	// owner "" lists every owner's keys.
	OwnerTotals(ctx context.Context, owner string, w plan.Window, start time.Time, pageSize int, pageToken string) ([]KeyTotals, string, error)
	// ActiveKeys returns one page of ids of keys with usage in the window,
	// ordered by key id (for the sweep: it reads only keys with usage).
	ActiveKeys(ctx context.Context, w plan.Window, start time.Time, pageSize int, pageToken string) ([]string, string, error)
	// AddDeadLetter records a dead letter, its payload cut to 64 KiB.
	// Recording the same ID twice keeps the first.
	AddDeadLetter(ctx context.Context, d DeadLetter) error
	// ListDeadLetters returns dead letters, newest first.
	ListDeadLetters(ctx context.Context, pageSize int, pageToken string) ([]DeadLetter, string, error)
	// Close releases resources.
	Close() error
}
