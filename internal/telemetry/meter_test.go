package telemetry_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/ledger/sqliteledger"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/queue"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/stripeexport/sqlitesent"
	"github.com/keyplane/keyplane/internal/telemetry"
	"github.com/keyplane/keyplane/internal/verify"
)

func TestMeterEventsDeadLettersAndBatchSpans(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewInMemoryExporter()
	tel := telemetry.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)))
	_, svc, _, keyID := newVerifier(t, &verify.Options{})
	l, err := sqliteledger.Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c := meter.NewConsumer(l, svc.Store, clock.Real{}, slog.New(slog.DiscardHandler))
	c.Tracer = tel.Tracer()
	if err := tel.ObserveConsumer(c); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	body := fmt.Sprintf(`{"events":[{"id":"e1","key_id":%q,"time":%q,"requests":1},{"id":"e2","key_id":%q,"time":%q,"requests":1},{"id":"e3","key_id":"key_nosuch","time":%q,"requests":1}]}`,
		keyID, now, keyID, now, now)
	if err := c.Handle(context.Background(), queue.Message{ID: "m1", Data: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && len(s.DataPoints) == 1 {
				got[m.Name] = s.DataPoints[0].Value
			}
		}
	}
	if got[telemetry.NameEvents] != 2 || got[telemetry.NameDeadLetters] != 1 {
		t.Errorf("events %d, dead letters %d; want 2 and 1", got[telemetry.NameEvents], got[telemetry.NameDeadLetters])
	}
	if s := spans.GetSpans(); len(s) != 1 || s[0].Name != "meter.batch" {
		t.Errorf("spans = %v, want one meter.batch", s.Snapshots())
	}
}

// stripeAccepts is a Stripe that takes every meter event.
type stripeAccepts struct{}

func (stripeAccepts) Send(context.Context, stripeexport.MeterEvent) error { return nil }
func (stripeAccepts) Customer(context.Context, string) (string, error)    { return "cus_tel", nil }

func TestStripeExportCountsByOutcome(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	tel := telemetry.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), nil)
	_, svc, _, keyID := newVerifier(t, &verify.Options{})
	l, err := sqliteledger.Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sent, err := sqlitesent.Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sent.Close() })
	meters, _ := stripeexport.ParseMeters("requests=api_requests")
	x := stripeexport.New(stripeAccepts{}, svc.Store, l, sent, meters, clock.Real{}, slog.New(slog.DiscardHandler))
	if err := tel.ObserveStripeExporter(x); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	body := fmt.Sprintf(`{"events":[{"id":"e1","key_id":%q,"time":%q,"requests":1},{"id":"e2","key_id":%q,"time":%q,"requests":1}]}`, keyID, now, keyID, now)
	for range 2 { // the second time, both are already sent
		if err := x.Handle(context.Background(), queue.Message{ID: "m1", Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == telemetry.NameStripeExport {
				for _, dp := range s.DataPoints {
					v, _ := dp.Attributes.Value("outcome")
					got[v.AsString()] = dp.Value
				}
			}
		}
	}
	if got["sent"] != 2 || got["already"] != 2 || got["dead_letter"] != 0 || len(got) != 6 {
		t.Errorf("by outcome %v, want 2 sent, 2 already, and all six outcomes", got)
	}
}
