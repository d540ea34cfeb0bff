// Package telemetry owns keyplane's OpenTelemetry metrics and traces: it
// sets up the meter and tracer providers for the configured mode (off,
// stdout, a Prometheus endpoint, or Google Cloud Monitoring and Cloud
// Trace) and turns the counters the services keep into OTel instruments.
//
// The services count with plain atomics (verify.Verifier.Counts,
// meter.Consumer.Counts, sweep.Sweeper.Actions); the instruments here are
// observable ones that read those counters when the SDK collects, so a
// verify costs no allocation and no OTel call for them whether telemetry
// is on or off. The only instrument recorded on the verify path is the
// latency histogram, and only when telemetry is on (Telemetry.VerifyLatency;
// its cost is in docs/benchmarks.md). Traces cover meter batches and
// sweep runs, never single verifies.
//
// The metric names are the Names constants; in Cloud Monitoring they are
// workload.googleapis.com/<name> (infra/monitoring.tf), in Prometheus the
// name with dots as underscores (and _total for counters).
package telemetry
