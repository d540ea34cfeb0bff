package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/queue/embeddedqueue"
	"github.com/keyplane/keyplane/internal/stripeexport"
	"github.com/keyplane/keyplane/internal/sweep"
	"github.com/keyplane/keyplane/internal/verify"
)

// Modes.
const (
	Off        = "off"        // no telemetry (keyplane serve's default)
	Stdout     = "stdout"     // metrics and spans printed as JSON, for local trials
	Prometheus = "prometheus" // metrics on a Prometheus endpoint (Config.MetricsAddr); no traces
	GCP        = "gcp"        // Cloud Monitoring and Cloud Trace (the deployed functions)
)

// The metric names.
const (
	NameDecisions = "keyplane.verify.decisions" // counter, by code (UNAVAILABLE: Verify failed)
	NameDuration  = "keyplane.verify.duration"  // histogram, seconds
	NameCache     = "keyplane.verify.cache"     // counter, by result: hit, negative_hit, miss
	NameFeedLag   = "keyplane.verify.feed_lag"  // gauge, seconds since the last successful change-feed poll began
	// NameLimiterFallbacks counts verifies whose per-minute limits were
	// decided on the instance because the shared limiter (Redis) failed.
	NameLimiterFallbacks = "keyplane.verify.limiter_fallbacks"
	NameEvents           = "keyplane.meter.events"       // counter: usage events counted
	NameDeadLetters      = "keyplane.meter.dead_letters" // counter: usage dead letters recorded
	NameQueueDepth       = "keyplane.queue.depth"        // gauge, by subscription: messages held by the embedded queue
	// NameStripeExport counts the Stripe usage export's work, by outcome:
	// sent, already (not sent again), skipped (no Stripe customer),
	// unmapped (no metric mapped), dead_letter, retry.
	NameStripeExport = "keyplane.stripe.export"
	NameSweep        = "keyplane.sweep.actions" // counter, by kind: disabled, reenabled, threshold, reaped
)

// Config is what Setup needs.
type Config struct {
	Mode        string // Off, Stdout, Prometheus or GCP
	MetricsAddr string // the Prometheus endpoint's listen address (Prometheus mode)
	Project     string // the Google Cloud project (GCP mode)
	Service     string // service.name: "keyplane", or the function's name
	// Interval is how often metrics are exported (Stdout and GCP; default
	// 60 s, Cloud Monitoring's finest useful resolution for custom metrics).
	Interval time.Duration
	// Out is where Stdout mode prints (default os.Stdout, set by the caller).
	Out io.Writer
}

// Telemetry holds the meter and tracer of a process. The zero value and
// nil are off: every method does nothing.
type Telemetry struct {
	meter  metric.Meter
	tracer trace.Tracer
	regs   []metric.Registration
	addr   string // the Prometheus endpoint's address, once listening
}

// MetricsAddr returns the address the Prometheus endpoint listens on
// ("" in the other modes).
func (t *Telemetry) MetricsAddr() string {
	if t == nil {
		return ""
	}
	return t.addr
}

// On reports whether t records anything.
func (t *Telemetry) On() bool { return t != nil && t.meter != nil }

// Tracer returns t's tracer, nil when t is off (the services trace
// nothing then).
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil {
		return nil
	}
	return t.tracer
}

// New returns a Telemetry on the given providers (tp may be nil: no
// traces). Setup uses it; tests use it with a manual reader.
func New(mp metric.MeterProvider, tp trace.TracerProvider) *Telemetry {
	t := &Telemetry{meter: mp.Meter("github.com/keyplane/keyplane")}
	if tp != nil {
		t.tracer = tp.Tracer("github.com/keyplane/keyplane")
	}
	return t
}

// Setup builds the Telemetry of cfg.Mode. The returned shutdown flushes
// what is buffered (the last metrics, pending spans), stops the Prometheus
// endpoint and must be called once, at exit. Off returns a nil Telemetry.
func Setup(ctx context.Context, cfg Config, log *slog.Logger) (_ *Telemetry, shutdown func(context.Context) error, err error) {
	nothing := func(context.Context) error { return nil }
	if cfg.Mode == Off || cfg.Mode == "" {
		return nil, nothing, nil
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", cfg.Service)))
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	var (
		reader   sdkmetric.Reader
		spans    sdktrace.SpanExporter
		closers  []func(context.Context) error
		promAddr string
	)
	switch cfg.Mode {
	case Stdout:
		me, err := stdoutmetric.New(stdoutmetric.WithWriter(cfg.Out))
		if err != nil {
			return nil, nil, fmt.Errorf("telemetry: stdout metrics: %w", err)
		}
		reader = sdkmetric.NewPeriodicReader(me, sdkmetric.WithInterval(cfg.Interval))
		if spans, err = stdouttrace.New(stdouttrace.WithWriter(cfg.Out)); err != nil {
			return nil, nil, fmt.Errorf("telemetry: stdout traces: %w", err)
		}
	case Prometheus:
		reg := prometheus.NewRegistry()
		pe, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return nil, nil, fmt.Errorf("telemetry: prometheus: %w", err)
		}
		reader = pe
		stop, addr, err := serveMetrics(cfg.MetricsAddr, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), log)
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, stop)
		promAddr = addr
	case GCP:
		me, err := mexporter.New(mexporter.WithProjectID(cfg.Project))
		if err != nil {
			return nil, nil, fmt.Errorf("telemetry: Cloud Monitoring exporter: %w", err)
		}
		reader = sdkmetric.NewPeriodicReader(me, sdkmetric.WithInterval(cfg.Interval))
		if spans, err = texporter.New(texporter.WithProjectID(cfg.Project)); err != nil {
			return nil, nil, fmt.Errorf("telemetry: Cloud Trace exporter: %w", err)
		}
	default:
		return nil, nil, fmt.Errorf("telemetry: unknown mode %q (want off, stdout, prometheus or gcp)", cfg.Mode)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))
	closers = append([]func(context.Context) error{mp.Shutdown}, closers...)
	var tp trace.TracerProvider
	if spans != nil {
		stp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
		closers = append([]func(context.Context) error{stp.Shutdown}, closers...)
		tp = stp
	}
	shutdown = func(ctx context.Context) error {
		var errList []error
		for _, c := range closers {
			errList = append(errList, c(ctx))
		}
		return errors.Join(errList...)
	}
	t := New(mp, tp)
	t.addr = promAddr
	return t, shutdown, nil
}

// serveMetrics serves h on addr at /metrics until the returned stop.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (stop func(context.Context) error, listening string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("telemetry: the metrics endpoint (KEYPLANE_METRICS_ADDR=%s): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the metrics endpoint stopped", "error", err)
		}
	}()
	log.Info("serving Prometheus metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return srv.Shutdown, ln.Addr().String(), nil
}

// VerifyLatency returns the func that records each verify's duration in
// the latency histogram (verify.Options.ObserveLatency), or nil when t is
// off, so that verify does not even read the clock for it.
func (t *Telemetry) VerifyLatency() (func(time.Duration), error) {
	if !t.On() {
		return nil, nil
	}
	h, err := t.meter.Float64Histogram(NameDuration, metric.WithUnit("s"),
		metric.WithDescription("How long a verify took, in the service"),
		metric.WithExplicitBucketBoundaries(1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2, 0.1, 1))
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	return func(d time.Duration) { h.Record(ctx, d.Seconds()) }, nil
}

// attrs returns one attribute set per value of key.
func attrs(key string, values ...string) []metric.ObserveOption {
	opts := make([]metric.ObserveOption, len(values))
	for i, v := range values {
		opts[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String(key, v)))
	}
	return opts
}

// ObserveVerifier reports v's decisions by code, its cache results, its
// feed lag and its shared-limiter fallbacks.
func (t *Telemetry) ObserveVerifier(v *verify.Verifier) error {
	if !t.On() {
		return nil
	}
	decisions, err := t.meter.Int64ObservableCounter(NameDecisions, metric.WithDescription("Verify decisions, by code; UNAVAILABLE: no safe decision could be made"))
	if err != nil {
		return err
	}
	cache, err := t.meter.Int64ObservableCounter(NameCache, metric.WithDescription("Verify's key lookups, by cache result"))
	if err != nil {
		return err
	}
	lag, err := t.meter.Float64ObservableGauge(NameFeedLag, metric.WithUnit("s"),
		metric.WithDescription("Time since the last successful poll of the key change feed began: how stale a revocation can be"))
	if err != nil {
		return err
	}
	fallbacks, err := t.meter.Int64ObservableCounter(NameLimiterFallbacks,
		metric.WithDescription("Verifies whose per-minute limits were decided on this instance alone because the shared limiter (Redis) failed"))
	if err != nil {
		return err
	}
	codes := make([]string, 0, len(verify.Codes)+1)
	for _, c := range verify.Codes {
		codes = append(codes, string(c))
	}
	byCode := attrs("code", append(codes, "UNAVAILABLE")...)
	byResult := attrs("result", "hit", "negative_hit", "miss")
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c := v.Counts()
		for i, n := range c.Decisions {
			o.ObserveInt64(decisions, int64(n), byCode[i])
		}
		o.ObserveInt64(decisions, int64(c.Failures), byCode[len(byCode)-1])
		for i, n := range c.CacheResults {
			o.ObserveInt64(cache, int64(n), byResult[i])
		}
		o.ObserveFloat64(lag, v.FeedLag().Seconds())
		o.ObserveInt64(fallbacks, int64(c.LimiterFallbacks))
		return nil
	}, decisions, cache, lag, fallbacks)
	t.regs = append(t.regs, reg)
	return err
}

// ObserveConsumer reports the usage events c counted and the dead letters
// it recorded.
func (t *Telemetry) ObserveConsumer(c *meter.Consumer) error {
	if !t.On() {
		return nil
	}
	events, err := t.meter.Int64ObservableCounter(NameEvents, metric.WithDescription("Usage events counted into the ledger"))
	if err != nil {
		return err
	}
	dead, err := t.meter.Int64ObservableCounter(NameDeadLetters, metric.WithDescription("Usage dead letters recorded: events not counted"))
	if err != nil {
		return err
	}
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n := c.Counts()
		o.ObserveInt64(events, int64(n.Events))
		o.ObserveInt64(dead, int64(n.DeadLetters))
		return nil
	}, events, dead)
	t.regs = append(t.regs, reg)
	return err
}

// ObserveStripeExporter reports the Stripe exporter x's counts, read from
// it at each collection.
func (t *Telemetry) ObserveStripeExporter(x *stripeexport.Exporter) error {
	if !t.On() {
		return nil
	}
	c, err := t.meter.Int64ObservableCounter(NameStripeExport, metric.WithDescription("Stripe usage export: meter events and usage events, by outcome"))
	if err != nil {
		return err
	}
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n := x.Counts()
		for outcome, v := range map[string]uint64{"sent": n.Sent, "already": n.Already, "skipped": n.Skipped,
			"unmapped": n.Unmapped, "dead_letter": n.DeadLetters, "retry": n.Retries} {
			o.ObserveInt64(c, int64(v), metric.WithAttributes(attribute.String("outcome", outcome)))
		}
		return nil
	}, c)
	t.regs = append(t.regs, reg)
	return err
}

// ObserveQueue reports the depth of each subscription of the embedded
// queue q, read from it at each collection.
func (t *Telemetry) ObserveQueue(q *embeddedqueue.Queue) error {
	if !t.On() {
		return nil
	}
	depth, err := t.meter.Int64ObservableGauge(NameQueueDepth, metric.WithDescription("Messages held by the embedded queue, by subscription"))
	if err != nil {
		return err
	}
	reg, err := t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		d, err := q.Depth(ctx)
		if err != nil {
			return err
		}
		for sub, n := range d {
			o.ObserveInt64(depth, n, metric.WithAttributes(attribute.String("subscription", sub)))
		}
		return nil
	}, depth)
	t.regs = append(t.regs, reg)
	return err
}

// ObserveSweeper reports the actions s's runs took, by kind.
func (t *Telemetry) ObserveSweeper(s *sweep.Sweeper) error {
	if !t.On() {
		return nil
	}
	actions, err := t.meter.Int64ObservableCounter(NameSweep, metric.WithDescription("Sweep actions, by kind"))
	if err != nil {
		return err
	}
	byKind := attrs("kind", sweep.ActionKinds[:]...)
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i, n := range s.Actions() {
			o.ObserveInt64(actions, int64(n), byKind[i])
		}
		return nil
	}, actions)
	t.regs = append(t.regs, reg)
	return err
}
