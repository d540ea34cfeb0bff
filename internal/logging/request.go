package logging

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// RequestEntry is the summary entry of one HTTP request: Cloud Logging's
// httpRequest fields, the message "Method Path", and the request's trace.
// It never holds bodies or headers other than the user agent, which may
// carry keys.
type RequestEntry struct {
	Time      time.Time
	Level     slog.Level
	Method    string
	Path      string // requestUrl: the path only, never the query
	Status    int
	Size      int           // responseSize, in bytes
	Latency   time.Duration // written in seconds, with 6 decimals: "0.000123s"
	RemoteIP  string
	UserAgent string
	// Project and TraceID, when both are set, make the trace field
	// "projects/Project/traces/TraceID" (TraceID returns the ID).
	Project string
	TraceID string
	// Sampled, if above 1, says the line stands for Sampled requests
	// like it, of which this one was logged and the others were not:
	// the "sampled" field, which sums to the number of requests.
	Sampled int
}

// LogRequest writes e through log, if log is enabled at e.Level. On a
// logger that New made (and not derived with With or WithGroup), the line
// is appended by hand into a recycled buffer: byte for byte what New's
// JSON handler writes for the same record (TestRequestLineMatchesJSONHandler),
// without its per-attribute dispatch, ReplaceAttr calls and allocations,
// because it is written once per request. Any other logger gets the same
// record through its handler.
func LogRequest(ctx context.Context, log *slog.Logger, e *RequestEntry) {
	lh := log.Handler()
	h, ok := lh.(*handler)
	if !ok || h.derived {
		if lh.Enabled(ctx, e.Level) {
			lh.Handle(ctx, e.record())
		}
		return
	}
	if !h.json.Enabled(ctx, e.Level) {
		return
	}
	if y := e.Time.Year(); y < 0 || y >= 10000 {
		h.json.Handle(ctx, e.record()) // slog writes its error value for the time
		return
	}
	bp := requestLines.Get().(*[]byte)
	b := appendRequestLine((*bp)[:0], e)
	h.w.Write(b)
	*bp = b[:0]
	requestLines.Put(bp)
}

// requestLines recycles the buffers request lines are appended into.
var requestLines = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// record is e as a slog record: what LogRequest's hand-written line
// must equal once New's handler has formatted it.
func (e *RequestEntry) record() slog.Record {
	rec := slog.NewRecord(e.Time, e.Level, e.Method+" "+e.Path, 0)
	rec.AddAttrs(slog.Attr{Key: "httpRequest", Value: slog.GroupValue(
		slog.String("requestMethod", e.Method),
		slog.String("requestUrl", e.Path),
		slog.Int("status", e.Status),
		slog.String("responseSize", strconv.Itoa(e.Size)),
		slog.String("latency", string(appendLatency(nil, e.Latency))),
		slog.String("remoteIp", e.RemoteIP),
		slog.String("userAgent", e.UserAgent),
	)})
	if e.Sampled > 1 {
		rec.AddAttrs(slog.Int("sampled", e.Sampled))
	}
	if e.Project != "" && e.TraceID != "" {
		rec.AddAttrs(slog.String(traceKey, "projects/"+e.Project+"/traces/"+e.TraceID))
	}
	return rec
}

const traceKey = "logging.googleapis.com/trace"

// appendRequestLine appends e's line as New's JSON handler writes it:
// time (RFC 3339 with nanoseconds, monotonic reading stripped), severity,
// message, the httpRequest group, sampled, the trace, and a newline.
func appendRequestLine(b []byte, e *RequestEntry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","severity":"`...)
	b = append(b, severity(e.Level)...)
	b = append(b, `","message":"`...)
	b = appendJSONString(b, e.Method)
	b = append(b, ' ')
	b = appendJSONString(b, e.Path)
	b = append(b, `","httpRequest":{"requestMethod":"`...)
	b = appendJSONString(b, e.Method)
	b = append(b, `","requestUrl":"`...)
	b = appendJSONString(b, e.Path)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"responseSize":"`...)
	b = strconv.AppendInt(b, int64(e.Size), 10)
	b = append(b, `","latency":"`...)
	b = appendLatency(b, e.Latency)
	b = append(b, `","remoteIp":"`...)
	b = appendJSONString(b, e.RemoteIP)
	b = append(b, `","userAgent":"`...)
	b = appendJSONString(b, e.UserAgent)
	b = append(b, `"}`...)
	if e.Sampled > 1 {
		b = append(b, `,"sampled":`...)
		b = strconv.AppendInt(b, int64(e.Sampled), 10)
	}
	if e.Project != "" && e.TraceID != "" {
		b = append(b, `,"`+traceKey+`":"projects/`...)
		b = appendJSONString(b, e.Project)
		b = append(b, "/traces/"...)
		b = appendJSONString(b, e.TraceID)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendLatency appends d in seconds with 6 decimals and an "s", Cloud
// Logging's Duration format.
func appendLatency(b []byte, d time.Duration) []byte {
	return append(strconv.AppendFloat(b, d.Seconds(), 'f', 6, 64), 's')
}

// severity is cloudNames' name for a level.
func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}

// appendJSONString appends the contents of a JSON string for s, escaped
// as slog's JSON handler escapes it: `"` and `\`, control characters
// (\n, \r and \t by name), U+2028 and U+2029, and each invalid UTF-8 byte
// as \ufffd; <, > and & are left as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// TraceID returns the trace ID of a request that carries a traceparent or
// X-Cloud-Trace-Context header, or "": with a project, the trace field of
// its log entries, which groups them under the request in the console.
func TraceID(r *http.Request) string {
	var trace string
	if h := r.Header.Get("traceparent"); h != "" {
		// version-traceid-spanid-flags
		if strings.Count(h, "-") == 3 {
			_, rest, _ := strings.Cut(h, "-")
			if id, _, _ := strings.Cut(rest, "-"); len(id) == 32 {
				trace = id
			}
		}
	} else if h := r.Header.Get("X-Cloud-Trace-Context"); h != "" {
		trace, _, _ = strings.Cut(h, "/")
	}
	if len(trace) > 64 {
		return ""
	}
	return trace
}
