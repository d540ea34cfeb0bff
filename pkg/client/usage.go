package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/webhook"
)

// The reporter applies the usage webhook's own rules (internal/usage) to
// each event, with a stricter time window: keyplane accepts events up to
// usage.MaxAge old and usage.MaxSkew ahead of its clock, the reporter an
// hour younger and a minute ahead, so that an event is still accepted when
// its batch is sent, retries included, and a clock a little off keyplane's
// does not get a whole batch refused.
const (
	usageMaxAge   = usage.MaxAge - time.Hour
	usageMaxAhead = time.Minute
)

// Errors of [UsageReporter.Report].
var (
	// ErrInvalidUsageEvent wraps the reason an event was refused: it
	// breaks the webhook's contract, and keyplane would refuse the whole
	// batch holding it. The event is counted in UsageStats.Invalid.
	ErrInvalidUsageEvent = errors.New("keyplane: invalid usage event")
	// ErrUsageQueueFull means the event was dropped because the queue
	// is full (keyplane unreachable or slower than the traffic). It is
	// counted in UsageStats.Dropped.
	ErrUsageQueueFull = errors.New("keyplane: the usage queue is full; the event was dropped")
	// ErrReporterClosed is returned after Close. Reported events are
	// counted in UsageStats.Dropped.
	ErrReporterClosed = errors.New("keyplane: the usage reporter is closed")
)

// UsageEvent is one metered use of a key, in the usage webhook's form.
type UsageEvent struct {
	// ID makes the event idempotent: keyplane counts each id once, however
	// often it is sent. 1–128 bytes of UTF-8; Report generates a random
	// one ("evt_" and 32 hex digits) when it is empty.
	ID string `json:"id"`
	// KeyID is the key that was used: [Decision].KeyID.
	KeyID string `json:"key_id"`
	// Time is when the key was used; zero means now. It must be at most
	// 35 days old (less an hour, so that it is still accepted when its
	// batch is sent) and at most a minute ahead of the reporter's clock.
	Time time.Time `json:"time"`
	// Requests is how many requests the event counts; nil means 1, the
	// webhook's default. Ptr[int64](0) reports units or bytes alone.
	Requests *int64 `json:"requests,omitempty"`
	// Units is the cost in the plan's units (tokens, credits, …); >= 0.
	Units int64 `json:"units,omitempty"`
	// Bytes is the data transferred; >= 0.
	Bytes int64 `json:"bytes,omitempty"`
	// Feature names what was used, for reporting; at most 64 bytes.
	Feature string `json:"feature,omitempty"`
}

// RetryPolicy says how the reporter retries a batch that failed for a
// transient reason (a network error, 408, 429 or 5xx); zero fields mean the
// defaults. Other answers are not retried. The n-th retry waits between
// half and all of min(MinBackoff·2ⁿ⁻¹, MaxBackoff), or longer if the answer's
// Retry-After asks for it, up to MaxBackoff.
type RetryPolicy struct {
	MaxAttempts int           // attempts in all, including the first; default 5, 1 disables retries
	MinBackoff  time.Duration // default 1s
	MaxBackoff  time.Duration // default 30s
}

// UsageReporterOptions configure a UsageReporter; nil or zero fields mean
// the defaults.
type UsageReporterOptions struct {
	// MaxBatch is the most events sent in one webhook request: a batch is
	// sent as soon as it holds that many. Default 500, at most 1000. A
	// batch is also split when its body would exceed the webhook's 1 MiB.
	MaxBatch int
	// FlushInterval is the longest an event waits in a partial batch.
	// Default 1s.
	FlushInterval time.Duration
	// QueueSize is how many events may wait to be sent. When the queue is
	// full, Report drops the event rather than block the request that
	// reports it. Default 10,000.
	QueueSize int
	// HTTPClient sends the batches. Default: an http.Client with
	// DefaultTimeout and a keep-alive transport.
	HTTPClient *http.Client
	// Logger receives rejected batches (Error), retries (Warn) and
	// batches given up on (Error). Default slog.Default().
	Logger *slog.Logger
	// Clock returns the time of events reported without one, and of the
	// webhook-timestamp header. Default time.Now.
	Clock func() time.Time
	// Retry is the retry policy of a batch.
	Retry RetryPolicy
}

// UsageStats counts a reporter's events since it was created. Events
// reported and not yet sent are in none of the counts.
type UsageStats struct {
	Sent    int64 // accepted by keyplane (202)
	Dropped int64 // not queued: the queue was full or the reporter closed
	Failed  int64 // given up on: refused (4xx other than 408 and 429), retries exhausted, or Close's deadline passed
	Invalid int64 // refused by Report: they break the webhook's contract
}

// UsageReporter sends usage events to keyplane's usage webhook in batches,
// from a background goroutine, signed with the webhook secret (Standard
// Webhooks). Report never blocks. A batch keeps its webhook-id and its
// events' ids across retries, so keyplane counts each event once even when
// an answer is lost and the batch is sent again.
//
// It is safe for concurrent use. Create it once per process with
// [NewUsageReporter], and Close it on shutdown to send what is queued.
type UsageReporter struct {
	url    string
	secret webhook.Secret
	opt    UsageReporterOptions
	log    *slog.Logger
	sleep  func(context.Context, time.Duration) error // waits between attempts; replaced in tests

	// mu orders Report's sends before Close: once closed is set no event
	// enters the queue, so the final drain sees every queued event.
	mu     sync.RWMutex
	closed bool

	queue    chan UsageEvent
	flushes  chan chan error
	stop     chan struct{}      // closed by Close
	done     chan struct{}      // closed when the worker has returned
	cancel   context.CancelFunc // aborts the worker's requests and waits
	closeErr error              // the final drain's; read after done

	sent, dropped, failed, invalid atomic.Int64
}

// NewUsageReporter returns a UsageReporter that posts to webhookURL, the
// usage webhook of keyplane (https://<keyplane>/v1/usage), signing with
// secret, the usage webhook secret ("whsec_<base64>"). It starts the
// goroutine that sends the batches; Close stops it.
func NewUsageReporter(webhookURL, secret string, opts *UsageReporterOptions) (*UsageReporter, error) {
	return newUsageReporter(webhookURL, secret, opts, sleepContext)
}

func newUsageReporter(webhookURL, secret string, opts *UsageReporterOptions, sleep func(context.Context, time.Duration) error) (*UsageReporter, error) {
	// The URL is not quoted in errors: it may hold credentials.
	u, err := url.Parse(webhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return nil, errors.New("keyplane: the usage webhook URL must be an absolute http or https URL, like https://keyplane.example.com/v1/usage")
	}
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		return nil, fmt.Errorf("keyplane: the usage webhook secret: %w", err)
	}
	var o UsageReporterOptions
	if opts != nil {
		o = *opts
	}
	if o.MaxBatch < 0 || o.MaxBatch > usage.MaxBatch || o.FlushInterval < 0 || o.QueueSize < 0 ||
		o.Retry.MaxAttempts < 0 || o.Retry.MinBackoff < 0 || o.Retry.MaxBackoff < 0 {
		return nil, fmt.Errorf("keyplane: usage reporter options: MaxBatch must be 0-%d, and no option may be negative", usage.MaxBatch)
	}
	o.MaxBatch = orDefault(o.MaxBatch, 500)
	o.FlushInterval = orDefault(o.FlushInterval, time.Second)
	o.QueueSize = orDefault(o.QueueSize, 10_000)
	o.Retry.MaxAttempts = orDefault(o.Retry.MaxAttempts, 5)
	o.Retry.MinBackoff = orDefault(o.Retry.MinBackoff, time.Second)
	o.Retry.MaxBackoff = max(orDefault(o.Retry.MaxBackoff, 30*time.Second), o.Retry.MinBackoff)
	if o.HTTPClient == nil {
		o.HTTPClient = defaultHTTPClient()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &UsageReporter{
		url: u.String(), secret: key, opt: o, log: o.Logger, sleep: sleep,
		queue:   make(chan UsageEvent, o.QueueSize),
		flushes: make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		cancel:  cancel,
	}
	go r.run(ctx)
	return r, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// newID returns prefix and 16 random bytes in hex.
func newID(prefix string) string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return prefix + hex.EncodeToString(b[:])
}

// Report queues ev to be sent, and returns at once. It fills in a
// missing ID and Time, and refuses an event that breaks the webhook's
// contract (ErrInvalidUsageEvent), since keyplane would refuse the whole
// batch holding it. When the queue is full it drops the event
// (ErrUsageQueueFull); after Close it returns ErrReporterClosed. Callers on
// a request path may ignore the error: Stats counts every outcome.
func (r *UsageReporter) Report(ev UsageEvent) error {
	now := r.opt.Clock()
	if ev.ID == "" {
		ev.ID = newID("evt_")
	}
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Time = ev.Time.UTC()
	if ev.Requests != nil { // the caller's pointer is not shared with the worker
		n := *ev.Requests
		ev.Requests = &n
	}
	if err := ev.check(now); err != nil {
		r.invalid.Add(1)
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.dropped.Add(1)
		return ErrReporterClosed
	}
	select {
	case r.queue <- ev:
		return nil
	default:
		r.dropped.Add(1)
		return ErrUsageQueueFull
	}
}

// check applies the webhook's rules to an event. Messages name the field
// but never quote it: a key's plaintext passed as KeyID must not be logged.
func (ev UsageEvent) check(now time.Time) error {
	e := usage.Event{ID: ev.ID, KeyID: ev.KeyID, Time: ev.Time, Requests: 1, Units: ev.Units, Bytes: ev.Bytes, Feature: ev.Feature}
	if ev.Requests != nil {
		e.Requests = *ev.Requests
	}
	var field, msg string
	switch {
	// JSON would replace invalid UTF-8, and so change the id or feature
	// keyplane sees: refuse it instead.
	case !utf8.ValidString(ev.ID):
		field, msg = "id", "must be UTF-8"
	case !utf8.ValidString(ev.Feature):
		field, msg = "feature", "must be UTF-8"
	case !ev.Time.IsZero() && ev.Time.Before(now.Add(-usageMaxAge)):
		field, msg = "time", "is more than 35 days old (less an hour for sending)"
	case ev.Time.After(now.Add(usageMaxAhead)):
		field, msg = "time", "is more than a minute in the future"
	default:
		field, msg = e.Problem(now)
	}
	if msg == "" {
		return nil
	}
	return fmt.Errorf("%w: %s %s", ErrInvalidUsageEvent, field, msg)
}

// Flush sends every event queued when it is called and waits until each
// batch is accepted or given up on. Its error says how many events were not
// delivered and why; it returns ctx's error if ctx ends first (the sending
// goes on in the background).
func (r *UsageReporter) Flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case r.flushes <- reply:
	case <-r.done:
		return ErrReporterClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting events, sends everything queued and stops the
// background goroutine. If ctx ends first, the requests in flight are
// canceled and what is left is counted as failed. Later calls return the
// first one's result.
func (r *UsageReporter) Close(ctx context.Context) error {
	r.mu.Lock()
	first := !r.closed
	r.closed = true
	r.mu.Unlock()
	if first {
		close(r.stop)
	}
	select {
	case <-r.done:
		return r.closeErr
	case <-ctx.Done():
		r.cancel()
		<-r.done
		return errors.Join(ctx.Err(), r.closeErr)
	}
}

// Stats returns the reporter's counts.
func (r *UsageReporter) Stats() UsageStats {
	return UsageStats{Sent: r.sent.Load(), Dropped: r.dropped.Load(), Failed: r.failed.Load(), Invalid: r.invalid.Load()}
}

// run is the background goroutine: it gathers events into a batch and
// sends it when it is full, every FlushInterval, on Flush and on Close.
// One batch is in flight at a time; while it is retried, events wait in
// the queue.
func (r *UsageReporter) run(ctx context.Context) {
	defer close(r.done)
	defer r.cancel()
	tick := time.NewTicker(r.opt.FlushInterval)
	defer tick.Stop()
	batch := make([]UsageEvent, 0, r.opt.MaxBatch)
	for {
		select {
		case ev := <-r.queue:
			if batch = append(batch, ev); len(batch) >= r.opt.MaxBatch {
				r.send(ctx, batch)
				batch = batch[:0]
			}
		case <-tick.C:
			if len(batch) > 0 {
				r.send(ctx, batch)
				batch = batch[:0]
			}
		case reply := <-r.flushes:
			reply <- r.drain(ctx, batch, len(r.queue))
			batch = batch[:0]
		case <-r.stop:
			// No event enters the queue any more: drain it all.
			r.closeErr = r.drain(ctx, batch, -1)
			if r.closeErr != nil {
				r.log.Error("keyplane: the usage reporter closed with events undelivered", "error", r.closeErr)
			}
			return
		}
	}
}

// drain sends batch and then n events from the queue (all of them if n is
// negative: n only decreases, so it never reaches 0), in batches, and says
// how many could not be delivered.
func (r *UsageReporter) drain(ctx context.Context, batch []UsageEvent, n int) error {
	var lost int64
	var firstErr error
	for {
	fill:
		for len(batch) < r.opt.MaxBatch && n != 0 {
			select {
			case ev := <-r.queue:
				batch = append(batch, ev)
				n--
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			break
		}
		if l, err := r.send(ctx, batch); err != nil {
			lost += l
			if firstErr == nil {
				firstErr = err
			}
		}
		batch = batch[:0]
	}
	if lost > 0 {
		return fmt.Errorf("keyplane: %d usage events were not delivered: %w", lost, firstErr)
	}
	return nil
}

// send delivers events, split into webhook bodies, and counts them as
// sent or failed. It returns how many failed and the first error.
func (r *UsageReporter) send(ctx context.Context, events []UsageEvent) (lost int64, firstErr error) {
	for _, b := range encodeUsage(events, r.opt.MaxBatch) {
		err := b.err
		if err == nil {
			if err = ctx.Err(); err == nil {
				err = r.deliver(ctx, b.data, b.events)
			}
		}
		if err != nil {
			r.failed.Add(b.events)
			lost += b.events
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		r.sent.Add(b.events)
	}
	return lost, firstErr
}

// usageBody is one webhook body and the number of events it stands for
// (duplicates of an id it holds included).
type usageBody struct {
	data   []byte
	events int64
	err    error
}

// encodeUsage encodes events into bodies of at most maxEvents events and
// 1 MiB. A body holds each id once, as the webhook requires; a duplicate
// is left out, which changes nothing since keyplane counts an id once.
func encodeUsage(events []UsageEvent, maxEvents int) []usageBody {
	var out []usageBody
	var buf bytes.Buffer
	var cur usageBody
	held := 0
	seen := make(map[string]bool, min(len(events), maxEvents))
	end := func() {
		if held > 0 { // then cur.events > 0 too: duplicates follow an event held
			buf.WriteString("]}")
			cur.data = bytes.Clone(buf.Bytes())
			out = append(out, cur)
		}
		buf.Reset()
		cur, held = usageBody{}, 0
		clear(seen)
	}
	for _, ev := range events {
		if seen[ev.ID] {
			cur.events++
			continue
		}
		b, err := json.Marshal(ev)
		if err != nil { // cannot happen to a checked event; counted as failed
			out = append(out, usageBody{events: 1, err: fmt.Errorf("keyplane: encoding a usage event: %w", err)})
			continue
		}
		if held == maxEvents || held > 0 && buf.Len()+1+len(b)+len("]}") > usage.MaxBody {
			end()
		}
		if held == 0 {
			buf.WriteString(`{"events":[`)
		} else {
			buf.WriteByte(',')
		}
		buf.Write(b)
		held++
		cur.events++
		seen[ev.ID] = true
	}
	end()
	return out
}

// deliver posts one body until it is accepted, refused, or the retries
// are exhausted. The webhook-id is the same for every attempt; each
// attempt has its own timestamp, and so its own signature.
func (r *UsageReporter) deliver(ctx context.Context, body []byte, events int64) error {
	id := newID("msg_")
	p := r.opt.Retry
	for attempt := 1; ; attempt++ {
		err := r.post(ctx, id, body)
		if err == nil {
			return nil
		}
		log := r.log.With("webhook_id", id, "events", events, "attempt", attempt)
		if ctx.Err() != nil {
			log.ErrorContext(ctx, "keyplane: a usage batch was abandoned: the reporter was closed", "error", err)
			return err
		}
		retry, retryAfter := retryable(err)
		if !retry {
			args := []any{"error", err}
			var ae *APIError
			if errors.As(err, &ae) {
				args = append(args, "status", ae.Status, "code", ae.Code, "details", ae.Details)
			}
			log.ErrorContext(ctx, "keyplane refused a usage batch; it is not retried (a 400 is a bug in the reporter)", args...)
			return err
		}
		if attempt >= p.MaxAttempts {
			log.ErrorContext(ctx, "keyplane: sending a usage batch failed; retries exhausted", "error", err)
			return err
		}
		wait := p.backoff(attempt)
		if retryAfter > wait {
			wait = min(retryAfter, p.MaxBackoff)
		}
		log.WarnContext(ctx, "keyplane: sending a usage batch failed; retrying", "error", err, "retry_in", wait)
		if err := r.sleep(ctx, wait); err != nil {
			log.ErrorContext(ctx, "keyplane: a usage batch was abandoned: the reporter was closed", "error", err)
			return err
		}
	}
}

// post sends one signed attempt; nil means keyplane accepted the batch
// (202). Any other answer is an *APIError.
func (r *UsageReporter) post(ctx context.Context, id string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("keyplane: POST usage: %w", err)
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "keyplane-go-client")
	r.secret.SetHeaders(h, id, r.opt.Clock(), body)
	res, err := r.opt.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("keyplane: POST usage: %w", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseSize))
	if res.StatusCode == http.StatusAccepted {
		return nil // accepted, whatever became of the body
	}
	if err != nil {
		return fmt.Errorf("keyplane: POST usage: reading the %d response: %w", res.StatusCode, err)
	}
	return apiError(res, raw)
}

// retryable reports whether a failed attempt may succeed later, and the
// wait its answer asked for.
func retryable(err error) (bool, time.Duration) {
	var ae *APIError
	if !errors.As(err, &ae) {
		return true, 0 // the network, or a body cut short
	}
	s := ae.Status
	return s >= 500 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests, ae.RetryAfter
}

// backoff returns the wait before retry number attempt (1 is the first
// retry): between half and all of min(MinBackoff·2^(attempt-1), MaxBackoff).
func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.MaxBackoff
	if shift := attempt - 1; shift < 32 {
		if b := p.MinBackoff << shift; b > 0 && b < d {
			d = b
		}
	}
	return d/2 + mrand.N(d/2+1)
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reporting from the middleware.

type usageMeterKey struct{}

// requestUsage is what a handler recorded about the request it serves.
type requestUsage struct {
	mu       sync.Mutex
	units    int64
	unitsSet bool
	feature  string
}

func meterFrom(ctx context.Context) *requestUsage {
	u, _ := ctx.Value(usageMeterKey{}).(*requestUsage)
	return u
}

// UsageMeter gives each request a place where its handler records the
// units it used ([SetUnits], [AddUnits]) and the feature ([SetFeature]),
// for [ReportUsage] to report. It must wrap [Middleware], not be wrapped by
// it, since the middleware reports with the request it was given:
//
//	api := client.UsageMeter(client.Middleware(kp, &client.MiddlewareOptions{
//		OnResponse: client.ReportUsage(reporter, nil),
//	})(handler))
//
// Placed inside Middleware it does nothing, and SetUnits returns false.
func UsageMeter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if _, verified := FromContext(ctx); verified || meterFrom(ctx) != nil {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, usageMeterKey{}, &requestUsage{})))
	})
}

// SetUnits records that the request of ctx used n units, replacing what was
// recorded before. It returns false, recording nothing, if n is negative or
// ctx has no meter ([UsageMeter] is not installed outside Middleware).
// It is safe to call from the handler's goroutines.
func SetUnits(ctx context.Context, n int64) bool {
	u := meterFrom(ctx)
	if u == nil || n < 0 {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.units, u.unitsSet = n, true
	return true
}

// AddUnits adds n units to what the request of ctx used (for handlers that
// count as they stream). It returns false as SetUnits does.
func AddUnits(ctx context.Context, n int64) bool {
	u := meterFrom(ctx)
	if u == nil || n < 0 {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.units, u.unitsSet = u.units+n, true
	return true
}

// SetFeature records the feature the request of ctx used (at most 64
// bytes), reported as the event's feature. It returns false, recording
// nothing, if ctx has no meter.
func SetFeature(ctx context.Context, feature string) bool {
	u := meterFrom(ctx)
	if u == nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.feature = feature
	return true
}

// ReportUsage returns a MiddlewareOptions.OnResponse that reports one
// event per request served with a VALID decision, whatever its status:
// requests 1, bytes the response body's size, and units what the handler
// recorded with SetUnits or AddUnits or, if it recorded none, units(r) (0
// when units is nil). The feature is what the handler set with SetFeature.
// Requests let through without a decision (FailOpen) are not reported;
// neither are refused ones (the middleware does not call OnResponse).
//
// The event is queued, never sent on the request's goroutine. An event the
// reporter refuses as invalid (negative units, a feature too long) is
// logged: it is a bug in the handler.
func ReportUsage(rep *UsageReporter, units func(r *http.Request) int64) func(r *http.Request, d *Decision, status int, bytes int64) {
	if rep == nil {
		panic("keyplane: ReportUsage needs a UsageReporter")
	}
	return func(r *http.Request, d *Decision, _ int, bytes int64) {
		if d == nil || !d.Valid || d.Code != CodeValid || d.KeyID == "" {
			return
		}
		ev := UsageEvent{KeyID: d.KeyID, Bytes: bytes}
		if units != nil {
			ev.Units = units(r)
		}
		if u := meterFrom(r.Context()); u != nil {
			u.mu.Lock()
			if u.unitsSet {
				ev.Units = u.units
			}
			ev.Feature = u.feature
			u.mu.Unlock()
		}
		if err := rep.Report(ev); errors.Is(err, ErrInvalidUsageEvent) {
			rep.log.ErrorContext(r.Context(), "keyplane: a usage event was refused", "error", err, "method", r.Method, "path", r.URL.Path)
		}
	}
}

// Usage is a key's metered usage in one window.
type Usage struct {
	KeyID    string    `json:"key_id"`
	Window   string    `json:"window"` // minute, hour, day or month
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Requests int64     `json:"requests"`
	Units    int64     `json:"units"`
	Bytes    int64     `json:"bytes"`
	// Limits holds the key's limits of this window, with their use.
	Limits map[string]LimitState `json:"limits"`
}

// KeyUsage returns a key's usage in the window ("minute", "hour", "day" or
// "month"; "" means day) that contains at (zero means now). Usage is
// counted asynchronously: an event accepted by the webhook shows here once
// keyplane's consumer has counted it.
func (c *Client) KeyUsage(ctx context.Context, id, window string, at time.Time) (*Usage, error) {
	p, err := keyPath(id, "/usage")
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if window != "" {
		q.Set("window", window)
	}
	if !at.IsZero() {
		q.Set("at", at.UTC().Format(time.RFC3339))
	}
	var out Usage
	if _, err := c.do(ctx, http.MethodGet, p, q, nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}
