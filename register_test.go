package keyplane

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
)

// TestKeysFunctionServesThroughFunctionsFramework starts the Functions
// Framework as Cloud Functions does (FUNCTION_TARGET=Keys) and provisions a
// key through it, on the embedded backends.
func TestKeysFunctionServesThroughFunctionsFramework(t *testing.T) {
	t.Setenv("FUNCTION_TARGET", "Keys")
	t.Setenv("KEYPLANE_STORE", "sqlite")
	t.Setenv("KEYPLANE_SECRETS", "file")
	t.Setenv("KEYPLANE_QUEUE", "embedded")
	t.Setenv("KEYPLANE_DATA", t.TempDir())
	t.Setenv("KEYPLANE_ADMIN_TOKEN", "function-test-token-123")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	go funcframework.StartHostPort("127.0.0.1", fmt.Sprint(port)) // runs until the test binary exits
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	var res *http.Response
	for i := 0; i < 100; i++ {
		if res, err = http.Get(base + "/healthz"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond) // waiting for the listener, not for time to pass
	}
	if err != nil {
		t.Fatalf("the framework never listened: %v", err)
	}
	res.Body.Close()
	req, _ := http.NewRequest("POST", base+"/v1/keys", strings.NewReader(`{"owner": "acct_fn"}`))
	req.Header.Set("Authorization", "Bearer function-test-token-123")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/keys through the Keys function = %d, want 201", res.StatusCode)
	}
}
