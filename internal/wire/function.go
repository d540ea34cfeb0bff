package wire

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/logging"
	"github.com/keyplane/keyplane/internal/meter"
	"github.com/keyplane/keyplane/internal/notify"
)

// lazyApp builds a function's App from the environment (config.Cloud
// defaults) on first use, once per instance. If building fails it tries
// again on a later call (at most every 5 s) instead of keeping a broken
// instance alive. The App lives as long as the instance: it is never
// closed.
type lazyApp struct {
	function string

	mu        sync.Mutex
	app       *App
	err       error
	lastTried time.Time
}

func (l *lazyApp) get() (*App, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.app != nil || time.Since(l.lastTried) < 5*time.Second {
		return l.app, l.err
	}
	l.lastTried = time.Now()
	log := logging.New(os.Stdout, slog.LevelInfo)
	cfg, err := config.FromEnv(config.Cloud(), os.Getenv)
	if err == nil {
		log = logging.New(os.Stdout, cfg.LogLevel)
		l.app, err = Open(context.Background(), cfg, log, l.function)
	}
	if err != nil {
		log.Error("start-up failed", "function", l.function, "error", err)
		l.err = err
		return nil, err
	}
	if l.function == httpapi.FuncVerify {
		// Keep the cache fresh between requests while the instance has CPU;
		// requests poll themselves when it did not (see internal/verify).
		go l.app.Verifier.Run(context.Background())
	}
	l.err = nil
	return l.app, nil
}

// FunctionHandler returns the handler of the named HTTP Cloud Function. It
// answers 503 while the function cannot start.
func FunctionHandler(function string) http.Handler {
	l := &lazyApp{function: function}
	var once sync.Once
	var h http.Handler
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app, err := l.get()
		if err != nil || app == nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"UNAVAILABLE","message":"the function is starting or misconfigured; retry later"}}` + "\n"))
			return
		}
		once.Do(func() { h = app.Server.Handler(function) })
		h.ServeHTTP(w, r)
	})
}

// LazyConsumer returns a func that gives the RecordUsage function's usage
// consumer, built on first use.
func LazyConsumer() func() (*meter.Consumer, error) {
	l := &lazyApp{function: FuncRecordUsage}
	return func() (*meter.Consumer, error) {
		app, err := l.get()
		if err != nil {
			return nil, err
		}
		return app.Consumer, nil
	}
}

// LazyDeliverer returns a func that gives the DeliverNotification
// function's notify.Deliverer, built on first use.
func LazyDeliverer() func() (*notify.Deliverer, error) {
	l := &lazyApp{function: FuncDeliverNotification}
	return func() (*notify.Deliverer, error) {
		app, err := l.get()
		if err != nil {
			return nil, err
		}
		return app.Deliverer, nil
	}
}
