package wire

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/keyplane/keyplane/pkg/config"
	"github.com/keyplane/keyplane/pkg/httpapi"
	"github.com/keyplane/keyplane/pkg/logging"
)

// FunctionHandler returns the handler of the named Cloud Function. It
// builds the App from the environment (config.Cloud defaults) on the first
// request, once per instance, and reuses it; if building fails it answers
// 503 and tries again on a later request, instead of keeping a broken
// instance alive.
func FunctionHandler(function string) http.Handler {
	f := &lazyFunction{name: function, log: logging.New(os.Stdout, slog.LevelInfo)}
	return f
}

type lazyFunction struct {
	name string
	log  *slog.Logger

	mu        sync.Mutex
	handler   http.Handler
	lastTried time.Time
}

func (f *lazyFunction) get(ctx context.Context) http.Handler {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.handler != nil || time.Since(f.lastTried) < 5*time.Second {
		return f.handler
	}
	f.lastTried = time.Now()
	cfg, err := config.FromEnv(config.Cloud(), os.Getenv)
	if err != nil {
		f.log.Error("configuration", "function", f.name, "error", err)
		return nil
	}
	log := logging.New(os.Stdout, cfg.LogLevel)
	// The App lives as long as the instance: it is never closed.
	app, err := Open(context.WithoutCancel(ctx), cfg, log)
	if err != nil {
		log.Error("start-up failed", "function", f.name, "error", err)
		return nil
	}
	if f.name == httpapi.FuncVerify {
		// Keep the cache fresh between requests while the instance has CPU;
		// requests poll themselves when it did not (see pkg/verify).
		go app.Verifier.Run(context.Background())
	}
	f.handler = app.Server.Handler(f.name)
	return f.handler
}

func (f *lazyFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := f.get(r.Context())
	if h == nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"UNAVAILABLE","message":"the function is starting or misconfigured; retry later"}}` + "\n"))
		return
	}
	h.ServeHTTP(w, r)
}
