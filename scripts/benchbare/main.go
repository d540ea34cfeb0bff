// Command benchbare is the baseline of scripts/bench-http.sh: a bare
// net/http server that answers every POST with a fixed JSON body (the
// bytes of keyplane's VALID decision for the benchmark key), so that
// keyplane's verify throughput can be reported as a fraction of what
// net/http alone does on the same machine, with the same request and
// response sizes. It reads the request body, as any handler must, and
// does nothing else. Loopback only; not part of keyplane.
//
//	benchbare -addr 127.0.0.1:9091 -body decision.json
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback address to listen on")
	bodyFile := flag.String("body", "", "file holding the response body (required)")
	flag.Parse()
	if !strings.HasPrefix(*addr, "127.0.0.1:") {
		log.Fatal("benchbare: -addr must be a 127.0.0.1 address")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatalf("benchbare: %v", err)
	}
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 8<<10)); err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", length)
		w.Write(body)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("benchbare: %v", err)
	}
	// The same server settings as `keyplane serve`.
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	fmt.Printf("benchbare listening on http://%s (%d-byte body)\n", ln.Addr(), len(body))
	log.Fatal(srv.Serve(ln))
}
