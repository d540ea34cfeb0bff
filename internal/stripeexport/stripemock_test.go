package stripeexport

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyplane/keyplane/internal/errs"
)

// stripeMock starts stripe-mock (github.com/stripe/stripe-mock, Stripe's
// API mock generated from its OpenAPI spec, installed with go install) on
// a loopback port, or skips the test when it is not installed (fails in
// CI, where KEYPLANE_REQUIRE_EMULATORS=1).
func stripeMock(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("stripe-mock")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(string(trimNL(gopath)), "bin", "stripe-mock")
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("KEYPLANE_REQUIRE_EMULATORS") == "1" {
				t.Fatal("stripe-mock is not installed, and KEYPLANE_REQUIRE_EMULATORS=1 (CI) requires it: scripts/install-prereqs.sh installs it")
			}
			t.Skip("stripe-mock is not installed (go install github.com/stripe/stripe-mock@v0.203.0, or scripts/install-prereqs.sh)")
		}
	}
	addr, tlsAddr := freeAddr(t), freeAddr(t) // it serves HTTPS too, by default on :12112
	cmd := exec.Command(bin, "-http-addr", addr, "-https-addr", tlsAddr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "http://" + addr
	for deadline := time.Now().Add(20 * time.Second); ; {
		if resp, err := http.Get(url + "/v1/customers"); err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatal("stripe-mock did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// TestClientAgainstStripeMock checks the request shape against Stripe's
// own OpenAPI spec, as stripe-mock validates it (it keeps no state: the
// dedupe and the outages are fakeStripe's).
func TestClientAgainstStripeMock(t *testing.T) {
	url := stripeMock(t)
	ctx := context.Background()
	c := NewClient("sk_test_123", url, nil)
	ev := MeterEvent{EventName: "api_tokens", Customer: "cus_123", Value: 42, Identifier: "ev-1:units", Time: time.Now().Add(-time.Minute)}
	if err := c.Send(ctx, ev); err != nil {
		t.Fatalf("a well-formed meter event: %v", err)
	}
	if err := NewClient("not-a-key", url, nil).Send(ctx, ev); !errs.Is(err, errs.Invalid) {
		t.Errorf("a bad API key: %v, want Invalid (401)", err)
	}
	if _, err := c.Customer(ctx, "acme"); err != nil {
		t.Errorf("customer search: %v", err)
	}
	dead := NewClient("sk_test_123", "http://127.0.0.1:1", nil)
	if err := dead.Send(ctx, ev); !errs.Is(err, errs.Unavailable) {
		t.Errorf("no server: %v, want Unavailable", err)
	}
}
