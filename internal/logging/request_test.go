package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// slogLine is the reference: the line New's JSON handler writes for the
// request entry as the request log built it before LogRequest, one
// slog attribute at a time.
func slogLine(t testing.TB, e RequestEntry) string {
	t.Helper()
	var out bytes.Buffer
	h := slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: cloudNames})
	rec := slog.NewRecord(e.Time, e.Level, e.Method+" "+e.Path, 0)
	rec.AddAttrs(slog.Attr{Key: "httpRequest", Value: slog.GroupValue(
		slog.String("requestMethod", e.Method),
		slog.String("requestUrl", e.Path),
		slog.Int("status", e.Status),
		slog.String("responseSize", strconv.Itoa(e.Size)),
		slog.String("latency", strconv.FormatFloat(e.Latency.Seconds(), 'f', 6, 64)+"s"),
		slog.String("remoteIp", e.RemoteIP),
		slog.String("userAgent", e.UserAgent),
	)})
	if e.Sampled > 1 {
		rec.AddAttrs(slog.Int("sampled", e.Sampled))
	}
	if e.Project != "" && e.TraceID != "" {
		rec.AddAttrs(slog.String("logging.googleapis.com/trace", "projects/"+e.Project+"/traces/"+e.TraceID))
	}
	if err := h.Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// logRequestLine is what LogRequest writes for e on a logger New made
// (the hand-written line) and on a plain slog JSON handler with the same
// options (the record).
func logRequestLine(e RequestEntry) (handWritten, record string) {
	var a, b bytes.Buffer
	LogRequest(context.Background(), New(&a, slog.LevelDebug), &e)
	LogRequest(context.Background(), slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: cloudNames})), &e)
	return a.String(), b.String()
}

func TestRequestLineMatchesJSONHandler(t *testing.T) {
	base := RequestEntry{
		Time: time.Date(2026, 12, 7, 7, 44, 15, 123456789, time.UTC), Level: slog.LevelInfo,
		Method: "POST", Path: "/v1/verify", Status: 200, Size: 527, Latency: 123456 * time.Nanosecond,
		RemoteIP: "127.0.0.1:40000", UserAgent: "wrk/4.1.0",
	}
	cases := map[string]func(e *RequestEntry){
		"plain":             func(*RequestEntry) {},
		"error level":       func(e *RequestEntry) { e.Level, e.Status = slog.LevelError, 503 },
		"warn and debug":    func(e *RequestEntry) { e.Level = slog.LevelWarn + 1 },
		"debug":             func(e *RequestEntry) { e.Level = slog.LevelDebug },
		"trace":             func(e *RequestEntry) { e.Project, e.TraceID = "proj-1", "0123456789abcdef0123456789abcdef" },
		"trace, no project": func(e *RequestEntry) { e.TraceID = "0123456789abcdef0123456789abcdef" },
		"escapes": func(e *RequestEntry) {
			e.Path, e.UserAgent = "/v1/\"x\"\\<&>", "a\x00\x1f\t\n\r\u2028\u2029\xff\xc3é日本"
		},
		"empty user agent": func(e *RequestEntry) { e.UserAgent = "" },
		"local time zone":  func(e *RequestEntry) { e.Time = e.Time.In(time.FixedZone("X", -7*3600-30*60)) },
		"whole second":     func(e *RequestEntry) { e.Time = e.Time.Truncate(time.Second) },
		"monotonic clock":  func(e *RequestEntry) { e.Time = time.Now() },
		"long latency":     func(e *RequestEntry) { e.Latency = 3*time.Hour + 5 },
		"zero size":        func(e *RequestEntry) { e.Size, e.Latency = 0, 0 },
		"sampled":          func(e *RequestEntry) { e.Sampled = 10 },
		"sampled 1":        func(e *RequestEntry) { e.Sampled = 1 },
		"sampled, trace": func(e *RequestEntry) {
			e.Sampled, e.Project, e.TraceID = 25, "proj-1", "0123456789abcdef0123456789abcdef"
		},
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			e := base
			edit(&e)
			want := slogLine(t, e)
			hand, rec := logRequestLine(e)
			if hand != want {
				t.Errorf("hand-written line\n got %s\nwant %s", hand, want)
			}
			if rec != want {
				t.Errorf("record through a slog handler\n got %s\nwant %s", rec, want)
			}
		})
	}
}

func FuzzRequestLine(f *testing.F) {
	f.Add("GET", "/healthz", "curl/8", "[::1]:5", "p", "t", int64(1), 200, 12)
	f.Add("POST", "/v1/\xe2\x80", "\u2028\"\\", "", "", "x", int64(-5), -1, -7)
	f.Fuzz(func(t *testing.T, method, path, ua, ip, project, trace string, latency int64, status, size int) {
		e := RequestEntry{
			Time: time.Unix(0, latency).UTC(), Level: slog.LevelDebug + slog.Level(uint(status)%16), // enabled at DEBUG
			Method: method, Path: path, Status: status, Size: size, Latency: time.Duration(latency),
			RemoteIP: ip, UserAgent: ua, Project: project, TraceID: trace, Sampled: size % 50,
		}
		want := slogLine(t, e)
		if hand, _ := logRequestLine(e); hand != want {
			t.Fatalf("hand-written line\n got %q\nwant %q", hand, want)
		}
	})
}

// A logger derived with With keeps its attributes on the request entry:
// the entry goes through the JSON handler, not the hand-written line.
func TestRequestLineOfADerivedLoggerKeepsItsAttributes(t *testing.T) {
	var out bytes.Buffer
	log := New(&out, slog.LevelInfo).With("function", "Verify")
	LogRequest(context.Background(), log, &RequestEntry{Time: time.Now(), Level: slog.LevelInfo, Method: "GET", Path: "/healthz", Status: 200})
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("line %q: %v", out.String(), err)
	}
	if got["function"] != "Verify" || got["message"] != "GET /healthz" {
		t.Errorf("function = %v, message = %v; want Verify and GET /healthz", got["function"], got["message"])
	}
}

func TestRequestLineBelowTheLevelIsDropped(t *testing.T) {
	var out bytes.Buffer
	LogRequest(context.Background(), New(&out, slog.LevelError), &RequestEntry{Time: time.Now(), Level: slog.LevelInfo, Method: "GET", Path: "/"})
	if out.Len() != 0 {
		t.Errorf("got %q at ERROR level, want nothing", out.String())
	}
}

func TestTraceID(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		header, value, want string
	}{
		{"traceparent", "00-" + id + "-00f067aa0ba902b7-01", id},
		{"traceparent", "00-" + id + "-00f067aa0ba902b7", ""},         // three parts
		{"traceparent", "00-" + id + "-00f067aa0ba902b7-01-x", ""},    // five parts
		{"traceparent", "00-" + id[:31] + "-00f067aa0ba902b7-01", ""}, // short ID
		{"X-Cloud-Trace-Context", id + "/1;o=1", id},
		{"X-Cloud-Trace-Context", id, id},
		{"X-Cloud-Trace-Context", string(bytes.Repeat([]byte("a"), 65)) + "/1", ""},
		{"X-Other", id, ""},
	} {
		r := &http.Request{Header: http.Header{}}
		r.Header.Set(tc.header, tc.value)
		if got := TraceID(r); got != tc.want {
			t.Errorf("%s: %s gives %q, want %q", tc.header, tc.value, got, tc.want)
		}
	}
}
