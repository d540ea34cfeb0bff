package leaks

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/keys"
	"github.com/keyplane/keyplane/internal/store"
)

// Labels of a result.
const (
	TruePositive  = "true_positive"  // the token is one of our keys, whatever its state
	FalsePositive = "false_positive" // it is not: malformed, a bad checksum, or no such key
)

// Result is the answer for one entry of a report, in GitHub's format.
type Result struct {
	TokenRaw  string `json:"token_raw"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// Lookup finds a key by its lookup hash: store.Store's LookupHash.
type Lookup interface {
	LookupHash(ctx context.Context, h apikey.Hash) (*store.Key, error)
}

// Stopper stops a leaked key: keys.Service's Leaked.
type Stopper interface {
	Leaked(ctx context.Context, id string, action keys.LeakAction, leak keys.Leak) (*store.Key, bool, error)
}

// handleBudget bounds handling one report, detached from the caller:
// inside the functions' 60 s request timeout (infra/main.tf), far above
// what a full report takes (docs/benchmarks.md, "Leak reports").
const handleBudget = 45 * time.Second

// DefaultWorkers is how many tokens of one report are looked up and acted
// on at once.
const DefaultWorkers = 16

// Service handles reports. All fields are required except those
// documented with a default.
type Service struct {
	Lookup Lookup
	Keys   Stopper
	Hasher *apikey.Hasher
	// Action is what is done to a reported key (default keys.LeakDisable).
	Action  keys.LeakAction
	Workers int          // default DefaultWorkers
	Logger  *slog.Logger // default slog.Default()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Handle acts on a parsed report from reporter ("github", or the caller
// of POST /v1/leaks) and returns one result per entry, in order. Each
// distinct token is handled once: parsed (a malformed token or a bad
// checksum is a false positive, decided without I/O), hashed, looked up,
// and if it is one of our keys, stopped by s.Action with the first
// entry's url, source and type. Tokens are handled DefaultWorkers at a
// time. An error (a backend failure) means the report should be sent
// again: what was done is not done twice.
func (s *Service) Handle(ctx context.Context, reporter string, entries []Entry) ([]Result, error) {
	// A scanner that hangs up must not leave half its leaked keys working:
	// once read, a report is handled to its end, within a bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handleBudget)
	defer cancel()
	action := s.Action
	if action == "" {
		action = keys.LeakDisable
	}
	// first[token] is the index of the entry that represents the token.
	first := make(map[string]int, len(entries))
	var todo []int
	for i, e := range entries {
		if _, seen := first[e.Token]; !seen {
			first[e.Token] = i
			todo = append(todo, i)
		}
	}
	ours := make([]bool, len(entries))
	errsAt := make([]error, len(entries))
	stopped := make([]bool, len(entries))
	workers := s.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, len(todo)) {
		wg.Go(func() {
			for i := range work {
				ours[i], stopped[i], errsAt[i] = s.one(ctx, reporter, action, entries[i])
			}
		})
	}
	for _, i := range todo {
		work <- i
	}
	close(work)
	wg.Wait()

	found, changed := 0, 0
	for _, i := range todo {
		if errsAt[i] != nil {
			s.logger().ErrorContext(ctx, "a leak report was not fully handled; it should be sent again",
				"reporter", reporter, "entry", i, "error", errsAt[i])
			return nil, errsAt[i]
		}
		if ours[i] {
			found++
		}
		if stopped[i] {
			changed++
		}
	}
	out := make([]Result, len(entries))
	for i, e := range entries {
		label := FalsePositive
		if ours[first[e.Token]] {
			label = TruePositive
		}
		out[i] = Result{TokenRaw: e.Token, TokenType: e.Type, Label: label}
	}
	s.logger().InfoContext(ctx, "leak report handled", "reporter", reporter, "entries", len(entries),
		"distinct_tokens", len(todo), "our_keys", found, "keys_stopped", changed, "action", string(action))
	return out, nil
}

// one handles one token: whether it is one of our keys and whether this
// report stopped it.
func (s *Service) one(ctx context.Context, reporter string, action keys.LeakAction, e Entry) (ours, stopped bool, err error) {
	if _, err := apikey.Parse(e.Token); err != nil {
		return false, false, nil
	}
	k, err := s.Lookup.LookupHash(ctx, s.Hasher.Sum(e.Token))
	switch {
	case errs.Is(err, errs.NotFound):
		return false, false, nil
	case err != nil:
		return false, false, err
	}
	_, changed, err := s.Keys.Leaked(ctx, k.ID, action, keys.Leak{Reporter: reporter, URL: e.URL, Source: e.Source, Type: e.Type})
	if errs.Is(err, errs.NotFound) {
		return true, false, nil // deleted since the lookup: nothing left to stop
	}
	if err != nil {
		return true, false, err
	}
	if changed {
		s.logger().WarnContext(ctx, "a leaked key was stopped", "key_id", k.ID, "owner", k.Owner,
			"action", string(action), "reporter", reporter, "source", e.Source, "url", e.URL)
	}
	return true, changed, nil
}
