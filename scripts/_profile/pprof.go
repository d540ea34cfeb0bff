// Added to cmd/keyplane by scripts/profile-serve.sh through go build
// -overlay, never built into keyplane itself: it serves net/http/pprof on
// PPROF_ADDR (a loopback address) with mutex profiling on.
package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	addr := os.Getenv("PPROF_ADDR")
	if addr == "" {
		return
	}
	runtime.SetMutexProfileFraction(10)
	go http.ListenAndServe(addr, nil)
}
