package logging

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Buffer is an io.Writer for a logger that batches the lines written
// while requests are in flight into one write to the underlying writer,
// instead of one write system call per line.
//
// Lines are held only while at least one request is in flight (between
// Begin and End). The rules:
//   - a Write while no request is in flight, or after Close, is written
//     through at once, with anything held before it;
//   - End of the last request in flight flushes, before that request's
//     response is finished, so an instance that Cloud Run throttles or
//     freezes once it has no request holds no line;
//   - End of what looks like the last request in flight first yields the
//     CPU (runtime.Gosched) while still counted: a request ready to run
//     begins, and its lines join the same flush instead of a write each
//     (with few CPUs, requests in flight drop to none after almost every
//     request, so without this nearly every request would flush alone);
//   - a Write that would take the buffer past its size flushes first;
//   - under continuous load, a timer flushes what is held FlushInterval
//     after the first held line: the worst-case delay of a line;
//   - Flush and Close flush; Close also stops the timer.
//
// A failed write drops the lines it carried (they are not retried, so a
// broken stream cannot grow the buffer) and its error is returned by
// that call, or, for the timer's flush, by the next Write, Flush or Close.
// Writes are whole lines from a slog handler; each Write is kept whole.
//
// A flush writes outside the lock that Write holds to append: it swaps
// the held lines for an empty spare under mu, and writes them under wmu,
// which keeps the flushes in order. Requests go on appending while the
// write system call runs instead of queueing behind it.
type Buffer struct {
	w        io.Writer
	size     int
	interval time.Duration

	// inFlight counts the requests between Begin and End. It is atomic
	// so that Begin, and End while others remain, take no lock: a line
	// held by a request is appended under mu before that request's End
	// decrements, so the End that reaches zero, which then flushes, finds
	// it.
	inFlight atomic.Int64

	// wmu is held for a flush's write to w, and taken before mu.
	wmu   sync.Mutex
	spare []byte // the empty buffer the next flush swaps in; under wmu

	mu     sync.Mutex
	buf    []byte
	timer  *time.Timer // one for the Buffer's life, reset when armed
	armed  bool        // the timer runs: buf holds lines
	err    error       // of a timer or End flush, for the next caller
	closed bool
}

// BufferOptions configures a Buffer; nil means the defaults.
type BufferOptions struct {
	Size          int           // bytes held before a flush; default 32 KiB
	FlushInterval time.Duration // longest a line is held under load; default 250 ms
}

// NewBuffer returns a Buffer writing to w.
func NewBuffer(w io.Writer, opts *BufferOptions) *Buffer {
	b := &Buffer{w: w, size: 32 << 10, interval: 250 * time.Millisecond}
	if opts != nil && opts.Size > 0 {
		b.size = opts.Size
	}
	if opts != nil && opts.FlushInterval > 0 {
		b.interval = opts.FlushInterval
	}
	b.buf = make([]byte, 0, b.size)
	b.spare = make([]byte, 0, b.size)
	b.timer = time.AfterFunc(time.Hour, b.flushKeepErr)
	b.timer.Stop()
	return b
}

// Write holds p while a request is in flight, or writes it through.
func (b *Buffer) Write(p []byte) (int, error) {
	var err error
	for {
		b.mu.Lock()
		hold := b.inFlight.Load() != 0 && !b.closed && len(p) <= b.size
		if hold && len(b.buf)+len(p) <= b.size {
			b.buf = append(b.buf, p...)
			if !b.armed {
				b.armed = true
				b.timer.Reset(b.interval)
			}
			if kept := b.takeErr(); err == nil {
				err = kept
			}
			b.mu.Unlock()
			return len(p), err
		}
		b.mu.Unlock()
		if !hold {
			// Written through, with what is held before it, in one write.
			if ferr := b.flush(p); err == nil {
				err = ferr
			}
			if err != nil {
				return 0, err
			}
			return len(p), nil
		}
		// The buffer is full: write it, then hold p (unless requests in
		// flight dropped to none meanwhile, which the next turn sees).
		if ferr := b.flush(nil); err == nil {
			err = ferr
		}
	}
}

// Begin records that a request is in flight.
func (b *Buffer) Begin() {
	if b == nil {
		return
	}
	b.inFlight.Add(1)
}

// End records that a request is done, and flushes if it was the last in
// flight.
func (b *Buffer) End() {
	if b == nil {
		return
	}
	if b.inFlight.Load() == 1 {
		// Likely the last in flight: let a request that is ready to run
		// go first. Requests that begin and end meanwhile leave the flush
		// to this one, still counted, and one that is still in flight
		// after the yield takes it over: one write for all their lines.
		runtime.Gosched()
	}
	if b.inFlight.Add(-1) != 0 {
		return
	}
	b.flushKeepErr()
}

// Flush writes what is held.
func (b *Buffer) Flush() error { return b.flush(nil) }

// Close flushes and stops the timer; later Writes are written through.
func (b *Buffer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.Flush()
}

// flushKeepErr flushes, keeping a failure for the next Write, Flush or
// Close: the timer's flush and End's have no caller to return it to.
func (b *Buffer) flushKeepErr() {
	if err := b.flush(nil); err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
}

func (b *Buffer) takeErr() error {
	err := b.err
	b.err = nil
	return err
}

// flush writes what is held, then p, in one write, and disarms the timer.
// It returns a kept error before its own.
func (b *Buffer) flush(p []byte) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	out := b.buf
	b.buf = b.spare
	if b.armed {
		b.timer.Stop()
		b.armed = false
	}
	err := b.takeErr()
	b.mu.Unlock()
	if len(p) > 0 {
		out = append(out, p...)
	}
	if len(out) > 0 {
		if _, werr := b.w.Write(out); err == nil {
			err = werr
		}
	}
	if cap(out) > 2*b.size {
		out = make([]byte, 0, b.size) // a large line does not stay held
	}
	b.spare = out[:0]
	return err
}

// BufferOf returns the Buffer that log writes to, if New made log with
// one, or nil; Begin and End of a nil *Buffer do nothing.
func BufferOf(log *slog.Logger) *Buffer {
	if h, ok := log.Handler().(*handler); ok {
		return h.buf
	}
	return nil
}

// handler is the JSON handler of a logger that New made, carrying the
// Buffer for BufferOf, and the writer for LogRequest, through With and
// WithGroup. It calls the *slog.JSONHandler directly, not through the
// slog.Handler interface, so that the Record it is handed does not escape
// to the heap.
type handler struct {
	json *slog.JSONHandler
	buf  *Buffer   // nil if the logger does not write to a Buffer
	w    io.Writer // what json writes to: buf, or a lockedWriter
	// derived is set by With and WithGroup: LogRequest's hand-written
	// line has no place for their attributes and groups.
	derived bool
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.json.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error { return h.json.Handle(ctx, r) }

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return &handler{json: h.json.WithAttrs(attrs).(*slog.JSONHandler), buf: h.buf, w: h.w, derived: true}
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &handler{json: h.json.WithGroup(name).(*slog.JSONHandler), buf: h.buf, w: h.w, derived: true}
}
