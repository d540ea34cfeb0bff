package httpapi_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/httpapi"
	"github.com/keyplane/keyplane/internal/logging"
)

// The request log keeps every field of Cloud Logging's httpRequest entry,
// and, written through a logging.Buffer, is on the stream by the time the
// response has arrived: the last request in flight flushes it, so an idle
// instance holds no line.
func TestRequestLogEntryIsCompleteAndFlushedByTheLastRequest(t *testing.T) {
	out := &syncBuffer{}
	logs := logging.NewBuffer(out, nil)
	t.Cleanup(func() { logs.Close() })
	srv := &httpapi.Server{Logger: logging.New(logs, 0), Project: "proj-1"}
	ts := httptest.NewServer(srv.Handler(httpapi.FuncSweep))
	defer ts.Close()

	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/healthz?x=1", nil)
	req.Header.Set("User-Agent", "logtest/1.0")
	req.Header.Set("X-Cloud-Trace-Context", "0123456789abcdef0123456789abcdef/1;o=1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()

	line := out.String() // read at once: no wait for a timer
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("log %q: %v", line, err)
	}
	for key, want := range map[string]any{
		"severity":                     "INFO",
		"message":                      "GET /healthz",
		"logging.googleapis.com/trace": "projects/proj-1/traces/0123456789abcdef0123456789abcdef",
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
	if _, ok := got["time"].(string); !ok {
		t.Errorf("time = %v, want a timestamp", got["time"])
	}
	hr, _ := got["httpRequest"].(map[string]any)
	for key, want := range map[string]any{
		"requestMethod": "GET",
		"requestUrl":    "/healthz",
		"status":        float64(200),
		"userAgent":     "logtest/1.0",
	} {
		if hr[key] != want {
			t.Errorf("httpRequest.%s = %v, want %v", key, hr[key], want)
		}
	}
	for key, pattern := range map[string]string{
		"responseSize": `^[1-9][0-9]*$`,
		"latency":      `^[0-9]+\.[0-9]{6}s$`,
		"remoteIp":     `^127\.0\.0\.1:[0-9]+$`,
	} {
		if s, _ := hr[key].(string); !regexp.MustCompile(pattern).MatchString(s) {
			t.Errorf("httpRequest.%s = %v, want a string matching %s", key, hr[key], pattern)
		}
	}
	if len(hr) != 7 {
		t.Errorf("httpRequest has %d fields, want 7: %v", len(hr), hr)
	}
}

// With ValidLogSample N, the request log keeps the first of every N VALID
// verify answers, marked "sampled": N, and every other answer.
func TestRequestLogSamplesValidVerifyAnswers(t *testing.T) {
	out := &syncBuffer{}
	srv, body := benchServer(t, logging.New(out, slog.LevelInfo))
	srv.ValidLogSample = 3
	h := srv.Handler(httpapi.FuncVerify)
	w := &discardWriter{h: http.Header{}}
	for range 7 {
		serve(h, w, body)
	}
	refused := []byte(`{"key": "kp_live_notakeyatallnotakeyatallnotakey1234"}`)
	serve(h, w, refused)
	serve(h, w, refused)

	var sampled, plain int
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e struct {
			Message string
			Sampled int
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if e.Message != "POST /v1/verify" {
			continue
		}
		switch e.Sampled {
		case 0:
			plain++
		case 3:
			sampled++
		default:
			t.Errorf("line %q: sampled %d, want 3 or none", line, e.Sampled)
		}
	}
	// 7 VALID answers: lines for the 1st, 4th and 7th; 2 refusals: both.
	if sampled != 3 || plain != 2 {
		t.Errorf("got %d sampled and %d plain request lines, want 3 and 2:\n%s", sampled, plain, out.String())
	}
}
