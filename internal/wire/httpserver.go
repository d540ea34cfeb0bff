package wire

import (
	"net/http"
	"time"

	"github.com/keyplane/keyplane/internal/httpapi"
)

// HTTPServer returns the HTTP server of `keyplane serve` for h: timeouts
// that a slow or idle client cannot stretch, and request headers bounded
// by httpapi.MaxHeaderBytes (net/http answers 431 itself past it and its
// 4 KB read slop; the handler answers 431 with a JSON error below that).
//
// The Cloud Functions are served by the Functions Framework's server,
// which keyplane does not configure (net/http's defaults: 1 MB of
// headers); there the handler's own check holds the same limit.
func HTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    httpapi.MaxHeaderBytes,
	}
}
