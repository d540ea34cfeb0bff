package ids

import (
	"regexp"
	"strings"
	"testing"
)

// The rules as regular expressions: the hand-written checks must agree.
var (
	keyIDRE = regexp.MustCompile(`^key_[0-9A-Za-z]{16}$`)
	ownerRE = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)
)

func TestNewKeyIDIsValid(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewKeyID()
		if !ValidKeyID(id) || !keyIDRE.MatchString(id) {
			t.Fatalf("NewKeyID() = %q, which is not a valid key id", id)
		}
		if seen[id] {
			t.Fatalf("NewKeyID() returned %q twice", id)
		}
		seen[id] = true
	}
}

var seeds = []string{
	"", "key_", "key_0123456789abcdef", "key_0123456789abcdeF", "key_0123456789abcde", "key_0123456789abcdefg",
	"key_0123456789abcde-", "Key_0123456789abcdef", "kez_0123456789abcdef", "key_0123456789abcd\xe9",
	"acct_1", "user@example.com", "org:team.a-b_c", "a b", "a/b", "a\x00", strings.Repeat("a", 128), strings.Repeat("a", 129),
	"é", "__", "-", "0",
}

func TestRulesMatchTheirRegexps(t *testing.T) {
	for _, s := range seeds {
		check(t, s)
	}
}

func FuzzRules(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(check)
}

func check(t *testing.T, s string) {
	if got, want := ValidKeyID(s), keyIDRE.MatchString(s); got != want {
		t.Errorf("ValidKeyID(%q) = %v, want %v", s, got, want)
	}
	if got, want := ValidOwner(s), ownerRE.MatchString(s); got != want {
		t.Errorf("ValidOwner(%q) = %v, want %v", s, got, want)
	}
}
