package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/secrets"
	"github.com/keyplane/keyplane/internal/webhook"
)

// ErrNotDue is what Handle returns for a message that arrived before its
// attempt is due, or while another handler is making that attempt: the
// queue redelivers it after its backoff. It is routine, not a failure;
// callers that log handler errors should skip it (errors.Is).
var ErrNotDue = errors.New("notify: the delivery attempt is not due yet; redeliver later")

// Sentinels that Deliveries.UpdateDelivery mutate functions return to write nothing.
var (
	errUnchanged = errors.New("notify: nothing to change")
	errBusy      = errors.New("notify: another handler holds the attempt, or it is not due")
)

// Deliverer makes delivery attempts: its Handle is the handler of the
// notifications subscription. Its fields are its dependencies; Guard,
// Clock, Logger, Schedule and Timeout may be left zero for their defaults
// (the production Guard, the wall clock, slog.Default(), DefaultSchedule
// and DefaultTimeout). Set the fields before the first Handle; a Deliverer
// is safe for concurrent use.
type Deliverer struct {
	Registry   Registry
	Deliveries Deliveries
	Vault      secrets.Vault
	Topic      queue.Topic // where retries are published: the topic Handle's subscription reads
	Guard      *Guard
	Clock      clock.Clock
	Logger     *slog.Logger
	// Schedule is the delay before each retry (see DefaultSchedule); a
	// delivery gets len(Schedule)+1 attempts.
	Schedule []time.Duration
	// Timeout bounds one attempt.
	Timeout time.Duration

	once   sync.Once
	client *http.Client
	lease  time.Duration
}

func (d *Deliverer) init() {
	d.once.Do(func() {
		if d.Guard == nil {
			d.Guard = &Guard{}
		}
		if d.Clock == nil {
			d.Clock = clock.Real{}
		}
		if d.Logger == nil {
			d.Logger = slog.Default()
		}
		if d.Schedule == nil {
			d.Schedule = DefaultSchedule
		}
		if d.Timeout <= 0 {
			d.Timeout = DefaultTimeout
		}
		d.client = d.Guard.Client(d.Timeout)
		d.lease = d.Timeout + time.Minute
	})
}

// ref is what a delivery message carries.
type ref struct {
	id        string
	attempt   int
	notBefore time.Time
}

func parseRef(m queue.Message) (ref, error) {
	id := m.Attributes[attrID]
	n, err := strconv.Atoi(m.Attributes[attrAttempt])
	if id == "" || err != nil || n < 1 {
		return ref{}, fmt.Errorf("attributes %s and %s are missing or malformed", attrID, attrAttempt)
	}
	nb, err := time.Parse(time.RFC3339Nano, m.Attributes[attrNotBefore])
	if err != nil {
		return ref{}, fmt.Errorf("attribute %s is missing or malformed", attrNotBefore)
	}
	return ref{id: id, attempt: n, notBefore: nb}, nil
}

// Handle processes one message of the notifications subscription, with the
// queue's contract: nil acknowledges it, an error asks for a redelivery.
//
// A message asks for attempt n of a delivery, not before a time. Before
// that time Handle returns ErrNotDue without any I/O. Then it reads the
// delivery record, which decides: a delivery that is no longer pending,
// or whose attempt n was superseded, is acknowledged; attempt n is claimed
// (a lease on the record) and made; its outcome is recorded; and, if it
// failed and attempts remain, the message for attempt n+1 is published,
// due after the schedule's delay. After the last attempt fails the record
// is marked Dead with its last status and error. Transient failures of the
// registry, the vault, the store or the queue return their error, so the
// message comes back; a failed HTTP attempt is never such an error.
func (d *Deliverer) Handle(ctx context.Context, m queue.Message) error {
	d.init()
	now := d.Clock.Now()
	r, err := parseRef(m)
	if err != nil {
		d.Logger.WarnContext(ctx, "notification message dropped: not a delivery message", "message_id", m.ID, "error", err)
		return nil
	}
	if now.Before(r.notBefore) {
		return ErrNotDue
	}
	rec, err := d.Deliveries.GetDelivery(ctx, r.id)
	switch {
	case errs.Is(err, errs.NotFound):
		d.Logger.WarnContext(ctx, "notification message dropped: no such delivery", "notification_id", r.id)
		return nil
	case err != nil:
		return err
	case rec.Status != Pending, rec.Attempts > r.attempt:
		return nil // finished, or superseded by a later attempt
	case rec.Attempts == r.attempt && rec.Lease == "":
		// Attempt n failed and its outcome is recorded; make sure the
		// message for the next one exists (publishing it may be what a
		// crash interrupted).
		return d.ensureNext(ctx, rec)
	case rec.Attempts == r.attempt, rec.Attempts == r.attempt-1:
		if rec.Lease != "" && now.Before(rec.LeaseUntil) || rec.Lease == "" && now.Before(rec.NextAttemptAt) {
			return ErrNotDue
		}
		return d.attempt(ctx, rec, r.attempt, now)
	default:
		d.Logger.ErrorContext(ctx, "notification message dropped: it asks for an attempt the record has not reached",
			"notification_id", r.id, "attempt", r.attempt, "record_attempts", rec.Attempts)
		return nil
	}
}

// attempt claims and makes attempt n of rec.
func (d *Deliverer) attempt(ctx context.Context, rec Delivery, n int, now time.Time) error {
	if n > len(d.Schedule)+1 {
		return d.end(ctx, rec.ID, Dead, ReasonExhausted, now)
	}
	w, err := d.Registry.Get(ctx, rec.Owner)
	switch {
	case errs.Is(err, errs.NotFound):
		return d.end(ctx, rec.ID, Canceled, ReasonNoWebhook, now)
	case err != nil:
		return err
	case !w.Subscribed(rec.Type):
		return d.end(ctx, rec.ID, Canceled, ReasonNotSubscribed, now)
	}
	secret, secretErr := d.secret(ctx, w)
	if errs.Is(secretErr, errs.Unavailable) || errs.Is(secretErr, errs.Conflict) {
		return secretErr // transient: try again without spending an attempt
	}
	token := newToken()
	claimed, err := d.Deliveries.UpdateDelivery(ctx, rec.ID, func(cur *Delivery) error {
		switch {
		case cur.Status != Pending:
			return errUnchanged
		case cur.Lease != "" && now.Before(cur.LeaseUntil):
			return errBusy
		case cur.Attempts == n && cur.Lease != "":
			// The handler that claimed attempt n stopped without recording
			// an outcome: take it over.
		case cur.Attempts == n-1 && (cur.Lease != "" || !now.Before(cur.NextAttemptAt)):
		case cur.Attempts == n-1:
			return errBusy
		default:
			return errUnchanged
		}
		cur.Attempts, cur.Lease, cur.LeaseUntil = n, token, now.Add(d.lease)
		cur.LastAttemptAt, cur.UpdatedAt = now, now
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return nil
	case errors.Is(err, errBusy):
		return ErrNotDue
	case err != nil:
		return err
	}
	var res result
	if secretErr != nil {
		res = result{problem: "the owner's signing secret is not usable: " + secretErr.Error()}
	} else {
		res = d.post(ctx, w.URL, claimed, secret)
	}
	if !res.ok() && ctx.Err() != nil {
		// The handler is being stopped, which is not the receiver's
		// fault: give the attempt back.
		d.release(context.WithoutCancel(ctx), claimed.ID, token, n)
		return ctx.Err()
	}
	return d.record(context.WithoutCancel(ctx), claimed, token, n, res)
}

// result is the outcome of one POST.
type result struct {
	status  int    // HTTP status, 0 without a response
	problem string // why it failed; "" for a 2xx
}

func (r result) ok() bool { return r.problem == "" }

// maxProblem bounds the stored error text of an attempt.
const maxProblem = 500

// post makes one signed POST of rec's payload to url.
func (d *Deliverer) post(ctx context.Context, url string, rec Delivery, secret webhook.Secret) result {
	if _, err := d.Guard.ParseURL(url); err != nil {
		return result{problem: "the webhook URL is not acceptable any more: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(rec.Payload))
	if err != nil {
		return result{problem: "building the request: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keyplane-webhooks/1")
	secret.SetHeaders(req.Header, rec.ID, d.Clock.Now(), rec.Payload) // the timestamp is this attempt's
	resp, err := d.client.Do(req)
	if err != nil {
		var refused *refusedError
		switch {
		case errors.As(err, &refused):
			return result{problem: "refused: the host " + refused.detail}
		case isTimeout(err):
			return result{problem: fmt.Sprintf("no answer within %s", d.Timeout)}
		}
		return result{problem: truncate("request failed: "+err.Error(), maxProblem)}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return result{status: resp.StatusCode, problem: "HTTP " + strconv.Itoa(resp.StatusCode)}
	}
	return result{status: resp.StatusCode}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &t) && t.Timeout()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// record stores the outcome of attempt n and publishes the next attempt's
// message when one is due.
func (d *Deliverer) record(ctx context.Context, rec Delivery, token string, n int, res result) error {
	now := d.Clock.Now()
	final, err := d.Deliveries.UpdateDelivery(ctx, rec.ID, func(cur *Delivery) error {
		if cur.Lease != token {
			return errUnchanged // our lease expired and another handler took the attempt over
		}
		cur.Lease, cur.LeaseUntil, cur.UpdatedAt = "", time.Time{}, now
		cur.LastStatus, cur.LastError = res.status, res.problem
		switch {
		case res.ok():
			cur.Status = Delivered
		case n > len(d.Schedule):
			cur.Status, cur.Reason = Dead, ReasonExhausted
		default:
			cur.NextAttemptAt = now.Add(d.Schedule[n-1])
		}
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return nil
	case err != nil:
		// The message comes back; once the lease expires the attempt is
		// made again, with the same webhook-id.
		return err
	}
	attrs := []any{"notification_id", final.ID, "owner", final.Owner, "type", final.Type, "attempt", n, "status", res.status}
	switch final.Status {
	case Delivered:
		d.Logger.InfoContext(ctx, "notification delivered", attrs...)
		return nil
	case Dead:
		d.Logger.ErrorContext(ctx, "notification dead-lettered: its last attempt failed",
			append(attrs, "reason", final.Reason, "error", res.problem)...)
		return nil
	}
	d.Logger.WarnContext(ctx, "notification attempt failed; retrying",
		append(attrs, "error", res.problem, "next_attempt_at", final.NextAttemptAt)...)
	return d.ensureNext(ctx, final)
}

// ensureNext makes sure the message for the attempt after rec's last one
// is published.
func (d *Deliverer) ensureNext(ctx context.Context, rec Delivery) error {
	n := rec.Attempts + 1
	if n > len(d.Schedule)+1 {
		return d.end(ctx, rec.ID, Dead, ReasonExhausted, d.Clock.Now())
	}
	if rec.Enqueued >= n {
		return nil
	}
	return enqueue(ctx, d.Topic, d.Deliveries, d.Logger, d.Clock.Now(), rec, n)
}

// release gives back a claimed attempt that was not made.
func (d *Deliverer) release(ctx context.Context, id, token string, n int) {
	_, err := d.Deliveries.UpdateDelivery(ctx, id, func(cur *Delivery) error {
		if cur.Lease != token {
			return errUnchanged
		}
		cur.Attempts, cur.Lease, cur.LeaseUntil = n-1, "", time.Time{}
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		d.Logger.WarnContext(ctx, "releasing an interrupted attempt failed; it is retaken when its lease expires",
			"notification_id", id, "error", err)
	}
}

// end finishes a pending delivery that is not in flight without another
// attempt.
func (d *Deliverer) end(ctx context.Context, id string, status Status, reason string, now time.Time) error {
	final, err := d.Deliveries.UpdateDelivery(ctx, id, func(cur *Delivery) error {
		switch {
		case cur.Status != Pending:
			return errUnchanged
		case cur.Lease != "" && now.Before(cur.LeaseUntil):
			return errBusy
		}
		cur.Status, cur.Reason, cur.Lease, cur.LeaseUntil, cur.UpdatedAt = status, reason, "", time.Time{}, now
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		return nil
	case errors.Is(err, errBusy):
		return ErrNotDue
	case err != nil:
		return err
	}
	level := slog.LevelInfo
	if status == Dead {
		level = slog.LevelError
	}
	d.Logger.Log(ctx, level, "notification ended without delivery", "notification_id", id, "owner", final.Owner,
		"type", final.Type, "status", string(status), "reason", reason)
	return nil
}

// HandleDeadLetter handles a message the queue dead-lettered (its
// subscription's maximum deliveries passed, e.g. because the store was
// unreachable for hours): the delivery it asked for is marked Dead with
// ReasonTransport, unless it has moved on since. Only transient store
// errors are returned.
func (d *Deliverer) HandleDeadLetter(ctx context.Context, m queue.Message) error {
	d.init()
	r, err := parseRef(m)
	if err != nil {
		d.Logger.WarnContext(ctx, "dead-lettered notification message dropped: not a delivery message", "message_id", m.ID, "error", err)
		return nil
	}
	now := d.Clock.Now()
	detail := "the queue gave up on the message for attempt " + strconv.Itoa(r.attempt)
	if c := m.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"]; c != "" {
		detail += " after " + c + " deliveries"
	}
	final, err := d.Deliveries.UpdateDelivery(ctx, r.id, func(cur *Delivery) error {
		if cur.Status != Pending || cur.Attempts > r.attempt || cur.Enqueued > r.attempt {
			return errUnchanged // the delivery moved on without this message
		}
		cur.Status, cur.Reason, cur.LastError = Dead, ReasonTransport, detail
		cur.Lease, cur.LeaseUntil, cur.UpdatedAt = "", time.Time{}, now
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged), errs.Is(err, errs.NotFound):
		return nil
	case err != nil:
		return err
	}
	d.Logger.ErrorContext(ctx, "notification dead-lettered by the queue", "notification_id", final.ID, "owner", final.Owner,
		"type", final.Type, "attempt", r.attempt, "reason", ReasonTransport, "error", detail)
	return nil
}

// secret returns the signing secret of w: the vault version that
// w.SecretFingerprint names (normally the latest).
func (d *Deliverer) secret(ctx context.Context, w OwnerWebhook) (webhook.Secret, error) {
	name := SecretName(w.Owner)
	latest, err := d.Vault.Secret(ctx, name)
	if err != nil {
		return nil, err
	}
	pick := latest
	if w.SecretFingerprint != "" && Fingerprint(string(latest)) != w.SecretFingerprint {
		versions, err := d.Vault.SecretVersions(ctx, name)
		if err != nil {
			return nil, err
		}
		pick = nil
		for _, v := range versions {
			if Fingerprint(string(v)) == w.SecretFingerprint {
				pick = v
				break
			}
		}
		if pick == nil {
			return nil, errs.E(errs.NotFound, "the vault has no enabled version of %s matching the webhook", name)
		}
	}
	s, err := webhook.ParseSecret(string(pick))
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "the vault's "+name+" is not a whsec_ secret")
	}
	return s, nil
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
