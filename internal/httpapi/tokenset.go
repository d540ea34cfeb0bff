package httpapi

import "crypto/subtle"

// tokenSet holds bearer tokens for a comparison that takes the same time
// whatever the candidate, without hashing it per request: each token is
// kept zero-padded to the longest one's length (width), the candidate is
// copied, truncated or zero-padded, to that width, and compared with
// subtle.ConstantTimeCompare against every token, together with a
// constant-time comparison of the lengths. The time a comparison takes
// depends on the number of tokens and the longest one's length, never on
// the candidate: timing a guess tells nothing about how close it is.
type tokenSet struct {
	width  int
	padded [][]byte // each width bytes
	lens   []int
}

func newTokenSet(tokens []string) tokenSet {
	var s tokenSet
	for _, t := range tokens {
		s.width = max(s.width, len(t))
	}
	for _, t := range tokens {
		if t == "" {
			continue
		}
		p := make([]byte, s.width)
		copy(p, t)
		s.padded = append(s.padded, p)
		s.lens = append(s.lens, len(t))
	}
	return s
}

// match reports whether candidate is one of the tokens; every token is
// compared, whichever matches.
func (s tokenSet) match(candidate string) bool {
	var stack [256]byte
	var c []byte
	if s.width <= len(stack) {
		c = stack[:s.width]
	} else {
		c = make([]byte, s.width) // tokens longer than any generated one
	}
	copy(c, candidate) // the time this takes depends only on the caller's own input
	match := 0
	for i, p := range s.padded {
		match |= subtle.ConstantTimeCompare(c, p) & subtle.ConstantTimeEq(int32(min(len(candidate), 1<<30)), int32(s.lens[i]))
	}
	return match == 1
}
