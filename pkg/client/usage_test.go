package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/usage"
	"github.com/keyplane/keyplane/internal/webhook"
	"github.com/keyplane/keyplane/internal/wire"
)

// newWebhookSecret returns a usage webhook secret in keyplane's format.
func newWebhookSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// webhookCall is one request the fake webhook received.
type webhookCall struct {
	id, timestamp string
	eventIDs      []string
	events        []usage.Event
	size          int
}

// fakeWebhook is keyplane's usage webhook without the queue behind it: it
// checks the signature with internal/webhook and the body with internal/usage, as
// keyplane does, records each call, and answers what answer says (202 when
// answer is nil). A request keyplane would refuse fails the test.
type fakeWebhook struct {
	url, secret string

	mu    sync.Mutex
	calls []webhookCall
}

// webhookAnswer decides the response to call number n (from 1); it may set
// headers and block on r's context. It returns the status.
type webhookAnswer func(n int, w http.ResponseWriter, r *http.Request) int

func newFakeWebhook(t *testing.T, ans webhookAnswer) *fakeWebhook {
	t.Helper()
	f := &fakeWebhook{secret: newWebhookSecret(t)}
	secret, err := webhook.ParseSecret(f.secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			t.Errorf("webhook body: %v (the reporter must keep bodies within 1 MiB)", err)
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		now := time.Now()
		id, err := webhook.Verify([]webhook.Secret{secret}, r.Header, body, now, webhook.DefaultTolerance)
		if err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		b, err := usage.DecodeBatch(body, now)
		if err != nil {
			t.Errorf("webhook body refused as keyplane would refuse it: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		call := webhookCall{id: id, timestamp: r.Header.Get("webhook-timestamp"), events: b.Events, size: len(body)}
		for _, e := range b.Events {
			call.eventIDs = append(call.eventIDs, e.ID)
		}
		f.mu.Lock()
		f.calls = append(f.calls, call)
		n := len(f.calls)
		f.mu.Unlock()
		status := http.StatusAccepted
		if ans != nil {
			status = ans(n, w, r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == http.StatusAccepted {
			fmt.Fprintf(w, `{"accepted":%d}`, len(b.Events))
		} else {
			fmt.Fprintf(w, `{"error":{"code":"%s","message":"from the fake"}}`, strings.ToUpper(strings.ReplaceAll(http.StatusText(status), " ", "_")))
		}
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL + "/v1/usage"
	return f
}

func (f *fakeWebhook) received() []webhookCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// retryWaits records the waits between attempts, so that retries take no
// time in tests.
type retryWaits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (d *retryWaits) sleep(ctx context.Context, wait time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.d = append(d.d, wait)
	return ctx.Err()
}

func (d *retryWaits) got() []time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.d)
}

// newTestReporter returns a reporter of f that retries without waiting
// (the waits are recorded in the returned retryWaits) and is closed when the
// test ends.
func newTestReporter(t *testing.T, f *fakeWebhook, opts *UsageReporterOptions) (*UsageReporter, *retryWaits) {
	t.Helper()
	if opts == nil {
		opts = &UsageReporterOptions{}
	}
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour // batches go when full or on Flush
	}
	d := &retryWaits{}
	r, err := newUsageReporter(f.url, f.secret, opts, d.sleep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r, d
}

// testKeyID is a well-formed key id.
const testKeyID = "key_0123456789abcdef"

func mustReport(t *testing.T, r *UsageReporter, ev UsageEvent) {
	t.Helper()
	if err := r.Report(ev); err != nil {
		t.Fatalf("Report(%+v): %v", ev, err)
	}
}

func TestReportFillsInIDAndTime(t *testing.T) {
	f := newFakeWebhook(t, nil)
	now := time.Now().Truncate(time.Second) // a fixed clock
	r, _ := newTestReporter(t, f, &UsageReporterOptions{Clock: func() time.Time { return now }})
	mustReport(t, r, UsageEvent{KeyID: testKeyID, Units: 3})
	mustReport(t, r, UsageEvent{KeyID: testKeyID, Requests: Ptr[int64](0), Bytes: 10})
	mustReport(t, r, UsageEvent{ID: "mine", KeyID: testKeyID, Time: now.Add(-time.Minute), Feature: "embed"})
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls := f.received()
	if len(calls) != 1 || len(calls[0].events) != 3 {
		t.Fatalf("got %d calls (%+v), want one of 3 events", len(calls), calls)
	}
	ev := calls[0].events
	generated := regexp.MustCompile(`^evt_[0-9a-f]{32}$`)
	if !generated.MatchString(ev[0].ID) || !generated.MatchString(ev[1].ID) || ev[0].ID == ev[1].ID {
		t.Errorf("generated ids %q, %q: want two different evt_<32 hex>", ev[0].ID, ev[1].ID)
	}
	if !ev[0].Time.Equal(now) || ev[0].Requests != 1 || ev[0].Units != 3 {
		t.Errorf("event 0 = %+v, want time %v (the clock), requests 1 (the default), units 3", ev[0], now)
	}
	if ev[1].Requests != 0 || ev[1].Bytes != 10 {
		t.Errorf("event 1 = %+v, want requests 0, bytes 10", ev[1])
	}
	if ev[2].ID != "mine" || !ev[2].Time.Equal(now.Add(-time.Minute)) || ev[2].Feature != "embed" {
		t.Errorf("event 2 = %+v, want the caller's id, time and feature", ev[2])
	}
	if s := r.Stats(); s != (UsageStats{Sent: 3}) {
		t.Errorf("Stats() = %+v, want 3 sent", s)
	}
}

func TestReportRefusesEventsKeyplaneWouldRefuse(t *testing.T) {
	f := newFakeWebhook(t, nil)
	now := time.Now() // a fixed clock
	r, _ := newTestReporter(t, f, &UsageReporterOptions{Clock: func() time.Time { return now }})
	for _, tc := range []struct {
		name  string
		ev    UsageEvent
		field string
	}{
		{"id too long", UsageEvent{ID: strings.Repeat("x", 129), KeyID: testKeyID}, "id"},
		{"id not UTF-8", UsageEvent{ID: "\xff", KeyID: testKeyID}, "id"},
		{"no key id", UsageEvent{}, "key_id"},
		{"a plaintext key as key id", UsageEvent{KeyID: "kp_live_secretsecretsecret"}, "key_id"},
		{"key id with punctuation", UsageEvent{KeyID: "key_0123456789abcde-"}, "key_id"},
		{"35 days old", UsageEvent{KeyID: testKeyID, Time: now.Add(-35 * 24 * time.Hour)}, "time"},
		{"too far ahead", UsageEvent{KeyID: testKeyID, Time: now.Add(2 * time.Minute)}, "time"},
		{"negative requests", UsageEvent{KeyID: testKeyID, Requests: Ptr[int64](-1)}, "requests"},
		{"negative units", UsageEvent{KeyID: testKeyID, Units: -1}, "units"},
		{"negative bytes", UsageEvent{KeyID: testKeyID, Bytes: -1}, "bytes"},
		{"feature too long", UsageEvent{KeyID: testKeyID, Feature: strings.Repeat("f", 65)}, "feature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Report(tc.ev)
			if !errors.Is(err, ErrInvalidUsageEvent) || !strings.Contains(err.Error(), ": "+tc.field+" ") {
				t.Errorf("Report = %v, want ErrInvalidUsageEvent about %s", err, tc.field)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error %q quotes the event", err)
			}
		})
	}
	for _, ok := range []UsageEvent{
		{ID: strings.Repeat("é", 64), KeyID: testKeyID, Time: now.Add(-34 * 24 * time.Hour), Feature: strings.Repeat("f", 64)},
		{KeyID: "key_ABCDEFGHIJKLMNOP", Time: now.Add(time.Minute)},
	} {
		mustReport(t, r, ok)
	}
	if s := r.Stats(); s.Invalid != 11 {
		t.Errorf("Stats().Invalid = %d, want 11", s.Invalid)
	}
}

func TestRetriedBatchKeepsWebhookIDAndEventIDs(t *testing.T) {
	f := newFakeWebhook(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusAccepted
	})
	r, d := newTestReporter(t, f, &UsageReporterOptions{Retry: RetryPolicy{MinBackoff: time.Second, MaxBackoff: 10 * time.Second}})
	for i := range 5 {
		mustReport(t, r, UsageEvent{KeyID: testKeyID, Units: int64(i)})
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush = %v, want the batch delivered on the third attempt", err)
	}
	calls := f.received()
	if len(calls) != 3 {
		t.Fatalf("webhook got %d attempts, want 3", len(calls))
	}
	for i, c := range calls[1:] {
		if c.id != calls[0].id || !slices.Equal(c.eventIDs, calls[0].eventIDs) {
			t.Errorf("attempt %d: webhook-id %s, events %v; want attempt 1's %s, %v", i+2, c.id, c.eventIDs, calls[0].id, calls[0].eventIDs)
		}
	}
	if len(calls[0].eventIDs) != 5 {
		t.Errorf("the batch holds %d events, want 5", len(calls[0].eventIDs))
	}
	// Exponential backoff with jitter: [0.5s, 1s], then [1s, 2s].
	if got := d.got(); len(got) != 2 || got[0] < 500*time.Millisecond || got[0] > time.Second || got[1] < time.Second || got[1] > 2*time.Second {
		t.Errorf("waits %v, want one in [0.5s, 1s] then one in [1s, 2s]", got)
	}
	if s := r.Stats(); s != (UsageStats{Sent: 5}) {
		t.Errorf("Stats() = %+v, want 5 sent", s)
	}
}

func TestRetryAfterIsHonouredUpToMaxBackoff(t *testing.T) {
	for _, tc := range []struct {
		status     int
		retryAfter string
		want       time.Duration
	}{
		{http.StatusTooManyRequests, "7", 7 * time.Second},
		{http.StatusServiceUnavailable, "3600", 30 * time.Second}, // capped
	} {
		t.Run(fmt.Sprint(tc.status, "/", tc.retryAfter), func(t *testing.T) {
			f := newFakeWebhook(t, func(n int, w http.ResponseWriter, r *http.Request) int {
				if n == 1 {
					w.Header().Set("Retry-After", tc.retryAfter)
					return tc.status
				}
				return http.StatusAccepted
			})
			r, d := newTestReporter(t, f, &UsageReporterOptions{Retry: RetryPolicy{MinBackoff: time.Millisecond, MaxBackoff: 30 * time.Second}})
			mustReport(t, r, UsageEvent{KeyID: testKeyID})
			if err := r.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := d.got(); len(got) != 1 || got[0] != tc.want {
				t.Errorf("waits %v, want [%v]", got, tc.want)
			}
		})
	}
}

// logBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records returns the JSON log records written so far.
func (s *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(s.b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestRefusedBatchIsNotRetriedAndIsLogged(t *testing.T) {
	f := newFakeWebhook(t, func(int, http.ResponseWriter, *http.Request) int { return http.StatusBadRequest })
	logs := &logBuffer{}
	r, d := newTestReporter(t, f, &UsageReporterOptions{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	for range 3 {
		mustReport(t, r, UsageEvent{KeyID: testKeyID})
	}
	err := r.Flush(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "3 usage events were not delivered") {
		t.Errorf("Flush = %v, want the 400 and 3 events undelivered", err)
	}
	if n := len(f.received()); n != 1 || len(d.got()) != 0 {
		t.Errorf("%d attempts, waits %v; want 1 attempt and no retry", n, d.got())
	}
	if s := r.Stats(); s != (UsageStats{Failed: 3}) {
		t.Errorf("Stats() = %+v, want 3 failed", s)
	}
	recs := logs.records(t)
	if len(recs) != 1 || recs[0]["level"] != "ERROR" || recs[0]["status"] != float64(400) || recs[0]["events"] != float64(3) {
		t.Errorf("log records %v, want one ERROR with status 400 and 3 events", recs)
	}
}

func TestRetriesAreExhausted(t *testing.T) {
	f := newFakeWebhook(t, func(int, http.ResponseWriter, *http.Request) int { return http.StatusBadGateway })
	r, d := newTestReporter(t, f, &UsageReporterOptions{Retry: RetryPolicy{MaxAttempts: 3}})
	mustReport(t, r, UsageEvent{KeyID: testKeyID})
	if err := r.Flush(context.Background()); err == nil {
		t.Error("Flush succeeded against a webhook that always answers 502")
	}
	if n := len(f.received()); n != 3 || len(d.got()) != 2 {
		t.Errorf("%d attempts, %d waits; want 3 attempts, 2 waits", n, len(d.got()))
	}
	if s := r.Stats(); s != (UsageStats{Failed: 1}) {
		t.Errorf("Stats() = %+v, want 1 failed", s)
	}
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	f := newFakeWebhook(t, nil)
	var mu sync.Mutex
	failures := 2
	hc := &http.Client{Transport: transportFunc(func(req *http.Request) (*http.Response, error) {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return nil, errors.New("connection reset by a test")
		}
		return http.DefaultTransport.RoundTrip(req)
	})}
	r, d := newTestReporter(t, f, &UsageReporterOptions{HTTPClient: hc})
	mustReport(t, r, UsageEvent{KeyID: testKeyID})
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.received()); n != 1 || len(d.got()) != 2 {
		t.Errorf("webhook got %d requests after %d waits, want 1 after 2", n, len(d.got()))
	}
}

type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	f := newFakeWebhook(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n == 1 {
			close(arrived)
			<-release
		}
		return http.StatusAccepted
	})
	r, _ := newTestReporter(t, f, &UsageReporterOptions{MaxBatch: 1, QueueSize: 2})
	// The first event is sent at once (MaxBatch 1), and its request hangs:
	// the queue now fills up.
	mustReport(t, r, UsageEvent{KeyID: testKeyID})
	<-arrived

	results := make(chan []error, 1)
	go func() {
		var errs []error
		for range 7 {
			errs = append(errs, r.Report(UsageEvent{KeyID: testKeyID}))
		}
		results <- errs
	}()
	var errs []error
	select {
	case errs = <-results:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Report blocked on a full queue")
	}
	want := []error{nil, nil, ErrUsageQueueFull, ErrUsageQueueFull, ErrUsageQueueFull, ErrUsageQueueFull, ErrUsageQueueFull}
	if !slices.Equal(errs, want) {
		t.Errorf("Report errors %v, want %v", errs, want)
	}
	if s := r.Stats(); s.Dropped != 5 {
		t.Errorf("Stats().Dropped = %d, want 5", s.Dropped)
	}
	close(release)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s != (UsageStats{Sent: 3, Dropped: 5}) {
		t.Errorf("Stats() = %+v, want 3 sent, 5 dropped", s)
	}
}

func TestConcurrentReportsAreEachSentOnce(t *testing.T) {
	f := newFakeWebhook(t, nil)
	r, _ := newTestReporter(t, f, &UsageReporterOptions{MaxBatch: 100, FlushInterval: time.Millisecond})
	const workers, each = 8, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range each {
				if err := r.Report(UsageEvent{KeyID: testKeyID, Units: 1}); err != nil {
					t.Error(err)
				}
				if i%100 == 0 {
					r.Stats()
					if err := r.Flush(context.Background()); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, c := range f.received() {
		if len(c.eventIDs) > 100 {
			t.Errorf("a batch of %d events, want at most MaxBatch 100", len(c.eventIDs))
		}
		for _, id := range c.eventIDs {
			if ids[id] {
				t.Errorf("event %s sent twice", id)
			}
			ids[id] = true
		}
	}
	if len(ids) != workers*each {
		t.Errorf("webhook got %d events, want %d", len(ids), workers*each)
	}
	if s := r.Stats(); s != (UsageStats{Sent: workers * each}) {
		t.Errorf("Stats() = %+v, want %d sent", s, workers*each)
	}
}

func TestBatchesStayWithinTheWebhookLimits(t *testing.T) {
	f := newFakeWebhook(t, nil)
	r, _ := newTestReporter(t, f, &UsageReporterOptions{MaxBatch: 1000, QueueSize: 5000})
	// 2500 small events: bodies of 1000, 1000 and 500 events.
	for range 2500 {
		mustReport(t, r, UsageEvent{KeyID: testKeyID})
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, c := range f.received() {
		sizes = append(sizes, len(c.events))
	}
	if !slices.Equal(sizes, []int{1000, 1000, 500}) {
		t.Errorf("batches of %v events, want [1000 1000 500]", sizes)
	}

	// 1300 events whose JSON is large (each "<" of an id is escaped as
	// \u003c): more than 1 MiB in all, so the batches are split, each
	// body within 1 MiB.
	before := len(f.received())
	for i := range 1300 {
		mustReport(t, r, UsageEvent{
			ID: fmt.Sprintf("%04d", i) + strings.Repeat("<", 124), KeyID: testKeyID,
			Feature: strings.Repeat("f", 64), Units: 1 << 40, Bytes: 1 << 40,
		})
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	total, calls := 0, f.received()[before:]
	for _, c := range calls {
		total += len(c.events)
		if c.size > 1<<20 {
			t.Errorf("a body of %d bytes, over 1 MiB", c.size)
		}
	}
	if len(calls) < 2 || total != 1300 {
		t.Errorf("%d bodies holding %d events, want at least 2 holding 1300", len(calls), total)
	}
}

func TestDuplicateIDsInABatchAreSentOnce(t *testing.T) {
	f := newFakeWebhook(t, nil)
	r, _ := newTestReporter(t, f, nil)
	for _, id := range []string{"a", "b", "a", "a"} {
		mustReport(t, r, UsageEvent{ID: id, KeyID: testKeyID})
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatalf("Flush = %v: keyplane refuses a batch that repeats an id", err)
	}
	if calls := f.received(); len(calls) != 1 || !slices.Equal(calls[0].eventIDs, []string{"a", "b"}) {
		t.Errorf("calls %+v, want one with events a, b", calls)
	}
	if s := r.Stats(); s != (UsageStats{Sent: 4}) {
		t.Errorf("Stats() = %+v, want 4 sent (keyplane counts an id once)", s)
	}
}

func TestCloseSendsQueuedEventsAndRefusesMore(t *testing.T) {
	f := newFakeWebhook(t, nil)
	r, _ := newTestReporter(t, f, nil)
	for range 3 {
		mustReport(t, r, UsageEvent{KeyID: testKeyID})
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls := f.received(); len(calls) != 1 || len(calls[0].events) != 3 {
		t.Errorf("calls %+v, want the 3 queued events sent on Close", calls)
	}
	if err := r.Report(UsageEvent{KeyID: testKeyID}); !errors.Is(err, ErrReporterClosed) {
		t.Errorf("Report after Close = %v, want ErrReporterClosed", err)
	}
	if err := r.Flush(context.Background()); !errors.Is(err, ErrReporterClosed) {
		t.Errorf("Flush after Close = %v, want ErrReporterClosed", err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if s := r.Stats(); s != (UsageStats{Sent: 3, Dropped: 1}) {
		t.Errorf("Stats() = %+v, want 3 sent, 1 dropped", s)
	}
}

func TestCloseDeadlineAbandonsTheBatchInFlight(t *testing.T) {
	arrived := make(chan struct{})
	f := newFakeWebhook(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n == 1 {
			close(arrived)
		}
		<-r.Context().Done() // hangs until the reporter gives up
		return http.StatusServiceUnavailable
	})
	r, _ := newTestReporter(t, f, &UsageReporterOptions{MaxBatch: 2})
	for range 3 {
		mustReport(t, r, UsageEvent{KeyID: testKeyID})
	}
	<-arrived // the first two are in flight; the third waits
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Close = %v, want context.Canceled", err)
	}
	if s := r.Stats(); s != (UsageStats{Failed: 3}) {
		t.Errorf("Stats() = %+v, want 3 failed", s)
	}
}

func TestNewUsageReporterValidates(t *testing.T) {
	secret := newWebhookSecret(t)
	for _, tc := range []struct {
		name, url, secret string
		opts              *UsageReporterOptions
	}{
		{"relative URL", "/v1/usage", secret, nil},
		{"not http", "ftp://keyplane.example.com/v1/usage", secret, nil},
		{"no secret", "https://keyplane.example.com/v1/usage", "", nil},
		{"secret not base64", "https://keyplane.example.com/v1/usage", "whsec_not base64!", nil},
		{"secret too short", "https://keyplane.example.com/v1/usage", "whsec_" + base64.StdEncoding.EncodeToString([]byte("short")), nil},
		{"MaxBatch over 1000", "https://keyplane.example.com/v1/usage", secret, &UsageReporterOptions{MaxBatch: 1001}},
		{"negative QueueSize", "https://keyplane.example.com/v1/usage", secret, &UsageReporterOptions{QueueSize: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewUsageReporter(tc.url, tc.secret, tc.opts)
			if err == nil {
				r.Close(context.Background())
				t.Fatal("NewUsageReporter succeeded")
			}
			if tc.secret != "" && strings.Contains(err.Error(), strings.TrimPrefix(tc.secret, "whsec_")) {
				t.Errorf("the error %q quotes the secret", err)
			}
		})
	}
}

// usageHandler is an API handler that uses the units and feature of its
// query (?units=n&feature=f) and answers "ok".
var usageHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if v := q.Get("units"); v != "" {
		n, _ := strconv.ParseInt(v, 10, 64)
		if !SetUnits(r.Context(), n) {
			w.Header().Set("X-Units-Lost", "true")
		}
	}
	if v := q.Get("add"); v != "" {
		n, _ := strconv.ParseInt(v, 10, 64)
		AddUnits(r.Context(), n)
		AddUnits(r.Context(), n)
	}
	if v := q.Get("feature"); v != "" {
		SetFeature(r.Context(), v)
	}
	io.WriteString(w, "ok")
})

func TestReportUsageReportsServedRequests(t *testing.T) {
	valid := &Decision{Valid: true, Code: CodeValid, KeyID: testKeyID}
	fromHeader := func(r *http.Request) int64 { n, _ := strconv.ParseInt(r.Header.Get("X-Cost"), 10, 64); return n }
	for _, tc := range []struct {
		name      string
		verifier  *fakeVerifier
		failOpen  bool
		units     func(*http.Request) int64
		meterOut  bool // UsageMeter wraps the middleware, as it must
		meterIn   bool // UsageMeter wrapped by the middleware: misplaced
		query     string
		wantEvent bool
		wantUnits int64
		wantFeat  string
		wantLost  bool // SetUnits reported that the units cannot be reported
	}{
		{"the handler's units", &fakeVerifier{d: valid}, false, nil, true, false, "units=350&feature=generate", true, 350, "generate", false},
		{"units added up", &fakeVerifier{d: valid}, false, nil, true, false, "add=5", true, 10, "", false},
		{"the handler's units win", &fakeVerifier{d: valid}, false, fromHeader, true, false, "units=1", true, 1, "", false},
		{"the units func when the handler sets none", &fakeVerifier{d: valid}, false, fromHeader, true, false, "", true, 7, "", false},
		{"no meter", &fakeVerifier{d: valid}, false, fromHeader, false, false, "units=350", true, 7, "", true},
		{"meter misplaced inside the middleware", &fakeVerifier{d: valid}, false, fromHeader, false, true, "units=350", true, 7, "", true},
		{"let through without a decision", &fakeVerifier{err: errors.New("keyplane is down")}, true, fromHeader, true, false, "units=350", false, 0, "", false},
		{"refused", &fakeVerifier{d: &Decision{Code: CodeRevoked, KeyID: testKeyID}}, false, fromHeader, true, false, "", false, 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeWebhook(t, nil)
			rep, _ := newTestReporter(t, f, nil)
			var h http.Handler = usageHandler
			if tc.meterIn {
				h = UsageMeter(h)
			}
			h = Middleware(tc.verifier, &MiddlewareOptions{FailOpen: tc.failOpen, Logger: quiet, OnResponse: ReportUsage(rep, tc.units)})(h)
			if tc.meterOut {
				h = UsageMeter(h)
			}
			req := httptest.NewRequest("GET", "/v1/generate?"+tc.query, nil)
			req.Header.Set("X-Api-Key", "kp_live_anything")
			req.Header.Set("X-Cost", "7")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if lost := w.Header().Get("X-Units-Lost") == "true"; lost != tc.wantLost {
				t.Errorf("SetUnits returned %v, want %v", !lost, !tc.wantLost)
			}
			if err := rep.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			calls := f.received()
			if !tc.wantEvent {
				if len(calls) != 0 {
					t.Errorf("reported %+v, want nothing", calls)
				}
				return
			}
			if len(calls) != 1 || len(calls[0].events) != 1 {
				t.Fatalf("reported %+v, want one event", calls)
			}
			ev := calls[0].events[0]
			if ev.KeyID != testKeyID || ev.Requests != 1 || ev.Units != tc.wantUnits || ev.Bytes != 2 || ev.Feature != tc.wantFeat {
				t.Errorf("event %+v, want key %s, 1 request, %d units, 2 bytes (\"ok\"), feature %q", ev, testKeyID, tc.wantUnits, tc.wantFeat)
			}
		})
	}
}

func TestReportUsageLogsEventsItCannotReport(t *testing.T) {
	f := newFakeWebhook(t, nil)
	logs := &logBuffer{}
	rep, _ := newTestReporter(t, f, &UsageReporterOptions{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	h := UsageMeter(Middleware(&fakeVerifier{d: &Decision{Valid: true, Code: CodeValid, KeyID: testKeyID}}, &MiddlewareOptions{
		Logger: quiet, OnResponse: ReportUsage(rep, func(*http.Request) int64 { return -1 }),
	})(usageHandler))
	req := httptest.NewRequest("GET", "/v1/generate", nil)
	req.Header.Set("X-Api-Key", "kp_live_anything")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if s := rep.Stats(); s.Invalid != 1 {
		t.Errorf("Stats() = %+v, want 1 invalid", s)
	}
	if recs := logs.records(t); len(recs) != 1 || recs[0]["level"] != "ERROR" || !strings.Contains(fmt.Sprint(recs[0]["error"]), "units") {
		t.Errorf("log records %v, want one ERROR about units", recs)
	}
}

// newUsageServer runs the whole keyplane API with its background work
// (the usage consumer) on the embedded backends, as `keyplane serve` does,
// and returns its URL and usage webhook secret.
func newUsageServer(t *testing.T) (url, secret string) {
	t.Helper()
	cfg := config.Embedded()
	secret = newWebhookSecret(t)
	cfg.DataDir, cfg.AdminToken, cfg.WebhookSecret = t.TempDir(), adminToken, secret
	log := slog.New(slog.DiscardHandler)
	app, err := wire.ServeAll(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := app.Start(ctx); err != nil {
		cancel()
		app.Close()
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.Server.Handler())
	t.Cleanup(func() { cancel(); srv.Close(); app.Close() })
	return srv.URL, secret
}

// waitForUsage polls the key's usage today until done accepts it, and
// fails the test if it does not within 20 seconds.
func waitForUsage(t *testing.T, c *Client, keyID string, done func(*Usage) bool) *Usage {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		u, err := c.KeyUsage(context.Background(), keyID, "day", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if done(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key's usage is still %+v", u)
		}
		<-poll.C
	}
}

func TestMiddlewareUsageIsCountedByKeyplane(t *testing.T) {
	base, secret := newUsageServer(t)
	kp, err := New(base, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := mustCreate(t, kp, CreateKeyRequest{Owner: "acct_usage", Plan: "pro"})
	rep, err := NewUsageReporter(base+"/v1/usage", secret, &UsageReporterOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close(context.Background())
	api := httptest.NewServer(UsageMeter(Middleware(kp, &MiddlewareOptions{
		Logger: quiet, OnResponse: ReportUsage(rep, nil),
	})(usageHandler)))
	defer api.Close()

	const n = 20
	var wg sync.WaitGroup
	wantUnits := int64(0)
	for i := range n {
		wantUnits += int64(i + 1)
		wg.Go(func() {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/generate?units=%d&feature=generate", api.URL, i+1), nil)
			req.Header.Set("X-Api-Key", key.Secret)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("request %d: status %d", i, res.StatusCode)
			}
		})
	}
	wg.Wait()
	if err := rep.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := rep.Stats(); s != (UsageStats{Sent: n}) {
		t.Errorf("Stats() = %+v, want %d sent", s, n)
	}
	u := waitForUsage(t, kp, key.ID, func(u *Usage) bool { return u.Requests >= n && u.Units >= wantUnits })
	if u.KeyID != key.ID || u.Window != "day" || u.Requests != n || u.Units != wantUnits || u.Bytes != 2*n {
		t.Errorf("usage %+v, want %d requests, %d units, %d bytes", u, n, wantUnits, 2*n)
	}
	if _, err := kp.KeyUsage(context.Background(), "key_0000000000000000", "", time.Time{}); !IsNotFound(err) {
		t.Errorf("KeyUsage of an unknown key = %v, want a 404", err)
	}
}

// TestRetriedBatchIsCountedOnce loses keyplane's first answer: the batch
// reached keyplane but the reporter saw a 503 and sent it again. keyplane
// counts it once, because the retry carries the same event ids.
func TestRetriedBatchIsCountedOnce(t *testing.T) {
	base, secret := newUsageServer(t)
	kp, err := New(base, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := mustCreate(t, kp, CreateKeyRequest{Owner: "acct_retry", Plan: "pro"})
	var mu sync.Mutex
	var answers []int
	lossy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequestWithContext(r.Context(), "POST", base+"/v1/usage", bytes.NewReader(body))
		req.Header = r.Header.Clone()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		mu.Lock()
		answers = append(answers, res.StatusCode)
		first := len(answers) == 1
		mu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable) // keyplane's 202 is lost
			return
		}
		w.WriteHeader(res.StatusCode)
	}))
	defer lossy.Close()
	d := &retryWaits{}
	rep, err := newUsageReporter(lossy.URL, secret, &UsageReporterOptions{Logger: quiet}, d.sleep)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close(context.Background())

	const n = 5
	for range n {
		mustReport(t, rep, UsageEvent{KeyID: key.ID, Units: 10})
	}
	if err := rep.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(answers)
	mu.Unlock()
	if !slices.Equal(got, []int{202, 202}) {
		t.Fatalf("keyplane answered %v, want [202 202]: the batch delivered twice", got)
	}
	waitForUsage(t, kp, key.ID, func(u *Usage) bool { return u.Requests >= n })
	// A later event: the duplicate delivery was queued before it, and is
	// claimed by keyplane's consumer no later than it; once the later event
	// is counted the duplicate has been (or, rarely, is being) handled.
	mustReport(t, rep, UsageEvent{KeyID: key.ID, Units: 1})
	if err := rep.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	u := waitForUsage(t, kp, key.ID, func(u *Usage) bool { return u.Requests >= n+1 })
	if u.Requests != n+1 || u.Units != 10*n+1 {
		t.Errorf("usage %+v, want %d requests and %d units: each event counted once", u, n+1, 10*n+1)
	}
}
