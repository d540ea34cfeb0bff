package apikey

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/race"
)

var testPepper = bytes.Repeat([]byte("p"), 32)

func TestGeneratedKeysParse(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k, err := Generate("kp_live")
		if err != nil {
			t.Fatal(err)
		}
		if seen[k] {
			t.Fatalf("Generate returned %q twice", k)
		}
		seen[k] = true
		p, err := Parse(k)
		if err != nil {
			t.Fatalf("Parse(%q) = %v", k, err)
		}
		if p.Prefix != "kp_live" || len(p.Body) != BodyLen {
			t.Fatalf("Parse(%q) = %+v", k, p)
		}
	}
}

func TestEveryBodyCharacterAppears(t *testing.T) {
	// A biased or truncated alphabet would make keys guessable.
	counts := map[byte]int{}
	for range 500 {
		k, _ := Generate("kp")
		for i := 3; i < 3+BodyLen; i++ {
			counts[k[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("got %d distinct body characters, want 62", len(counts))
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := Generate("kp_test")
	flip := []byte(good)
	if flip[10] == 'a' {
		flip[10] = 'b'
	} else {
		flip[10] = 'a'
	}
	for _, tc := range []struct {
		name, key string
		want      error
	}{
		{"empty", "", ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"extra char", good + "x", ErrMalformed},
		{"typo in body", string(flip), ErrChecksum},
		{"no prefix", good[len("kp_test"):], ErrMalformed},
		{"upper prefix", "KP_TEST" + good[len("kp_test"):], ErrMalformed},
		{"non-base62", good[:12] + "-" + good[13:], ErrMalformed},
		{"too long prefix", strings.Repeat("a", 40) + good[len("kp_test"):], ErrMalformed},
		{"swapped prefix", "kp_live" + good[len("kp_test"):], ErrChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.key); !errors.Is(err, tc.want) {
				t.Errorf("Parse(%q) = %v, want %v", tc.key, err, tc.want)
			}
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	for p, ok := range map[string]bool{
		"kp_live": true, "kp": true, "a1": true, "": false, "_kp": false, "kp_": false,
		"Kp": false, "kp-live": false, strings.Repeat("a", 33): false,
	} {
		if err := ValidatePrefix(p); (err == nil) != ok {
			t.Errorf("ValidatePrefix(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestHasherMatchesHMAC(t *testing.T) {
	h, err := NewHasher(testPepper)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		k, _ := Generate("kp_live")
		m := hmac.New(sha256.New, testPepper)
		m.Write([]byte(k))
		var want Hash
		copy(want[:], m.Sum(nil))
		if got := h.Sum(k); got != want {
			t.Fatalf("Sum(%q) = %s, want %s", k, got, want)
		}
	}
	if _, err := NewHasher([]byte("short")); !errors.Is(err, ErrShortPepper) {
		t.Errorf("NewHasher(short) = %v, want ErrShortPepper", err)
	}
}

func TestHashDependsOnPepper(t *testing.T) {
	a, _ := NewHasher(testPepper)
	b, _ := NewHasher(bytes.Repeat([]byte("q"), 32))
	k, _ := Generate("kp")
	if a.Sum(k) == b.Sum(k) {
		t.Error("two peppers gave the same hash")
	}
}

func TestParseHashRoundTrip(t *testing.T) {
	h, _ := NewHasher(testPepper)
	sum := h.Sum("x")
	got, err := ParseHash(sum.String())
	if err != nil || got != sum {
		t.Fatalf("ParseHash(%s) = %s, %v", sum, got, err)
	}
	if _, err := ParseHash("zz"); err == nil {
		t.Error("ParseHash accepted a short string")
	}
}

func TestParseAllocatesNothing(t *testing.T) {
	k, _ := Generate("kp_live")
	h, _ := NewHasher(testPepper)
	if n := testing.AllocsPerRun(100, func() { Parse(k) }); n != 0 {
		t.Errorf("Parse allocates %v times per call, want 0", n)
	}
	if race.Enabled {
		return // the race detector makes sync.Pool drop items
	}
	h.Sum(k) // fill the pool
	if n := testing.AllocsPerRun(100, func() { h.Sum(k) }); n >= 1 {
		t.Errorf("Sum allocates %v times per call, want 0", n)
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Generate("kp_live")
	for _, s := range []string{good, "", "kp_live_", good[:20], good + "0", "a_" + strings.Repeat("0", 38), "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must be exactly prefix_body+checksum with a valid checksum.
		if len(s) != len(p.Prefix)+1+BodyLen+ChecksumLen || ValidatePrefix(p.Prefix) != nil {
			t.Fatalf("Parse(%q) accepted a malformed key: %+v", s, p)
		}
		if crcString(s[:len(s)-ChecksumLen]) != crcString(p.Prefix+"_"+p.Body) {
			t.Fatalf("Parse(%q): parts do not cover the input", s)
		}
		if string(appendChecksum(nil, crcString(s[:len(s)-ChecksumLen]))) != s[len(s)-ChecksumLen:] {
			t.Fatalf("Parse(%q) accepted a wrong checksum", s)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	k, _ := Generate("kp_live")
	b.ReportAllocs()
	for b.Loop() {
		Parse(k)
	}
}

func BenchmarkParseAndHash(b *testing.B) {
	k, _ := Generate("kp_live")
	h, _ := NewHasher(testPepper)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(k); err != nil {
			b.Fatal(err)
		}
		h.Sum(k)
	}
}

// BenchmarkNaiveHMAC is the baseline: a fresh hmac.New per key.
func BenchmarkNaiveHMAC(b *testing.B) {
	k, _ := Generate("kp_live")
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha256.New, testPepper)
		m.Write([]byte(k))
		m.Sum(nil)
	}
}

// BenchmarkSHA256Floor is the physical floor: one SHA-256 of a key.
func BenchmarkSHA256Floor(b *testing.B) {
	k := []byte("kp_live_" + strings.Repeat("a", BodyLen+ChecksumLen))
	b.ReportAllocs()
	for b.Loop() {
		sha256.Sum256(k)
	}
}
