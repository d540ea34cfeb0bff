// Package ids owns the syntax of keyplane's identifiers: key ids, owner
// ids and feature names. Every layer that checks one (the keys service, the usage webhook,
// notifications, the Go client) asks this package, so the rule has one
// definition.
package ids

import "github.com/keyplane/keyplane/internal/apikey"

// The syntax of each identifier, as error messages state it.
const (
	KeyIDSyntax = "key_ followed by 16 letters and digits"
	OwnerSyntax = "1-128 characters of A-Z a-z 0-9 _ . : @ -"
	// FeatureSyntax is the syntax of a feature (a model, say
	// "gemini-2.5-pro"): what plans limit per owner and usage is counted by.
	FeatureSyntax = "1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit"
	// MaxFeatureLen is the longest feature name.
	MaxFeatureLen = 64
)

const (
	keyIDPrefix  = "key_"
	keyIDRandom  = 16
	maxOwnerLen  = 128
	ownerSymbols = "_.:@-"
)

// NewKeyID returns a new random key id.
func NewKeyID() string { return keyIDPrefix + apikey.RandomString(keyIDRandom) }

// ValidKeyID reports whether s is a well-formed key id.
func ValidKeyID(s string) bool {
	if len(s) != len(keyIDPrefix)+keyIDRandom || s[:len(keyIDPrefix)] != keyIDPrefix {
		return false
	}
	for i := len(keyIDPrefix); i < len(s); i++ {
		if !alnum(s[i]) {
			return false
		}
	}
	return true
}

// ValidOwner reports whether s is a well-formed owner id.
func ValidOwner(s string) bool {
	if len(s) == 0 || len(s) > maxOwnerLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && !isOwnerSymbol(c) {
			return false
		}
	}
	return true
}

// ValidFeature reports whether s is a well-formed feature name.
func ValidFeature(s string) bool {
	if len(s) == 0 || len(s) > MaxFeatureLen || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '_' && c != '.' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isOwnerSymbol(c byte) bool {
	for i := 0; i < len(ownerSymbols); i++ {
		if ownerSymbols[i] == c {
			return true
		}
	}
	return false
}
