package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/plan"
	"github.com/keyplane/keyplane/internal/race"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
	"github.com/keyplane/keyplane/internal/store/sqlitestore"
	"github.com/keyplane/keyplane/internal/verify"
)

// The verify route in process, without the network: what keyplane's
// handler chain (auth, body decode, Verify, decision encode, request log)
// costs per request, against a bare handler that reads the same request
// and writes the same response bytes, in the same run. The two share the
// harness (a new *http.Request per op, a discarding ResponseWriter), so
// the difference is keyplane's. scripts/bench-http.sh measures the same
// comparison over loopback HTTP.
//
//	go test -run '^$' -bench VerifyHandler -benchmem -count 10 ./internal/httpapi

const benchToken = "bench-admin-token-0123456789"

// benchHandler returns the Verify function's handler on the embedded
// backends with log as its logger, and a verify request body for a key
// whose per-minute limit is never reached.
func benchHandler(b testing.TB, log *slog.Logger) (http.Handler, []byte) {
	b.Helper()
	srv, body := benchServer(b, log)
	return srv.Handler(httpapi.FuncVerify), body
}

// benchServer is benchHandler's Server, for a caller to set more fields
// on before it builds the handler.
func benchServer(b testing.TB, log *slog.Logger) (*httpapi.Server, []byte) {
	b.Helper()
	dir := b.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "k.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	vault, err := filevault.Open(filepath.Join(dir, "vault"), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { vault.Close() })
	h, _ := apikey.NewHasher(bytes.Repeat([]byte("k"), 32))
	plans := plan.Builtin()
	svc := &keys.Service{Store: st, Vault: vault, Hasher: h, Plans: plans, Prefix: "kp_live", Logger: log}
	c, err := svc.Create(context.Background(), "bench", keys.CreateRequest{Owner: "acct_bench", Plan: "enterprise",
		Limits: plan.Limits{"requests_per_minute": 1_000_000_000_000}}, "")
	if err != nil {
		b.Fatal(err)
	}
	srv := &httpapi.Server{
		Keys: svc, Verifier: verify.New(st, h, plans, clock.Real{}, &verify.Options{Logger: log}),
		Plans: plans, Auth: httpapi.NewTokenAuth(benchToken), Logger: log,
	}
	return srv, []byte(`{"key": "` + c.Secret + `", "scope": "generate"}`)
}

// discardWriter is a ResponseWriter that keeps only the status and size.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// serve runs one request through h, as net/http would hand it over
// after parsing, and returns the status and body size.
func serve(h http.Handler, w *discardWriter, body []byte) (int, int) {
	r := &http.Request{
		Method: http.MethodPost, URL: verifyURL, RequestURI: verifyURL.Path, Host: "127.0.0.1",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, RemoteAddr: "127.0.0.1:40000",
		Header: http.Header{
			"Authorization": {"Bearer " + benchToken},
			"Content-Type":  {"application/json"},
			"User-Agent":    {"bench"},
		},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}
	clear(w.h)
	w.code, w.n = http.StatusOK, 0
	h.ServeHTTP(w, r)
	return w.code, w.n
}

var verifyURL = &url.URL{Path: "/v1/verify"}

// bareVerifyHandler returns a bare net/http handler that reads the
// request body and answers with the bytes kp answers for body: the
// baseline of the VerifyHandler benchmarks, as scripts/benchbare is of
// scripts/bench-http.sh.
func bareVerifyHandler(b *testing.B, kp http.Handler, body []byte) http.Handler {
	b.Helper()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/verify", bytes.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+benchToken)
	kp.ServeHTTP(rec, r)
	decision := rec.Body.Bytes()
	if !bytes.Contains(decision, []byte(`"code":"VALID"`)) {
		b.Fatalf("decision %s", decision)
	}
	length := strconv.Itoa(len(decision))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 8<<10)); err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", length)
		w.Write(decision)
	})
}

// perOp is the time per operation of a finished benchmark loop.
func perOp(b *testing.B) float64 { return float64(b.Elapsed()) / float64(b.N) }

// reportRatio reports ns/op ÷ the bare baseline's ns/op of the same run
// as "x-bare", if the baseline ran (it runs first unless -bench filters
// it out).
func reportRatio(b *testing.B, bare float64) {
	if bare > 0 {
		b.ReportMetric(perOp(b)/bare, "x-bare")
	}
}

func BenchmarkVerifyHandler(b *testing.B) {
	run := func(b *testing.B, h http.Handler, body []byte) {
		w := &discardWriter{h: http.Header{}}
		if code, _ := serve(h, w, body); code != http.StatusOK {
			b.Fatalf("status %d", code)
		}
		b.ReportAllocs()
		for b.Loop() {
			serve(h, w, body)
		}
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
	var bare float64 // ns/op of the bare baseline, this run
	b.Run("bare", func(b *testing.B) {
		kp, body := benchHandler(b, slog.New(slog.DiscardHandler))
		run(b, bareVerifyHandler(b, kp, body), body)
		bare = perOp(b)
	})
	for _, c := range []struct {
		name string
		log  *slog.Logger
	}{
		{"log=none", slog.New(slog.DiscardHandler)},
		{"log=error", logging.New(io.Discard, slog.LevelError)},
		{"log=info", logging.New(io.Discard, slog.LevelInfo)},
		// As `keyplane serve` logs: held in a Buffer, flushed by the last
		// request out (here every request, as they run one at a time).
		{"log=info,buffered", logging.New(logging.NewBuffer(io.Discard, nil), slog.LevelInfo)},
	} {
		b.Run(c.name, func(b *testing.B) {
			h, body := benchHandler(b, c.log)
			run(b, h, body)
			reportRatio(b, bare)
		})
	}
}

// countingFile is a log file that counts the writes it receives.
type countingFile struct {
	f      *os.File
	writes atomic.Int64
}

func (c *countingFile) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.f.Write(p)
}

// BenchmarkVerifyHandlerParallel is the verify route with 16 requests at
// a time per CPU, as net/http serves wrk's 32 connections on 2 CPUs in
// scripts/bench-http.sh (each request runs to its end unless it yields or
// is preempted, so few are between Begin and End at once), with the
// request log in a Buffer over a real file as `keyplane serve` writes it:
// "writes/op" is the log file's write calls per request (1 if every
// request flushed its own line), "x-bare" the ratio to the bare handler's
// ns/op in the same run.
//
//	go test -run '^$' -bench VerifyHandlerParallel -benchmem -cpu 1,2 ./internal/httpapi
func BenchmarkVerifyHandlerParallel(b *testing.B) {
	run := func(b *testing.B, h http.Handler, body []byte) {
		b.ReportAllocs()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			w := &discardWriter{h: http.Header{}}
			for pb.Next() {
				if code, _ := serve(h, w, body); code != http.StatusOK {
					b.Errorf("status %d", code)
					return
				}
			}
		})
	}
	var bare float64
	b.Run("bare", func(b *testing.B) {
		kp, body := benchHandler(b, slog.New(slog.DiscardHandler))
		run(b, bareVerifyHandler(b, kp, body), body)
		bare = perOp(b)
	})
	b.Run("log=error", func(b *testing.B) {
		h, body := benchHandler(b, logging.New(io.Discard, slog.LevelError))
		run(b, h, body)
		reportRatio(b, bare)
	})
	b.Run("log=info,buffered,file", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "requests.log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		out := &countingFile{f: f}
		logs := logging.NewBuffer(out, nil)
		h, body := benchHandler(b, logging.New(logs, slog.LevelInfo))
		out.writes.Store(0)
		run(b, h, body)
		b.ReportMetric(float64(out.writes.Load())/float64(b.N), "writes/op")
		reportRatio(b, bare)
		if err := logs.Close(); err != nil {
			b.Fatal(err)
		}
	})
}

// The verify route's allocations per request, beyond the harness's own
// (a bare handler's count through serve): the key and scope strings it
// decodes and, by this count, two that a memory profile puts in serve
// itself. A body within its declared Content-Length is read without a
// MaxBytesReader. The ResponseWriter wrapper and the body and decision buffers are recycled,
// the response headers are shared values, and the request log appends its
// line into a recycled buffer (logging.LogRequest), so the info level
// allocates nothing more than the error level; before that the route took
// 13 allocations at error level and 17 at info, then 5 and 9, then 5 and 5.
func TestVerifyRouteAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a store")
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, c := range []struct {
		name string
		log  *slog.Logger
		max  float64 // allocations of the route itself
	}{
		{"log=error", logging.New(io.Discard, slog.LevelError), 4},
		{"log=info,buffered", logging.New(logging.NewBuffer(io.Discard, nil), slog.LevelInfo), 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, body := benchHandler(t, c.log)
			w := &discardWriter{h: http.Header{}}
			if code, _ := serve(h, w, body); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			if race.Enabled {
				return // the race detector makes sync.Pool drop items; make test runs this again without it
			}
			harness := testing.AllocsPerRun(200, func() { serve(bare, w, body) })
			n := testing.AllocsPerRun(200, func() {
				if code, _ := serve(h, w, body); code != http.StatusOK {
					t.Fatalf("status %d", code)
				}
			})
			if n-harness > c.max {
				t.Errorf("%.0f allocations per request (%.0f of them the harness's), want at most %.0f of the route's", n, harness, c.max)
			}
		})
	}
}
