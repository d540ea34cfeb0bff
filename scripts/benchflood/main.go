// Command benchflood sends POST /v1/verify requests to a local keyplane
// as fast as -conns connections allow, for -n requests or -duration,
// whichever ends first, and samples the server's resident memory
// (VmRSS in /proc/<pid>/status) every second. With -key it verifies that
// one key every time; without, every request carries a new random
// well-formed key (valid checksum, from apikey.Generate), which no
// cache can answer: the flood an attacker guessing keys would send. Used
// by scripts/bench-flood.sh; loopback only; not part of keyplane.
//
//	benchflood -url http://127.0.0.1:9090/v1/verify -token … -pid 1234 -duration 60s
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
)

func main() {
	target := flag.String("url", "", "verify URL (127.0.0.1 only)")
	token := flag.String("token", "", "admin bearer token")
	key := flag.String("key", "", "verify this key every time (default: a new random key per request)")
	prefix := flag.String("prefix", "kp_live", "prefix of the random keys")
	n := flag.Int64("n", 1_000_000, "stop after this many requests")
	duration := flag.Duration("duration", 60*time.Second, "stop after this long")
	conns := flag.Int("conns", 32, "concurrent connections")
	pid := flag.Int("pid", 0, "server process whose VmRSS to sample (required)")
	flag.Parse()

	u, err := url.Parse(*target)
	if err != nil || u.Hostname() != "127.0.0.1" {
		log.Fatal("benchflood: -url must be an http://127.0.0.1:port/ URL")
	}
	if *pid <= 0 {
		log.Fatal("benchflood: -pid is required")
	}
	if _, err := rssKB(*pid); err != nil {
		log.Fatalf("benchflood: %v", err)
	}
	mode := "random keys"
	if *key != "" {
		mode = "one valid key"
	}

	tr := &http.Transport{MaxConnsPerHost: *conns, MaxIdleConnsPerHost: *conns}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()

	var sent, failed atomic.Int64
	var codesMu sync.Mutex
	codes := map[string]int64{}
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := map[string]int64{}
			defer func() {
				codesMu.Lock()
				for c, k := range seen {
					codes[c] += k
				}
				codesMu.Unlock()
			}()
			for ctx.Err() == nil && sent.Add(1) <= *n {
				k := *key
				if k == "" {
					k, _ = apikey.Generate(*prefix)
				}
				body, _ := json.Marshal(map[string]string{"key": k})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, *target, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+*token)
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				var d struct {
					Code string `json:"code"`
				}
				raw, _ := io.ReadAll(res.Body)
				res.Body.Close()
				json.Unmarshal(raw, &d)
				if d.Code == "" {
					d.Code = "HTTP_" + strconv.Itoa(res.StatusCode)
				}
				seen[d.Code]++
			}
		}()
	}

	// Sample RSS every second until the workers finish.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	start := time.Now()
	var peak, last int64
	sample := func() {
		kb, err := rssKB(*pid)
		if err != nil {
			log.Printf("benchflood: %v", err)
			return
		}
		last = kb
		peak = max(peak, kb)
		fmt.Printf("t=%3.0fs requests=%d rss=%.1fMiB\n", time.Since(start).Seconds(), min(sent.Load(), *n), float64(kb)/1024)
	}
	sample()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			sample()
		}
	}
	elapsed := time.Since(start)
	sample()
	total := int64(0)
	for _, c := range codes {
		total += c
	}
	fmt.Printf("mode=%q requests=%d failed=%d elapsed=%.1fs rate=%.0f/s codes=%v peak_rss=%.1fMiB final_rss=%.1fMiB\n",
		mode, total, failed.Load(), elapsed.Seconds(), float64(total)/elapsed.Seconds(), codes,
		float64(peak)/1024, float64(last)/1024)
}

// rssKB returns the VmRSS of process pid in KiB.
func rssKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
