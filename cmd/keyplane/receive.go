package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/internal/webhook"
)

// receiveWebhooks runs an owner's webhook endpoint for trying keyplane
// locally: it verifies each notification's Standard Webhooks signature
// with the whsec_ secret in --secret-file (read on every request, so it
// can be written after the receiver starts, once PUT
// /v1/owners/{owner}/webhook has returned it) and prints what it got.
// --fail N answers the first N deliveries 503, to watch the retries.
//
// It honours KEYPLANE_CLOCK_OFFSET like serve: notifications from a serve
// whose clock runs ahead carry timestamps from that clock.
func receiveWebhooks(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("receive-webhooks", "receive-webhooks --secret-file FILE [--addr 127.0.0.1:9000] [--fail N]")
	addr := fs.String("addr", "127.0.0.1:9000", "address to listen on")
	secretFile := fs.String("secret-file", "", "file holding the owner's whsec_ secret (required)")
	failFirst := fs.Int("fail", 0, "answer the first N deliveries 503")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *secretFile == "" {
		return &usageError{fs, errors.New("receive-webhooks: --secret-file is required")}
	}
	var offset time.Duration
	if v := getenv("KEYPLANE_CLOCK_OFFSET"); v != "" {
		var err error
		if offset, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("receive-webhooks: KEYPLANE_CLOCK_OFFSET must be a duration like 24h; got %q", v)
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "receiving owner notifications on http://%s/ (signatures checked with %s)\n", ln.Addr(), *secretFile)
	var failed atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		raw, err := os.ReadFile(*secretFile)
		if err != nil {
			fmt.Fprintf(stdout, "REFUSED %s: no secret to check it with: %v\n", r.Header.Get(webhook.HeaderID), err)
			http.Error(w, "no secret", http.StatusServiceUnavailable)
			return
		}
		secret, err := webhook.ParseSecret(strings.TrimSpace(string(raw)))
		if err == nil {
			_, err = webhook.Verify([]webhook.Secret{secret}, r.Header, body, time.Now().Add(offset), webhook.DefaultTolerance)
		}
		if err != nil {
			fmt.Fprintf(stdout, "REFUSED %s: %v\n", r.Header.Get(webhook.HeaderID), err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if n := failed.Add(1); n <= int64(*failFirst) {
			fmt.Fprintf(stdout, "verified %s, answering 503 (failure %d of %d): keyplane will retry\n", r.Header.Get(webhook.HeaderID), n, *failFirst)
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(stdout, "verified %s %s\n", r.Header.Get(webhook.HeaderID), body)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
