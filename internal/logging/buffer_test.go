package logging

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lockedBuffer is the writer under a Buffer in these tests: it records
// each Write it receives.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.b.Write(p)
}

func (w *lockedBuffer) state() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String(), w.writes
}

func TestBufferWritesThroughWithNoRequestInFlight(t *testing.T) {
	out := &lockedBuffer{}
	b := NewBuffer(out, nil)
	fmt.Fprintln(b, "background line")
	if got, _ := out.state(); got != "background line\n" {
		t.Errorf("got %q written, want the line at once", got)
	}
}

func TestBufferHoldsLinesUntilTheLastRequestEnds(t *testing.T) {
	out := &lockedBuffer{}
	b := NewBuffer(out, nil)
	b.Begin()
	b.Begin()
	fmt.Fprintln(b, "one")
	fmt.Fprintln(b, "two")
	b.End()
	if got, _ := out.state(); got != "" {
		t.Fatalf("got %q written with a request in flight, want nothing yet", got)
	}
	b.End()
	got, writes := out.state()
	if got != "one\ntwo\n" || writes != 1 {
		t.Errorf("after the last End: got %q in %d writes, want both lines in 1", got, writes)
	}
}

func TestBufferFlushesWhenFull(t *testing.T) {
	out := &lockedBuffer{}
	b := NewBuffer(out, &BufferOptions{Size: 10})
	b.Begin()
	defer b.End()
	b.Write([]byte("aaaa\n"))
	b.Write([]byte("bbbb\n")) // exactly full: held
	if got, _ := out.state(); got != "" {
		t.Fatalf("got %q written before the buffer overflowed, want nothing", got)
	}
	b.Write([]byte("cc\n"))
	if got, _ := out.state(); got != "aaaa\nbbbb\n" {
		t.Errorf("got %q, want the full buffer written before the line that did not fit", got)
	}
	b.Write([]byte("a line longer than ten\n"))
	if got, _ := out.state(); got != "aaaa\nbbbb\ncc\na line longer than ten\n" {
		t.Errorf("got %q, want a line larger than the buffer written through, in order", got)
	}
}

func TestBufferTimerFlushesUnderContinuousLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lockedBuffer{}
		b := NewBuffer(out, &BufferOptions{FlushInterval: time.Second})
		b.Begin() // a request that stays in flight
		defer b.End()
		fmt.Fprintln(b, "held")
		time.Sleep(999 * time.Millisecond)
		synctest.Wait()
		if got, _ := out.state(); got != "" {
			t.Fatalf("got %q before the interval, want nothing", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got, _ := out.state(); got != "held\n" {
			t.Fatalf("got %q after the interval, want the held line", got)
		}
		// The timer is re-armed by the next held line only.
		fmt.Fprintln(b, "next")
		time.Sleep(time.Second)
		synctest.Wait()
		if got, writes := out.state(); got != "held\nnext\n" || writes != 2 {
			t.Errorf("got %q in %d writes, want both lines in 2", got, writes)
		}
	})
}

func TestBufferCloseFlushesAndWritesThroughAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lockedBuffer{}
		b := NewBuffer(out, nil)
		b.Begin()
		fmt.Fprintln(b, "held")
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if got, _ := out.state(); got != "held\n" {
			t.Fatalf("got %q after Close, want the held line", got)
		}
		fmt.Fprintln(b, "late") // a request still in flight after Close
		if got, _ := out.state(); got != "held\nlate\n" {
			t.Errorf("got %q, want a Write after Close written through", got)
		}
		time.Sleep(time.Hour) // the timer Close stopped writes nothing more
		synctest.Wait()
		if _, writes := out.state(); writes != 2 {
			t.Errorf("got %d writes, want 2", writes)
		}
		b.End()
	})
}

func TestBufferLosesNoLineUnderConcurrentRequests(t *testing.T) {
	out := &lockedBuffer{}
	b := NewBuffer(out, &BufferOptions{Size: 512})
	const workers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range lines {
				b.Begin()
				fmt.Fprintf(b, "worker %d line %d\n", w, i)
				b.End()
			}
		})
	}
	wg.Wait()
	got, _ := out.state()
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		seen[l] = true
	}
	for w := range workers {
		for i := range lines {
			if l := fmt.Sprintf("worker %d line %d", w, i); !seen[l] {
				t.Fatalf("line %q lost or torn", l)
			}
		}
	}
	if n := strings.Count(got, "\n"); n != workers*lines {
		t.Errorf("got %d lines, want %d", n, workers*lines)
	}
}

func TestBufferOfFollowsWithAndWithGroup(t *testing.T) {
	b := NewBuffer(&lockedBuffer{}, nil)
	log := New(b, 0)
	if got := BufferOf(log.With("a", 1).WithGroup("g")); got != b {
		t.Errorf("BufferOf(derived logger) = %p, want %p", got, b)
	}
	if got := BufferOf(New(&lockedBuffer{}, 0)); got != nil {
		t.Errorf("BufferOf(unbuffered logger) = %p, want nil", got)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestBufferReportsAFailedFlushToTheNextCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broken := errors.New("stream closed")
		b := NewBuffer(failingWriter{broken}, &BufferOptions{FlushInterval: time.Second})
		b.Begin()
		defer b.End()
		if _, err := b.Write([]byte("held\n")); err != nil {
			t.Fatalf("held Write: %v, want nil", err)
		}
		time.Sleep(time.Second) // the timer's flush fails
		synctest.Wait()
		if err := b.Flush(); !errors.Is(err, broken) {
			t.Errorf("Flush after a failed timer flush = %v, want %v", err, broken)
		}
		if err := b.Flush(); err != nil {
			t.Errorf("second Flush = %v, want nil: the failed lines were dropped, not retried", err)
		}
	})
}

// Requests that end one after another, each the only one in flight, share
// a write when the next is ready to run: the last request in flight yields
// before it ends, so requests that begin and end meanwhile leave their
// lines to its flush. On one CPU, without the yield, every request would
// flush its own line.
func TestBufferRequestsEndingBackToBackShareWrites(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	out := &lockedBuffer{}
	b := NewBuffer(out, nil)
	const workers, lines = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range lines {
				b.Begin()
				fmt.Fprintf(b, "worker %d line %d\n", w, i)
				b.End()
			}
		})
	}
	wg.Wait()
	got, writes := out.state()
	if n := strings.Count(got, "\n"); n != workers*lines {
		t.Fatalf("got %d lines written once all requests ended, want %d", n, workers*lines)
	}
	t.Logf("%d writes for %d lines", writes, workers*lines)
	if writes > workers*lines/2 {
		t.Errorf("got %d writes for %d lines, want at most %d: requests ending back to back should share writes", writes, workers*lines, workers*lines/2)
	}
}

// blockingWriter holds its first Write until release is closed.
type blockingWriter struct {
	lockedBuffer
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.started)
		<-w.release
	})
	return w.lockedBuffer.Write(p)
}

// A request's line is held while a flush's write is still running: the
// write system call does not make every request's log line wait.
func TestBufferHoldsLinesWhileAFlushWrites(t *testing.T) {
	out := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	b := NewBuffer(out, nil)
	b.Begin()
	fmt.Fprintln(b, "first")
	ended := make(chan struct{})
	go func() { b.End(); close(ended) }() // flushes "first"; its write blocks
	<-out.started

	b.Begin()
	held := make(chan struct{})
	go func() { fmt.Fprintln(b, "second"); close(held) }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("a Write waited for another flush's write to finish")
	}
	close(out.release)
	<-ended
	b.End()
	got, writes := out.state()
	if got != "first\nsecond\n" || writes != 2 {
		t.Errorf("got %q in %d writes, want both lines, in order, in 2", got, writes)
	}
}
