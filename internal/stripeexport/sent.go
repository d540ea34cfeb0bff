package stripeexport

import (
	"context"
	"time"

	"github.com/keyplane/keyplane/internal/usage"
)

// Sent is the durable record of the meter events Stripe has accepted, by
// identifier. The exporter asks it before sending and tells it after
// Stripe answered 2xx, so that a usage message delivered again later than
// Stripe's own 24-hour identifier dedupe, or to another process, bills
// nothing twice. sqlitesent and firestoresent are its adapters; senttest
// is their conformance suite.
type Sent interface {
	// Sent returns the set of ids that are recorded and whose retention
	// has not passed; the others are absent from it. ids may repeat and
	// may be of any number (adapters read them in batches). Errors:
	// errs.Invalid for an empty id, errs.Unavailable for a backend that
	// did not answer (retry), errs.Internal otherwise.
	Sent(ctx context.Context, ids []string) (map[string]bool, error)
	// MarkSent records ids as accepted by Stripe, each kept for at least
	// retention from now. Recording an id again is not an error and
	// renews it: it is then kept for retention from the latest call. On
	// an error some of the ids may be recorded and others not: the
	// caller records them all again. Adapters forget records whose
	// retention has passed, in bounded amounts (SQLite) or through a TTL
	// policy (Firestore). Errors: errs.Invalid for an empty id or a
	// retention that is not positive, errs.Unavailable for a backend that
	// did not answer (retry), errs.Internal otherwise.
	MarkSent(ctx context.Context, ids []string, retention time.Duration) error
}

// SentRetention is how long the exporter keeps the record of a meter
// event Stripe accepted: usage.Retention, the time the ledger remembers a
// counted event id. An event delivered again after that is older than
// usage.MaxAge, so both the ledger and the exporter drop it as invalid
// (and Stripe refuses timestamps over 35 days old): every redelivery the
// ledger would still accept finds its record.
const SentRetention = usage.Retention
