// Command benchrate is an open-loop, fixed-rate HTTP load generator for
// scripts/bench-http.sh (wrk2 is not packaged for Debian). It schedules
// POSTs at -rate per second for -duration and records each request's
// latency from the time it was scheduled to be sent, not from when it was
// sent, so that a stalled server is charged for the requests it held up
// (no coordinated omission). It prints one line of results. Loopback
// only; not part of keyplane.
//
//	benchrate -url http://127.0.0.1:9090/v1/verify -rate 5000 -duration 10s \
//	    -body verify.json -header 'Authorization: Bearer …' -expect '"code":"VALID"'
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	target := flag.String("url", "", "URL to POST to (127.0.0.1 only)")
	rate := flag.Int("rate", 5000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send (after the warm-up)")
	warmup := flag.Duration("warmup", time.Second, "sending at the same rate before measuring, not recorded")
	bodyFile := flag.String("body", "", "file holding the request body")
	header := flag.String("header", "", `one request header, "Name: value"`)
	expect := flag.String("expect", "", "a substring every response body must contain (counted as bad otherwise)")
	conns := flag.Int("conns", 64, "maximum connections (and so requests in flight)")
	flag.Parse()

	u, err := url.Parse(*target)
	if err != nil || u.Hostname() != "127.0.0.1" {
		log.Fatal("benchrate: -url must be an http://127.0.0.1:port/ URL")
	}
	if *rate <= 0 || *duration <= 0 {
		log.Fatal("benchrate: -rate and -duration must be positive")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		log.Fatalf("benchrate: %v", err)
	}
	hname, hvalue, _ := strings.Cut(*header, ":")
	hvalue = strings.TrimSpace(hvalue)

	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxConnsPerHost:     *conns,
		MaxIdleConnsPerHost: *conns,
		IdleConnTimeout:     time.Minute,
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	interval := time.Second / time.Duration(*rate)
	total := int(*duration / interval)
	skip := int(*warmup / interval)
	lat := make([]time.Duration, total) // by request index; -1 = failed
	var errors, bad atomic.Int64
	var wg sync.WaitGroup

	send := func(i int, scheduled time.Time) {
		defer wg.Done()
		ctx := context.Background()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, *target, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if hname != "" {
			req.Header.Set(hname, hvalue)
		}
		res, err := client.Do(req)
		if err != nil {
			if i >= skip {
				errors.Add(1)
				lat[i-skip] = -1
			}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		d := time.Since(scheduled)
		if i < skip {
			return
		}
		switch {
		case err != nil:
			errors.Add(1)
			lat[i-skip] = -1
		case res.StatusCode != http.StatusOK || (*expect != "" && !bytes.Contains(b, []byte(*expect))):
			bad.Add(1)
			lat[i-skip] = d
		default:
			lat[i-skip] = d
		}
	}

	// Dispatch every request whose scheduled time has come, then sleep
	// until the next one: sleeping late sends a small burst on time
	// rather than shifting the schedule.
	start := time.Now().Add(10 * time.Millisecond)
	n := skip + total
	for i := 0; i < n; {
		now := time.Now()
		for ; i < n; i++ {
			at := start.Add(time.Duration(i) * interval)
			if at.After(now) {
				time.Sleep(at.Sub(now))
				break
			}
			wg.Add(1)
			go send(i, at)
		}
	}
	sendEnd := time.Now()
	wg.Wait()

	var ok []time.Duration
	for _, d := range lat {
		if d >= 0 {
			ok = append(ok, d)
		}
	}
	slices.Sort(ok)
	q := func(p float64) string {
		if len(ok) == 0 {
			return "n/a"
		}
		i := int(p * float64(len(ok)-1))
		return fmt.Sprintf("%.3fms", float64(ok[i])/float64(time.Millisecond))
	}
	achieved := float64(n) / sendEnd.Sub(start).Seconds()
	fmt.Printf("rate=%d/s scheduled=%d sent_rate=%.0f/s errors=%d bad=%d p50=%s p90=%s p99=%s p999=%s max=%s\n",
		*rate, total, achieved, errors.Load(), bad.Load(), q(0.50), q(0.90), q(0.99), q(0.999), q(1))
}
