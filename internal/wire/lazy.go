package wire

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyplane/keyplane/internal/clock"
)

// Lazy is a value built on first use and kept: once built, Get is one
// atomic load. A build that fails is not kept, unlike sync.Once's: a
// later Get builds again, but at most once every 5 s, so that a
// dependency that is down (a secret not provisioned yet, Firestore
// unreachable) is not asked again by every request meanwhile; a Get in
// between returns the last error. Builds never overlap. Safe for
// concurrent use.
type Lazy[T any] struct {
	build func() (T, error)
	clock clock.Clock
	retry time.Duration // the least time between two builds

	v        atomic.Pointer[T] // set once built
	mu       sync.Mutex        // one build at a time; guards err and failedAt
	err      error             // of the last build
	failedAt time.Time
}

// NewLazy returns a Lazy built by build.
func NewLazy[T any](build func() (T, error)) *Lazy[T] {
	return newLazy(build, clock.Real{}, 5*time.Second)
}

func newLazy[T any](build func() (T, error), clk clock.Clock, retry time.Duration) *Lazy[T] {
	return &Lazy[T]{build: build, clock: clk, retry: retry}
}

// Get returns the value, building it if it has not been built.
func (l *Lazy[T]) Get() (T, error) {
	if p := l.v.Load(); p != nil {
		return *p, nil
	}
	return l.slow()
}

func (l *Lazy[T]) slow() (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.v.Load(); p != nil {
		return *p, nil // built while this call waited
	}
	var zero T
	if l.err != nil && l.clock.Now().Sub(l.failedAt) < l.retry {
		return zero, l.err
	}
	v, err := l.build()
	if err != nil {
		l.err, l.failedAt = err, l.clock.Now()
		return zero, err
	}
	l.err = nil
	l.v.Store(&v)
	return v, nil
}
