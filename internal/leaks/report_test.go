package leaks_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/keyplane/keyplane/internal/errs"
	"github.com/keyplane/keyplane/internal/leaks"
)

func TestParseTakesGitHubsFormat(t *testing.T) {
	body := `[{"token":"kp_live_a","type":"keyplane_api_key","url":"https://github.com/o/r/blob/1/f.txt","source":"Content"},
	          {"token":"kp_live_b","type":"keyplane_api_key","url":"","source":"COMMIT"},
	          {"token":"kp_live_c"}]`
	got, err := leaks.Parse([]byte(body), leaks.Strict)
	if err != nil {
		t.Fatal(err)
	}
	want := []leaks.Entry{
		{Token: "kp_live_a", Type: "keyplane_api_key", URL: "https://github.com/o/r/blob/1/f.txt", Source: "content"},
		{Token: "kp_live_b", Type: "keyplane_api_key", Source: "commit"},
		{Token: "kp_live_c"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %+v, want %+v (source lowercased)", got, want)
	}
}

func TestParseRejectsBadReportsWhole(t *testing.T) {
	entry := `{"token":"kp_live_a","type":"t","url":"u","source":"content"}`
	many := "[" + strings.Repeat(entry+",", leaks.MaxEntries) + entry + "]"
	for _, tc := range []struct {
		name   string
		body   string
		strict leaks.Strictness
		kind   errs.Kind
		want   string // part of the message
	}{
		{"empty body", ``, leaks.Strict, errs.Invalid, "JSON array"},
		{"null", `null`, leaks.Strict, errs.Invalid, "JSON array"},
		{"an object", `{"token":"x"}`, leaks.Strict, errs.Invalid, "JSON array"},
		{"empty array", `[]`, leaks.Strict, errs.Invalid, "empty"},
		{"too many entries", many, leaks.Strict, errs.Invalid, "at most 1000"},
		{"truncated", `[{"token":"x"`, leaks.Strict, errs.Invalid, "JSON"},
		{"trailing data", `[{"token":"x"}] []`, leaks.Strict, errs.Invalid, "after the JSON value"},
		{"missing token", `[{"type":"t"}]`, leaks.Strict, errs.Invalid, "token is required"},
		{"token not a string", `[{"token":5}]`, leaks.Strict, errs.Invalid, "token must be a JSON string"},
		{"null entry", `[null]`, leaks.Strict, errs.Invalid, "JSON object"},
		{"unknown field, strict", `[{"token":"x","secret_type":"y"}]`, leaks.Strict, errs.Invalid, "unknown field"},
		{"overlong url", `[{"token":"x","url":"` + strings.Repeat("u", leaks.MaxURLLen+1) + `"}]`, leaks.Strict, errs.Invalid, "url is"},
		{"overlong token", `[{"token":"` + strings.Repeat("k", leaks.MaxTokenLen+1) + `"}]`, leaks.Strict, errs.Invalid, "token is"},
		{"too large", `[{"token":"` + strings.Repeat("k", leaks.MaxBodyBytes) + `"}]`, leaks.Strict, errs.TooLarge, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := leaks.Parse([]byte(tc.body), tc.strict)
			if err == nil {
				t.Fatalf("got %d entries, want a %v error", len(got), tc.kind)
			}
			if !errs.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a %v error containing %q", err, tc.kind, tc.want)
			}
		})
	}
	if got, err := leaks.Parse([]byte(`[{"token":"x","secret_type":"y"}]`), leaks.Lenient); err != nil || len(got) != 1 {
		t.Fatalf("an unknown field from GitHub: got %v, %v; want it ignored", got, err)
	}
}

func TestParseNamesEveryBadEntryAndEchoesNoToken(t *testing.T) {
	body := `[{"token":"kp_live_secretvalue1"},{"token":""},{"token":"kp_live_secretvalue2","url":7},{"token":"ok"}]`
	_, err := leaks.Parse([]byte(body), leaks.Strict)
	e, ok := errs.As(err)
	if !ok || e.Kind != errs.Invalid {
		t.Fatalf("got %v, want Invalid", err)
	}
	var fields []string
	for _, d := range e.Details {
		fields = append(fields, d.Field)
	}
	if strings.Join(fields, " ") != "[1] [2]" {
		t.Fatalf("details name entries %v, want [1] [2]", fields)
	}
	b, _ := json.Marshal(e)
	if bytes.Contains(b, []byte("secretvalue")) || strings.Contains(e.Error(), "secretvalue") {
		t.Fatalf("the error echoes a token: %s", b)
	}
}

// FuzzParse checks that no input makes Parse panic, return entries with
// an error, return an entry without a token, or echo a token in an error.
// The seeds run as a normal test.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`[{"token":"kp_live_abc","type":"keyplane_api_key","url":"https://github.com/o/r","source":"content"}]`,
		`[{"token":"a"},{"token":"b","source":"COMMIT"}]`,
		`[{"token":"x","extra":1}]`,
		`[]`, `null`, `{}`, `[null]`, `[{"token":5}]`, `[{"token":"\ud800"}]`, `[{"token":"x"}] trailing`,
		"[{\"token\":\"\xff\"}]", `[[]]`, `[{"token":"x","url":{"a":1}}]`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, strict bool) {
		entries, err := leaks.Parse(body, leaks.Strictness(strict))
		if err != nil {
			if entries != nil {
				t.Fatalf("entries %v with error %v", entries, err)
			}
			k := errs.KindOf(err)
			if k != errs.Invalid && k != errs.TooLarge {
				t.Fatalf("error of kind %v, want Invalid or TooLarge: %v", k, err)
			}
			return
		}
		if len(entries) == 0 || len(entries) > leaks.MaxEntries {
			t.Fatalf("%d entries without an error", len(entries))
		}
		for i, e := range entries {
			if e.Token == "" || len(e.Token) > leaks.MaxTokenLen {
				t.Fatalf("entry %d has token of %d bytes", i, len(e.Token))
			}
			if e.Source != strings.ToLower(e.Source) {
				t.Fatalf("entry %d source %q not lowercased", i, e.Source)
			}
		}
	})
}
