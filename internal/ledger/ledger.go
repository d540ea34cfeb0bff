package ledger

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/usage"
)

// Counted is an event ready to be counted: validated, with the owner of
// its key (counters are kept per key and listed per owner).
type Counted struct {
	usage.Event
	Owner string
	// Cost is the event's cost in micro-units of its owner's plan's
	// currency (plan.Plan.Cost), computed once, when the event is counted.
	Cost int64
}

// Totals are the amounts counted in one window.
type Totals struct {
	Requests int64
	Units    int64
	Bytes    int64
	Cost     int64 // micro-units of the owner's currency
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.Requests += o.Requests
	t.Units += o.Units
	t.Bytes += o.Bytes
	t.Cost += o.Cost
}

// Sub subtracts o, a part of t, from t.
func (t *Totals) Sub(o Totals) {
	t.Requests -= o.Requests
	t.Units -= o.Units
	t.Bytes -= o.Bytes
	t.Cost -= o.Cost
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

// Usage is an owner's totals in one window, and the part of them that
// events naming a feature reported, by feature. Usage reported without a
// feature is Totals minus the sum of Features.
type Usage struct {
	Totals
	Features map[string]Totals // nil when no event named a feature
}

// Point is an owner's usage in the window starting at Start.
type Point struct {
	Start time.Time
	Usage
}

// KeyPoint is one key's totals in the window starting at Start.
type KeyPoint struct {
	KeyID string
	Start time.Time
	Totals
}

// Adjustment is the part of one key's usage in a month that was counted
// after the month had ended (a late event, up to usage.MaxAge old), in
// the month starting at CountedIn. A key's totals in the month include
// its adjustments; its totals minus them are what had been counted when
// the month closed, which no later event changes.
type Adjustment struct {
	KeyID     string
	Owner     string
	CountedIn time.Time // the start of the month in which it was counted
	Usage               // Totals and, of events naming one, by feature
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
	// Count adds each event that was not counted before to the minute,
	// hour, day and month (UTC) counters of its key and, when the event
	// has an owner, of its owner (and there of its feature, if it names
	// one), and remembers its id
	// until retention has passed. An event and its counter increments are
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
	// OwnerUsage returns owner's usage in the window of kind w containing
	// start (zero if nothing was counted).
	OwnerUsage(ctx context.Context, owner string, w plan.Window, start time.Time) (Usage, error)
	// OwnerSeries returns owner's usage in each window of kind w that
	// starts in [from, to) and has usage, ordered by start. The range may
	// span at most MaxSeriesWindows windows (CheckSeries).
	OwnerSeries(ctx context.Context, owner string, w plan.Window, from, to time.Time) ([]Point, error)
	// KeySeries returns the totals of each of owner's keys in each window
	// of kind w that starts in [from, to) and in which the key has usage,
	// ordered by start and then key id: at most limit points (1 to
	// MaxSeriesPoints), and whether there are more. The range is bounded
	// as OwnerSeries's is.
	KeySeries(ctx context.Context, owner string, w plan.Window, from, to time.Time, limit int) (points []KeyPoint, more bool, err error)
	// Adjustments returns one page of the adjustments of the month
	// starting at month (a month start; other times are rounded down), of
	// owner's keys unless owner is "", ordered by key id and then
	// CountedIn. Count records one for each event it counts after the
	// end of the event's month, by its own clock. pageToken may also be
	// one of OwnerTotals over the month: the page then starts after that
	// page's last key, so that a page of key totals and the adjustments
	// of its keys are read from the same position.
	Adjustments(ctx context.Context, owner string, month time.Time, pageSize int, pageToken string) ([]Adjustment, string, error)
	// ActiveOwners returns one page of the owners with usage in the
	// window, ordered by owner id (for the sweep's owner quotas).
	ActiveOwners(ctx context.Context, w plan.Window, start time.Time, pageSize int, pageToken string) ([]string, string, error)
	// AddDeadLetter records a dead letter, its payload cut to 64 KiB.
	// Recording the same ID twice keeps the first.
	AddDeadLetter(ctx context.Context, d DeadLetter) error
	// ListDeadLetters returns dead letters, newest first.
	ListDeadLetters(ctx context.Context, pageSize int, pageToken string) ([]DeadLetter, string, error)
	// AddClientIPs records that each key in ips (key id → client IPs) was
	// used from those IPs on the UTC day starting at day (a day start;
	// other times are rounded down). Recording an IP again is a no-op.
	// Records are kept at least ClientIPRetention after their day.
	AddClientIPs(ctx context.Context, day time.Time, ips map[string][]string) error
	// ClientIPs returns how many distinct IPs key id was recorded as used
	// from on the UTC day starting at day, and up to sample of them (sorted).
	ClientIPs(ctx context.Context, keyID string, day time.Time, sample int) (count int, ips []string, err error)
	// Close releases resources.
	Close() error
}

// ClientIPRetention is how long after its day a key's client IPs are kept
// at least: long enough for a sweep to look back a week.
const ClientIPRetention = 8 * 24 * time.Hour

// Bounds of one AddClientIPs call.
const (
	MaxClientIPKeys    = 1000 // keys per call
	MaxClientIPsPerKey = 1000 // IPs per key per call
)

// MaxSeriesWindows bounds how many windows of each kind one series query
// spans: a day of minutes, a month of hours, a year of days, ten years of
// months (like the bucket limits of OpenAI's usage API, a little wider).
var MaxSeriesWindows = map[plan.Window]int{
	plan.Minute: 1440,
	plan.Hour:   744,
	plan.Day:    366,
	plan.Month:  120,
}

// MaxSeriesPoints bounds the points of one KeySeries call.
const MaxSeriesPoints = 50_000

// CheckSeries checks the range of a series query: from before to, both at
// window starts of kind w (other times are errors, so that no window is
// half in the range), and at most MaxSeriesWindows[w] windows apart.
// Errors are errs.Invalid and say what to fix.
func CheckSeries(w plan.Window, from, to time.Time) error {
	if err := CheckWindow(w); err != nil {
		return err
	}
	if s, _ := w.Bounds(from); !s.Equal(from) {
		return errs.E(errs.Invalid, "start %s is not the start of a %s", from.UTC().Format(time.RFC3339), w)
	}
	if s, _ := w.Bounds(to); !s.Equal(to) {
		return errs.E(errs.Invalid, "end %s is not the start of a %s", to.UTC().Format(time.RFC3339), w)
	}
	if !from.Before(to) {
		return errs.E(errs.Invalid, "start must be before end")
	}
	n, max := 0, MaxSeriesWindows[w]
	for t := from; t.Before(to); _, t = w.Bounds(t) {
		if n++; n > max {
			return errs.E(errs.Invalid, "a series of %s buckets spans at most %d of them; narrow start and end or use a coarser bucket", w, max)
		}
	}
	return nil
}

// CheckSeriesLimit checks the limit of a KeySeries call.
func CheckSeriesLimit(n int) error {
	if n < 1 || n > MaxSeriesPoints {
		return errs.E(errs.Invalid, "series limit must be 1-%d, got %d", MaxSeriesPoints, n)
	}
	return nil
}

// AddFeature adds t to the totals of feature f in u.
func (u *Usage) AddFeature(f string, t Totals) {
	if u.Features == nil {
		u.Features = map[string]Totals{}
	}
	ft := u.Features[f]
	ft.Add(t)
	u.Features[f] = ft
}

// MaxPageSize bounds the page size of the ledger's listing calls.
const MaxPageSize = 1000

// Late reports whether an event at t counted at now is counted after its
// month ended, and if so the start of the month it is counted in.
func Late(t, now time.Time) (countedIn time.Time, late bool) {
	_, end := plan.Month.Bounds(t)
	if now.Before(end) {
		return time.Time{}, false
	}
	countedIn, _ = plan.Month.Bounds(now)
	return countedIn, true
}

// CheckCount checks the arguments of Ledger.Count that every adapter checks
// alike, before anything is written, so that an invalid batch counts
// nothing. An adapter checks what else its key ids need itself. Errors are
// errs.Invalid.
func CheckCount(events []Counted, retention time.Duration) error {
	if retention <= 0 {
		return errs.E(errs.Invalid, "retention must be positive, got %v", retention)
	}
	for i, e := range events {
		switch {
		case e.ID == "":
			return errs.E(errs.Invalid, "event %d: the id is empty", i)
		case e.KeyID == "":
			return errs.E(errs.Invalid, "event %s: the key id is empty", e.ID)
		case e.Time.IsZero():
			return errs.E(errs.Invalid, "event %s: the time is not set", e.ID)
		case e.Requests < 0 || e.Units < 0 || e.Bytes < 0 || e.Cost < 0:
			return errs.E(errs.Invalid, "event %s: requests, units, bytes and cost must be >= 0", e.ID)
		}
	}
	return nil
}

// CheckWindow checks a window argument.
func CheckWindow(w plan.Window) error {
	if _, err := plan.ParseWindow(string(w)); err != nil {
		return errs.Wrap(errs.Invalid, err, err.Error())
	}
	return nil
}

// CheckPageSize checks the page size of a listing call.
func CheckPageSize(n int) error {
	if n < 1 || n > MaxPageSize {
		return errs.E(errs.Invalid, "page size must be 1-%d, got %d", MaxPageSize, n)
	}
	return nil
}

// CheckDeadLetter checks the argument of Ledger.AddDeadLetter.
func CheckDeadLetter(d DeadLetter) error {
	if d.ID == "" {
		return errs.E(errs.Invalid, "a dead letter needs an id")
	}
	return nil
}

// CheckClientIPsQuery validates the arguments of Ledger.ClientIPs, for
// the adapters.
func CheckClientIPsQuery(keyID string, day time.Time, sample int) error {
	switch {
	case keyID == "":
		return errs.E(errs.Invalid, "client IPs: the key id is empty")
	case day.IsZero():
		return errs.E(errs.Invalid, "client IPs: the day is not set")
	case sample < 0:
		return errs.E(errs.Invalid, "client IPs: the sample size must be >= 0, got %d", sample)
	}
	return nil
}

// CleanClientIPs checks the arguments of AddClientIPs that every adapter
// checks alike, and returns ips with each IP in canonical form
// (netip.Addr.String(): "2001:DB8::1" is "2001:db8::1"), sorted and
// without repeats, and keys without IPs left out. It rejects a zero day,
// an empty key id, more than MaxClientIPKeys keys or MaxClientIPsPerKey IPs
// of a key, and an IP that netip.ParseAddr rejects or that has a zone
// ("fe80::1%eth0"). An adapter checks what else its key ids need itself,
// before anything is written. Errors are errs.Invalid.
func CleanClientIPs(day time.Time, ips map[string][]string) (map[string][]string, error) {
	if day.IsZero() {
		return nil, errs.E(errs.Invalid, "client IPs: the day is not set")
	}
	if len(ips) > MaxClientIPKeys {
		return nil, errs.E(errs.Invalid, "client IPs: at most %d keys per call, got %d", MaxClientIPKeys, len(ips))
	}
	out := make(map[string][]string, len(ips))
	for _, id := range slices.Sorted(maps.Keys(ips)) {
		list := ips[id]
		if id == "" {
			return nil, errs.E(errs.Invalid, "client IPs: a key id is empty")
		}
		if len(list) > MaxClientIPsPerKey {
			return nil, errs.E(errs.Invalid, "client IPs of key %.64q: at most %d IPs per key per call, got %d", id, MaxClientIPsPerKey, len(list))
		}
		if len(list) == 0 {
			continue
		}
		clean := make([]string, len(list))
		for i, ip := range list {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return nil, errs.Wrap(errs.Invalid, err, fmt.Sprintf("client IPs of key %.64q: %.64q is not an IP address", id, ip))
			}
			if a.Zone() != "" {
				return nil, errs.E(errs.Invalid, "client IPs of key %.64q: %.64q has a zone, which a client IP never has", id, ip)
			}
			clean[i] = a.String()
		}
		slices.Sort(clean)
		out[id] = slices.Compact(clean)
	}
	return out, nil
}
