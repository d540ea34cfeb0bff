// Package logging configures log/slog for Google Cloud Logging: JSON on
// stdout with the field names Cloud Logging understands (severity, message,
// logging.googleapis.com/trace), so that entries are grouped by request and
// filtered by severity without an agent.
package logging

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// New returns a JSON logger writing to w at level and above. If w is a
// *Buffer, BufferOf(logger) returns it, so that the request log can tell
// it when requests start and end.
func New(w io.Writer, level slog.Level) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: cloudNames,
	})
	if b, ok := w.(*Buffer); ok {
		return slog.New(&handler{json: h, buf: b})
	}
	return slog.New(h)
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

// TraceAttr returns the Cloud Logging trace attribute for a request that
// carries an X-Cloud-Trace-Context or traceparent header, so that its log
// entries group under the request in the console. ok is false if there is
// no trace or no project.
func TraceAttr(r *http.Request, project string) (attr slog.Attr, ok bool) {
	if project == "" {
		return attr, false
	}
	var trace string
	if h := r.Header.Get("traceparent"); h != "" {
		// version-traceid-spanid-flags
		if parts := strings.Split(h, "-"); len(parts) == 4 && len(parts[1]) == 32 {
			trace = parts[1]
		}
	} else if h := r.Header.Get("X-Cloud-Trace-Context"); h != "" {
		trace, _, _ = strings.Cut(h, "/")
	}
	if trace == "" || len(trace) > 64 {
		return attr, false
	}
	return slog.String("logging.googleapis.com/trace", "projects/"+project+"/traces/"+trace), true
}
