package leaks_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/apikey"
	"github.com/keyplane/keyplane/internal/leaks"
)

func TestScanningPatternFindsExactlyOurKeys(t *testing.T) {
	re := regexp.MustCompile(leaks.ScanningPattern("kp_live"))
	for range 100 {
		k, err := apikey.Generate("kp_live")
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range []string{k, "API_KEY=" + k + "\n", `"` + k + `"`, "key: " + k + " # prod"} {
			m := re.FindStringSubmatch(text)
			if m == nil || m[1] != k {
				t.Fatalf("%q: matched %q, want the key", text, m)
			}
		}
		for _, text := range []string{k + "x", "x" + k, k[:len(k)-1], "kp_test" + k[len("kp_live"):], "ab_" + k} {
			if m := re.FindStringSubmatch(text); m != nil {
				t.Fatalf("%q: matched %q, want no match", text, m[1])
			}
		}
	}
}

// TestOperationsDocQuotesTheScanningPattern keeps what operators register
// with GitHub in step with the key format.
func TestOperationsDocQuotesTheScanningPattern(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"`" + leaks.ScanningPattern("kp_live") + "`", "`" + leaks.TokenType + "`"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("docs/operations.md does not quote %s", want)
		}
	}
}
