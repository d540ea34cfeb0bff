package telemetry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/telemetry"
	"github.com/keyplane/keyplane/internal/verify"
)

// newVerifier returns a Verifier on a fresh SQLite store with one active
// key, the key service, and that key's secret and id.
func newVerifier(t *testing.T, opts *verify.Options) (_ *verify.Verifier, _ *keys.Service, secret, keyID string) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vault, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vault.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans, err := plan.Load("")
	if err != nil {
		t.Fatal(err)
	}
	discard := slog.New(slog.DiscardHandler)
	svc := &keys.Service{Store: st, Vault: vault, Hasher: h, Plans: plans, Prefix: "kp_live", Logger: discard}
	c, err := svc.Create(context.Background(), "test", keys.CreateRequest{Owner: "acct_1", Plan: "free"}, "")
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = discard
	return verify.New(st, h, plans, clock.Real{}, opts), svc, c.Secret, c.Key.ID
}

func collect(t *testing.T, r sdkmetric.Reader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m
		}
	}
	return got
}

// sumBy returns the data points of a sum by the value of attribute key.
func sumBy(t *testing.T, m metricdata.Metrics, key string) map[string]int64 {
	t.Helper()
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is a %T, want a Sum[int64]", m.Name, m.Data)
	}
	got := map[string]int64{}
	for _, p := range s.DataPoints {
		v, _ := p.Attributes.Value(attribute.Key(key))
		got[v.AsString()] = p.Value
	}
	return got
}

func TestVerifyDecisionsAndLatencyAreExported(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	tel := telemetry.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), nil)
	latency, err := tel.VerifyLatency()
	if err != nil {
		t.Fatal(err)
	}
	v, _, key, _ := newVerifier(t, &verify.Options{ObserveLatency: latency})
	if err := tel.ObserveVerifier(v); err != nil {
		t.Fatal(err)
	}
	unknown, _ := apikey.Generate("kp_live")
	ctx := context.Background()
	for _, req := range []verify.Request{
		{Key: key}, {Key: key}, {Key: key, Scope: "no-such-scope"}, {Key: unknown}, {Key: unknown}, {Key: "garbage"},
	} {
		if _, err := v.Verify(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	got := collect(t, reader)
	decisions := sumBy(t, got[telemetry.NameDecisions], "code")
	for code, want := range map[string]int64{"VALID": 2, "INSUFFICIENT_PERMISSIONS": 1, "NOT_FOUND": 3, "REVOKED": 0, "UNAVAILABLE": 0} {
		if decisions[code] != want {
			t.Errorf("decisions{code=%s} = %d, want %d (all: %v)", code, decisions[code], want, decisions)
		}
	}
	// The first verify of each key reads the store; the unknown key's
	// second is a remembered miss; "garbage" never reaches the cache.
	cache := sumBy(t, got[telemetry.NameCache], "result")
	if want := map[string]int64{"hit": 2, "negative_hit": 1, "miss": 2}; cache["hit"] != want["hit"] || cache["negative_hit"] != want["negative_hit"] || cache["miss"] != want["miss"] {
		t.Errorf("cache = %v, want %v", cache, want)
	}
	h, ok := got[telemetry.NameDuration].Data.(metricdata.Histogram[float64])
	if !ok || len(h.DataPoints) != 1 {
		t.Fatalf("%s = %#v, want one histogram data point", telemetry.NameDuration, got[telemetry.NameDuration].Data)
	}
	if p := h.DataPoints[0]; p.Count != 6 || p.Sum <= 0 {
		t.Errorf("latency histogram count %d sum %v, want 6 verifies with a positive sum", p.Count, p.Sum)
	}
	lag, ok := got[telemetry.NameFeedLag].Data.(metricdata.Gauge[float64])
	if !ok || len(lag.DataPoints) != 1 || lag.DataPoints[0].Value < 0 || lag.DataPoints[0].Value > 60 {
		t.Errorf("feed lag = %#v, want one gauge point in [0, 60] s", got[telemetry.NameFeedLag].Data)
	}
	// No shared limiter: nothing falls back, and the counter says so.
	fb, ok := got[telemetry.NameLimiterFallbacks].Data.(metricdata.Sum[int64])
	if !ok || len(fb.DataPoints) != 1 || fb.DataPoints[0].Value != 0 {
		t.Errorf("limiter fallbacks = %#v, want one counter point of 0", got[telemetry.NameLimiterFallbacks].Data)
	}
}

func TestOffRecordsNothingAndTakesNoHook(t *testing.T) {
	tel, shutdown, err := telemetry.Setup(context.Background(), telemetry.Config{Mode: telemetry.Off}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if tel.On() {
		t.Error("off telemetry reports On")
	}
	if l, err := tel.VerifyLatency(); l != nil || err != nil {
		t.Errorf("VerifyLatency when off = %v, %v; want nil, nil (no clock read on the hot path)", l != nil, err)
	}
	if tel.Tracer() != nil {
		t.Error("off telemetry has a tracer")
	}
}

func TestStdoutModePrintsMetricsOnShutdown(t *testing.T) {
	var out bytes.Buffer
	tel, shutdown, err := telemetry.Setup(context.Background(), telemetry.Config{Mode: telemetry.Stdout, Service: "test", Out: &out}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	v, _, key, _ := newVerifier(t, &verify.Options{})
	if err := tel.ObserveVerifier(v); err != nil {
		t.Fatal(err)
	}
	v.Verify(context.Background(), verify.Request{Key: key})
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{telemetry.NameDecisions, `"VALID"`, telemetry.NameFeedLag} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout output lacks %s:\n%s", want, out.String())
		}
	}
}

func TestPrometheusEndpointServesTheMetricNames(t *testing.T) {
	tel, shutdown, err := telemetry.Setup(context.Background(), telemetry.Config{Mode: telemetry.Prometheus, MetricsAddr: "127.0.0.1:0", Service: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	latency, _ := tel.VerifyLatency()
	v, _, key, _ := newVerifier(t, &verify.Options{ObserveLatency: latency})
	if err := tel.ObserveVerifier(v); err != nil {
		t.Fatal(err)
	}
	v.Verify(context.Background(), verify.Request{Key: key})
	resp, err := http.Get("http://" + tel.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`keyplane_verify_decisions_total{code="VALID"`, "keyplane_verify_duration_seconds_bucket", "keyplane_verify_cache_total", "keyplane_verify_feed_lag_seconds",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}
