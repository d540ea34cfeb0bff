// Package logging configures log/slog for Google Cloud Logging: JSON on
// stdout with the field names Cloud Logging understands (severity, message,
// logging.googleapis.com/trace), so that entries are grouped by request and
// filtered by severity without an agent.
package logging

import (
	"io"
	"log/slog"
	"sync"
)

// New returns a JSON logger writing to w at level and above. If w is a
// *Buffer, BufferOf(logger) returns it, so that the request log can tell
// it when requests start and end. Its lines are written whole, one Write
// each, one at a time: LogRequest's lines and the JSON handler's share a
// lock (a Buffer's own, or one New puts around any other w).
func New(w io.Writer, level slog.Level) *slog.Logger {
	b, _ := w.(*Buffer)
	if b == nil {
		w = &lockedWriter{w: w}
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: cloudNames,
	})
	return slog.New(&handler{json: h, buf: b, w: w})
}

// lockedWriter serializes the Writes of the loggers New makes on one
// writer that is not a Buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func cloudNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.LevelKey:
		a.Key = "severity"
		switch lvl := a.Value.Any().(slog.Level); {
		case lvl >= slog.LevelError:
			a.Value = slog.StringValue("ERROR")
		case lvl >= slog.LevelWarn:
			a.Value = slog.StringValue("WARNING")
		case lvl >= slog.LevelInfo:
			a.Value = slog.StringValue("INFO")
		default:
			a.Value = slog.StringValue("DEBUG")
		}
	}
	return a
}
