package stripeexport

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStripe follows Stripe's documented request shape for
// POST /v1/billing/meter_events (form-encoded event_name,
// payload[stripe_customer_id], payload[value], identifier, timestamp;
// Bearer API key; Idempotency-Key replays) and GET /v1/customers/search
// (metadata['keyplane_owner']:'…'). Like Stripe, it accepts an identifier
// once within 24 h: a second event with it is refused with
// resource_already_exists and not counted; and like Stripe's, its
// Idempotency-Keys are replayed for 24 h. After that the same identifier
// is a new event: billed again (billed counts it).
type fakeStripe struct {
	t   *testing.T
	srv *httptest.Server
	now func() time.Time

	mu          sync.Mutex
	down        int               // the next down meter-event requests get 503
	reject      map[string]bool   // customers whose events get 400
	customers   map[string]string // owner → customer ids, comma-separated
	events      map[string]meterEventForm
	seenAt      map[string]time.Time
	idempotent  map[string]string // Idempotency-Key → identifier
	keyAt       map[string]time.Time
	billed      map[string]int // identifier → times accepted as a new event
	requests    int
	unavailable int
	duplicates  int
}

type meterEventForm struct {
	EventName, Customer, Identifier string
	Value, Timestamp                int64
}

const fakeKey = "sk_test_keyplane"

func newFakeStripe(t *testing.T) *fakeStripe {
	f := &fakeStripe{t: t, now: time.Now, reject: map[string]bool{}, customers: map[string]string{},
		events: map[string]meterEventForm{}, seenAt: map[string]time.Time{}, idempotent: map[string]string{},
		keyAt: map[string]time.Time{}, billed: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/billing/meter_events", f.meterEvent)
	mux.HandleFunc("GET /v1/customers/search", f.search)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeStripe) client() *Client { return NewClient(fakeKey, f.srv.URL, f.srv.Client()) }

func stripeError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"type": typ, "code": code, "message": msg}})
}

func (f *fakeStripe) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+fakeKey {
		stripeError(w, http.StatusUnauthorized, "invalid_request_error", "", "Invalid API Key provided")
		return false
	}
	return true
}

func (f *fakeStripe) meterEvent(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "", "content type "+ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "", err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.down > 0 {
		f.down--
		f.unavailable++
		stripeError(w, http.StatusServiceUnavailable, "api_error", "", "Stripe is down")
		return
	}
	ev := meterEventForm{EventName: r.PostForm.Get("event_name"), Customer: r.PostForm.Get("payload[stripe_customer_id]"), Identifier: r.PostForm.Get("identifier")}
	var err1, err2 error
	ev.Value, err1 = strconv.ParseInt(r.PostForm.Get("payload[value]"), 10, 64)
	ev.Timestamp, err2 = strconv.ParseInt(r.PostForm.Get("timestamp"), 10, 64)
	switch {
	case ev.EventName == "" || ev.Customer == "" || ev.Identifier == "" || len(ev.Identifier) > 100:
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_missing", "event_name, payload[stripe_customer_id] and identifier (<= 100) are required")
		return
	case err1 != nil || err2 != nil:
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_invalid_integer", "payload[value] and timestamp must be integers")
		return
	case f.reject[ev.Customer]:
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "resource_missing", "No such customer: '"+ev.Customer+"'")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if id, ok := f.idempotent[key]; ok && key != "" && f.now().Sub(f.keyAt[key]) < 24*time.Hour {
		w.Header().Set("Idempotent-Replayed", "true")
		f.write(w, f.events[id])
		return
	}
	if at, ok := f.seenAt[ev.Identifier]; ok && f.now().Sub(at) < 24*time.Hour {
		f.duplicates++
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "resource_already_exists",
			"An event already exists with identifier "+ev.Identifier)
		return
	}
	f.events[ev.Identifier], f.seenAt[ev.Identifier] = ev, f.now()
	f.billed[ev.Identifier]++
	if key != "" {
		f.idempotent[key], f.keyAt[key] = ev.Identifier, f.now()
	}
	f.write(w, ev)
}

func (f *fakeStripe) write(w http.ResponseWriter, ev meterEventForm) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "billing.meter_event", "event_name": ev.EventName, "identifier": ev.Identifier,
		"livemode": false, "timestamp": ev.Timestamp,
		"payload": map[string]string{"stripe_customer_id": ev.Customer, "value": strconv.FormatInt(ev.Value, 10)}})
}

var searchQuery = regexp.MustCompile(`^metadata\['keyplane_owner'\]:'([^']*)'$`)

func (f *fakeStripe) search(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	m := searchQuery.FindStringSubmatch(r.URL.Query().Get("query"))
	if m == nil {
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "", "bad query "+r.URL.Query().Get("query"))
		return
	}
	f.mu.Lock()
	id, ok := f.customers[m[1]]
	f.mu.Unlock()
	data := []map[string]any{}
	for _, id := range strings.Split(id, ",") {
		if ok {
			data = append(data, map[string]any{"id": id, "object": "customer", "metadata": map[string]string{"keyplane_owner": m[1]}})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "search_result", "url": "/v1/customers/search", "has_more": false, "data": data})
}

// sent returns the events Stripe holds, by identifier.
func (f *fakeStripe) sent() map[string]meterEventForm {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]meterEventForm, len(f.events))
	for k, v := range f.events {
		out[k] = v
	}
	return out
}

// billedTwice returns the identifiers accepted as a new event more than
// once: usage billed twice.
func (f *fakeStripe) billedTwice() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id, n := range f.billed {
		if n > 1 {
			out = append(out, id)
		}
	}
	return out
}

// requestCount returns the meter-event requests made so far.
func (f *fakeStripe) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

func (f *fakeStripe) set(fn func(f *fakeStripe)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (ev meterEventForm) String() string {
	return fmt.Sprintf("%s %s=%d @%d", ev.Identifier, ev.EventName, ev.Value, ev.Timestamp)
}
