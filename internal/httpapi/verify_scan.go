package httpapi

import (
	"unicode/utf8"
)

// scanVerifyRequest decodes the common shape of a verify body — one flat
// object of the six known fields, strings without escapes, units a plain
// integer — without reflection. It declines (ok false) anything else:
// escapes, null, floats, unknown or differently cased names, invalid UTF-8,
// trailing data, and decodeVerifyJSON (encoding/json, the reference
// semantics) then decides. FuzzScanVerifyRequest keeps the two in
// agreement wherever the scanner accepts.
func scanVerifyRequest(b []byte) (req verifyRequest, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return req, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return req, skipSpace(b, i+1) == len(b)
	}
	for {
		name, j, ok := scanString(b, i)
		if !ok {
			return req, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return req, false
		}
		i = skipSpace(b, i+1)
		if name == "units" {
			n, j, ok := scanInt(b, i)
			if !ok {
				return req, false
			}
			req.Units, i = n, j
		} else {
			v, j, ok := scanString(b, i)
			if !ok {
				return req, false
			}
			switch name {
			case "key":
				req.Key = v
			case "scope":
				req.Scope = v
			case "ip":
				req.IP = v
			case "referrer":
				req.Referrer = v
			case "feature":
				req.Feature = v
			default:
				return req, false
			}
			i = j
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return req, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return req, skipSpace(b, i+1) == len(b)
		default:
			return req, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString reads a string without escapes or control characters,
// holding valid UTF-8, starting at b[i] == '"'.
func scanString(b []byte, i int) (s string, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return "", i, false
	}
	start := i + 1
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !utf8.Valid(b[start:j]) {
				return "", i, false
			}
			return string(b[start:j]), j + 1, true
		case c == '\\' || c < 0x20:
			return "", i, false
		}
	}
	return "", i, false
}

// scanInt reads a JSON integer (no fraction or exponent) that fits in an
// int64.
func scanInt(b []byte, i int) (n int64, next int, ok bool) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		d := int64(b[i] - '0')
		if n > (1<<63-1-d)/10 {
			return 0, i, false // overflow: let encoding/json say so
		}
		n = n*10 + d
		i++
	}
	switch {
	case i == start, i-start > 1 && b[start] == '0':
		return 0, i, false
	case i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E'):
		return 0, i, false
	}
	if neg {
		n = -n
	}
	return n, i, true
}
