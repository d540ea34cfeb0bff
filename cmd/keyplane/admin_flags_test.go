package main

import (
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/keyplane/keyplane/pkg/client"
)

// TestParseArgsTakesFlagsAroundPositionals: flags may come before, between
// and after the positional arguments; after "--" everything is positional;
// a missing or extra argument is a usageError naming it.
func TestParseArgsTakesFlagsAroundPositionals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
		name string
	}{
		{[]string{"key_1", "--name", "x"}, []string{"key_1"}, "x"},
		{[]string{"--name", "x", "key_1"}, []string{"key_1"}, "x"},
		{[]string{"--name", "x", "--", "-key"}, []string{"-key"}, "x"},
	} {
		fs, _ := adminFlags("t", "t")
		name := fs.String("name", "", "")
		pos, err := parseArgs(fs, tc.args, io.Discard, "KEY_ID")
		if err != nil || !reflect.DeepEqual(pos, tc.want) || *name != tc.name {
			t.Errorf("parseArgs(%q) = %q, --name %q, %v; want %q, %q", tc.args, pos, *name, err, tc.want, tc.name)
		}
	}
	for _, args := range [][]string{{}, {"a", "b"}, {"a", "--no-such-flag"}} {
		fs, _ := adminFlags("t", "t")
		var ue *usageError
		if _, err := parseArgs(fs, args, io.Discard, "KEY_ID"); !errors.As(err, &ue) {
			t.Errorf("parseArgs(%q) = %v, want a usageError", args, err)
		}
	}
}

// TestStartReportsArgumentsBeforeConnection: start names a missing or a
// stray positional argument before it looks at the connection, then
// refuses a bad -o or a missing token, each as a usageError; with all of
// them right it returns the client and the arguments.
func TestStartReportsArgumentsBeforeConnection(t *testing.T) {
	noToken := func(string) string { return "" }
	token := func(name string) string {
		if name == "KEYPLANE_ADMIN_TOKEN" {
			return "kpadm_test"
		}
		return ""
	}
	for _, tc := range []struct {
		args   []string
		getenv func(string) string
		want   string // the usage error; "" for a client
	}{
		{[]string{}, noToken, "t: OWNER is required"},
		{[]string{"acct_1", "extra"}, noToken, `t: unexpected argument "extra"`},
		{[]string{"acct_1"}, noToken, "t: no token: set KEYPLANE_ADMIN_TOKEN or pass --token"},
		{[]string{"acct_1", "-o", "yaml"}, token, `t: -o "yaml": want table or json`},
		{[]string{"acct_1"}, token, ""},
		{[]string{"--token", "kpadm_x", "acct_1"}, noToken, ""},
	} {
		fs, c := adminFlags("t", "t OWNER")
		cl, pos, err := c.start(adminEnv{getenv: tc.getenv, stdout: io.Discard}, fs, tc.args, "OWNER")
		if tc.want == "" {
			if err != nil || cl == nil || !reflect.DeepEqual(pos, []string{"acct_1"}) {
				t.Errorf("start(%q) = %v, %q, %v; want a client and [acct_1]", tc.args, cl, pos, err)
			}
			continue
		}
		var ue *usageError
		if !errors.As(err, &ue) || err.Error() != tc.want || cl != nil {
			t.Errorf("start(%q) = %v, %v; want the usageError %q", tc.args, cl, err, tc.want)
		}
	}
}

func TestLimitFlags(t *testing.T) {
	f := featureLimitsFlag{}
	for _, s := range []string{"pro-model.units_per_day=5", "v1.2.requests_per_day=7", "pro-model.requests_per_minute=1"} {
		if err := f.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	want := featureLimitsFlag{"pro-model": {"units_per_day": 5, "requests_per_minute": 1}, "v1.2": {"requests_per_day": 7}}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("feature limits = %v, want %v", f, want)
	}
	for _, s := range []string{"units_per_day=5", ".units_per_day=5", "pro.=5", "pro.units_per_day", "pro.units_per_day=x"} {
		if err := (featureLimitsFlag{}).Set(s); err == nil {
			t.Errorf("feature limit %q: no error", s)
		}
	}
	l := limitsFlag{}
	if err := l.Set("requests_per_day=10"); err != nil || !reflect.DeepEqual(client.Limits(l), client.Limits{"requests_per_day": 10}) {
		t.Errorf("limit: %v, %v", l, err)
	}
	for _, s := range []string{"requests_per_day", "=1", "requests_per_day=1.5"} {
		if err := (limitsFlag{}).Set(s); err == nil {
			t.Errorf("limit %q: no error", s)
		}
	}
}
