package wire

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/logging"
)

// Function returns the App of a Cloud Function instance: built by build
// from the environment (config.Cloud defaults) on first Get, and its
// background work started. A start-up that fails is logged and tried
// again on a later Get (Lazy).
//
// The App lives as long as the instance. Cloud Run, under Cloud Functions,
// sends SIGTERM before it stops an instance, and ends it 10 s later; until
// then the instance takes no new request. So on SIGTERM the App is closed,
// which waits for its background work (for Verify, the last flush of the
// client IPs it saw), and the signal is raised again, so that the process
// ends as it would have without this handler, only after that work.
func Function(build Builder) *Lazy[*App] {
	return NewLazy(func() (*App, error) { return startFunction(build) })
}

func startFunction(build Builder) (*App, error) {
	log := logging.New(os.Stdout, slog.LevelInfo)
	cfg, err := config.FromEnv(config.Cloud(), os.Getenv)
	if err != nil {
		log.Error("start-up failed", "error", err)
		return nil, err
	}
	// Lines written while requests are in flight are batched; the last
	// request in flight flushes them, so an idle instance holds none.
	logs := logging.NewBuffer(os.Stdout, nil)
	log = logging.New(logs, cfg.LogLevel)
	// Start-up serves no one request: it runs on a context of its own.
	app, err := build(context.Background(), cfg, log)
	if err != nil {
		log.Error("start-up failed", "error", err)
		return nil, err
	}
	terminated, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	if err := app.Start(terminated); err != nil {
		stop()
		app.Close()
		log.Error("start-up failed", "error", err)
		logs.Close()
		return nil, err
	}
	go func() {
		<-terminated.Done()
		if err := app.Close(); err != nil {
			log.Error("closing on SIGTERM", "error", err)
		}
		logs.Close()
		stop() // SIGTERM's default action again, unless another App still waits for it
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			p.Signal(syscall.SIGTERM)
		}
	}()
	return app, nil
}

// FunctionHandler returns the handler of an HTTP Cloud Function whose App
// build builds (Function). It answers 503 while the function cannot start.
func FunctionHandler(build Builder) http.Handler {
	app := Function(build)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := app.Get()
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"UNAVAILABLE","message":"the function is starting or misconfigured; retry later"}}` + "\n"))
			return
		}
		a.Handler.ServeHTTP(w, r)
	})
}
