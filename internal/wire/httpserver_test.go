package wire

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/httpapi"
)

// TestServeRefusesOversizedHeadersWith431: `keyplane serve`'s server
// bounds request headers: a 70 KB header gets 431 from net/http itself,
// and one just over httpapi.MaxHeaderBytes gets the handler's JSON 431
// stating the limit.
func TestServeRefusesOversizedHeadersWith431(t *testing.T) {
	app, err := ServeAll(context.Background(), embedded(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := HTTPServer(app.Handler)
	go srv.Serve(ln)
	defer srv.Close()

	for _, tc := range []struct {
		size     int
		wantJSON bool
	}{
		{70 << 10, false},
		{httpapi.MaxHeaderBytes + 1, true},
	} {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/v1/keys", nil)
		req.Header.Set("Authorization", "Bearer wire-test-admin-token")
		req.Header.Set("X-Padding", strings.Repeat("a", tc.size))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("a %d-byte header = %d %s, want 431", tc.size, res.StatusCode, body)
		}
		// net/http's own answer, before any handler ran, is plain text.
		if got := strings.Contains(string(body), `"HEADERS_TOO_LARGE"`); got != tc.wantJSON {
			t.Errorf("a %d-byte header = %s; want the handler's JSON error: %v", tc.size, body, tc.wantJSON)
		}
	}
}
