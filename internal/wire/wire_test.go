package wire

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
	"github.com/keyplane/keyplane/internal/config"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/secrets/filevault"
)

// embedded returns a configuration on the embedded backends in a fresh
// directory.
func embedded(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Embedded()
	cfg.DataDir, cfg.AdminToken = t.TempDir(), "wire-test-admin-token"
	return cfg
}

// TestCloseWaitsForBackgroundWork: Close ends the background work and
// waits for it before it closes the stores, so work that still uses a
// store after its context ended (a last flush, a sweep finishing its
// run) is not cut off by a closed store.
func TestCloseWaitsForBackgroundWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		app, err := RecordUsage(t.Context(), embedded(t), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		proceed, used := make(chan struct{}), make(chan error, 1)
		app.jobs = append(app.jobs, loop(func(ctx context.Context) error {
			<-ctx.Done()
			<-proceed
			_, err := app.Store.GetCheckpoint(context.WithoutCancel(ctx), "wire-test")
			if errs.Is(err, errs.NotFound) {
				err = nil
			}
			used <- err
			return nil
		}))
		if err := app.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error)
		go func() { closed <- app.Close() }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while background work was still running", err)
		default:
		}
		close(proceed)
		if err := <-used; err != nil {
			t.Errorf("the store read by background work after its context ended: %v, want it still open", err)
		}
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// TestLingeringOutlivesItsParentByTheGrace: work given a lingering
// context goes on after its owner's context ends, for the grace and no
// longer, and its cancel ends it at once.
func TestLingeringOutlivesItsParentByTheGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, stop := context.WithCancel(t.Context())
		l, cancel := lingering(parent, 10*time.Second)
		defer cancel()
		stop()
		time.Sleep(10*time.Second - time.Nanosecond)
		if err := l.Err(); err != nil {
			t.Fatalf("just before the grace ended: %v, want the context alive", err)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if err := l.Err(); !errors.Is(err, context.Canceled) {
			t.Fatalf("once the grace ended: %v, want Canceled", err)
		}

		l2, cancel2 := lingering(t.Context(), 10*time.Second)
		cancel2()
		if l2.Err() == nil {
			t.Errorf("after cancel: the context is alive, want it ended")
		}
	})
}

// TestLazyRetriesAFailedBuild: a failed build is not kept for ever as
// sync.Once would; it is tried again once the retry interval has passed,
// and not before; a value built is kept.
func TestLazyRetriesAFailedBuild(t *testing.T) {
	clk := clock.NewFake(time.Date(2031, 5, 6, 10, 0, 0, 0, time.UTC))
	var builds int
	down := errors.New("the datastore is down")
	l := newLazy(func() (string, error) {
		builds++
		if builds == 1 {
			return "", down
		}
		return "built", nil
	}, clk, 5*time.Second)
	for range 2 {
		if _, err := l.Get(); !errors.Is(err, down) {
			t.Fatalf("Get after a failed build: %v, want its error", err)
		}
	}
	if builds != 1 {
		t.Errorf("builds within the retry interval of a failure: got %d, want 1", builds)
	}
	clk.Advance(5 * time.Second)
	for range 2 {
		if v, err := l.Get(); v != "built" || err != nil {
			t.Fatalf("Get after the retry interval: %q, %v; want built", v, err)
		}
	}
	if builds != 2 {
		t.Errorf("builds: got %d, want 2 (the value is kept)", builds)
	}
}

// TestLazyBuildsOnce: concurrent first Gets build the value once and all
// get it.
func TestLazyBuildsOnce(t *testing.T) {
	var builds atomic.Int64
	l := NewLazy(func() (*int, error) {
		builds.Add(1)
		v := 42
		return &v, nil
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if v, err := l.Get(); err != nil || *v != 42 {
				t.Errorf("Get = %v, %v", v, err)
			}
		})
	}
	wg.Wait()
	if n := builds.Load(); n != 1 {
		t.Errorf("builds: got %d, want 1", n)
	}
}

// TestEachRoleOpensOnlyWhatItUses: every function's builder opens what
// its function uses and nothing else, and serves only its own routes.
func TestEachRoleOpensOnlyWhatItUses(t *testing.T) {
	type opened struct{ store, vault, ledger, usage, notifications, verifier, keys, sweeper, consumer, deliverer bool }
	for _, tc := range []struct {
		name   string
		build  Builder
		want   opened
		serves string // a route it serves; "" for a CloudEvent function
	}{
		{"Keys", Keys, opened{store: true, vault: true, ledger: true, notifications: true, keys: true}, "GET /v1/keys"},
		{"Verify", Verify, opened{store: true, vault: true, ledger: true, usage: true, verifier: true}, "POST /v1/verify"},
		{"UsageWebhook", UsageWebhook, opened{vault: true, usage: true}, "POST /v1/usage"},
		{"Sweep", Sweep, opened{store: true, vault: true, ledger: true, notifications: true, keys: true, sweeper: true}, "POST /v1/sweep"},
		{"LeakReports", LeakReports, opened{store: true, vault: true, notifications: true, keys: true}, "POST /v1/leaks/github"},
		{"Faces", Faces, opened{store: true, vault: true, ledger: true, notifications: true, keys: true}, "GET /console/signin"},
		{"RecordUsage", RecordUsage, opened{store: true, ledger: true, consumer: true}, ""},
		{"DeliverNotification", DeliverNotification, opened{vault: true, notifications: true, deliverer: true}, ""},
		{"ServeAll", ServeAll, opened{true, true, true, true, true, true, true, true, true, true}, "GET /v1/keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, err := tc.build(t.Context(), embedded(t), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { app.Close() })
			got := opened{app.Store != nil, app.Vault != nil, app.Ledger != nil, app.Topic != nil, app.NotificationsTopic != nil,
				app.Verifier != nil, app.Keys != nil, app.Sweeper != nil, app.Consumer != nil, app.Deliverer != nil}
			if got != tc.want {
				t.Errorf("opened %+v, want %+v", got, tc.want)
			}
			if tc.serves == "" {
				if app.Handler != nil {
					t.Errorf("a CloudEvent function has an HTTP handler")
				}
				return
			}
			for _, route := range []string{"GET /v1/keys", "POST /v1/verify", "POST /v1/usage", "POST /v1/sweep", "POST /v1/leaks/github", "GET /console/signin"} {
				method, path, _ := strings.Cut(route, " ")
				rec := httptest.NewRecorder()
				app.Handler.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
				served := rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed
				if served != (route == tc.serves || tc.name == "ServeAll") {
					t.Errorf("%s: HTTP %d", route, rec.Code)
				}
			}
		})
	}
}

// TestFailedBuildNamesTheFunction: a function that cannot start says
// which, and what is missing.
func TestFailedBuildNamesTheFunction(t *testing.T) {
	cfg := embedded(t)
	cfg.PlansFile = cfg.DataDir + "/missing.json"
	_, err := Verify(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.HasPrefix(err.Error(), "Verify: ") || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("Verify with a missing plans file: %v, want an error naming the function and the file", err)
	}
}

// TestFailedBuildReturnsItsError: a builder that fails midway (the vault
// is held by another App) returns the real error, ErrInUse, and no App,
// without a panic from closing what it never opened (issue 14: a
// nil-pointer panic in the deferred Close hid the lock error); the first
// App still closes cleanly, and a build on the same directory then
// succeeds. (It does not detect a failed build that leaks what it did
// open: SQLite files and the queue may be opened twice.)
func TestFailedBuildReturnsItsError(t *testing.T) {
	cfg := embedded(t)
	log := slog.New(slog.DiscardHandler)
	first, err := ServeAll(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if app, err := ServeAll(t.Context(), cfg, log); !errors.Is(err, filevault.ErrInUse) || app != nil {
		t.Fatalf("second ServeAll on the same data directory: got %v, %v; want nil and ErrInUse", app, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := ServeAll(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("ServeAll after the first App closed: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestReadAdminTokenOnlyReads: ReadAdminToken reads the token an open
// App generated, and creates nothing where there is nothing to read.
func TestReadAdminTokenOnlyReads(t *testing.T) {
	cfg := embedded(t)
	cfg.AdminToken = ""
	app, err := ServeAll(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if got, err := ReadAdminToken(t.Context(), cfg); err != nil || got != app.GeneratedAdminToken {
		t.Errorf("ReadAdminToken while the App is open: got %q, %v; want %q", got, err, app.GeneratedAdminToken)
	}
	missing := cfg
	missing.DataDir = filepath.Join(t.TempDir(), "typo")
	if _, err := ReadAdminToken(t.Context(), missing); !errs.Is(err, errs.NotFound) {
		t.Errorf("ReadAdminToken on a missing directory: got %v, want NotFound", err)
	}
	if _, err := os.Stat(missing.DataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadAdminToken created %s (stat: %v)", missing.DataDir, err)
	}
}
